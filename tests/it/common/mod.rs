//! Shared test harness: a throwaway PostgreSQL with an `app` user and `appdb` database, and
//! pgheal running in-process in front of it.
#![allow(dead_code)]

pub mod bin;
pub mod certs;
pub mod client_tls;
pub mod console;
pub mod drivers;
pub mod engine_kit;
pub mod load;
pub mod login;
pub mod metrics;
pub mod netns;
pub mod pgbench;
pub mod soak;
pub mod wire;

use std::sync::Arc;

use pgheal::cluster::{ClusterOptions, TempCluster};
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::config::validate::build;
use pgheal::proxy::ProxyHandle;

pub const USER: &str = "app";
pub const PASSWORD: &str = "secret";
pub const DB: &str = "appdb";

/// A PostgreSQL cluster with user `app` (password `secret`, SCRAM) owning database `appdb`.
pub fn start_pg() -> TempCluster {
    start_pg_with(ClusterOptions::default())
}

/// [`start_pg`] with other cluster settings (e.g. more `max_connections`).
pub fn start_pg_with(opts: ClusterOptions) -> TempCluster {
    let pg = TempCluster::start_with(opts)
        .expect("start PostgreSQL (are the server binaries installed?)");
    pg.create_user(USER, PASSWORD).expect("create user");
    pg.create_database(DB, USER).expect("create database");
    pg
}

/// [`start_pg`] with table `orders(id int PRIMARY KEY, total numeric, note text)` owned by app,
/// holding two rows (see [`first_order`]), plus `extra` SQL.
pub fn start_pg_with_orders(extra: &str) -> TempCluster {
    let pg = start_pg();
    admin(
        &pg,
        &format!(
            "CREATE TABLE orders(id int PRIMARY KEY, total numeric, note text);
             INSERT INTO orders VALUES (1, 9.50, 'first'), (2, 20, 'second');
             ALTER TABLE orders OWNER TO app; {extra}"
        ),
    );
    pg
}

/// Order 1 of [`start_pg_with_orders`], as text columns.
pub fn first_order() -> Vec<Option<String>> {
    vec![Some("1".into()), Some("9.50".into()), Some("first".into())]
}

/// Run SQL straight on the server as the superuser (migrations in tests go this way).
pub fn admin(pg: &TempCluster, sql: &str) -> String {
    pg.psql(DB, sql)
        .unwrap_or_else(|e| panic!("admin SQL failed: {sql}: {e}"))
}

/// pgheal in front of `pg`, on a free loopback port, configured like
/// `pgheal --upstream postgres://app:secret@127.0.0.1:PORT/appdb` plus `tweak`.
pub async fn start_proxy(pg: &TempCluster, tweak: impl FnOnce(&mut RunArgs)) -> ProxyHandle {
    let mut args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        metrics_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    tweak(&mut args);
    start_proxy_with(FileConfig::default(), &args).await
}

pub async fn start_proxy_with(file: FileConfig, args: &RunArgs) -> ProxyHandle {
    let cfg = build(file, args).expect("valid test config");
    pgheal::proxy::start(cfg).await.expect("start pgheal")
}

/// A libpq-style URL to pgheal.
pub fn proxy_url(p: &ProxyHandle) -> String {
    format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DB}",
        p.addr.port()
    )
}

/// A libpq-style URL straight to PostgreSQL.
pub fn direct_url(pg: &TempCluster) -> String {
    pg.url(USER, PASSWORD, DB)
}

/// Connect tokio-postgres to `url`; the connection task is spawned.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Connect, returning the error instead of panicking.
pub async fn try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The SQLSTATE of a tokio-postgres error, if it came from a server ErrorResponse.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_owned())
}

/// Value of one heal counter (healed, projected, refused, forwarded_in_transaction).
pub fn heal_count(p: &ProxyHandle, outcome: pgheal::heal::Outcome) -> u64 {
    p.metrics.heal_count(outcome)
}

/// Keep a cluster alive for the whole test even when moved into closures.
pub type Shared<T> = Arc<T>;

// ---- Helpers for the session_* scenario tests ----

/// `pg_backend_pid()` of the server connection behind `client`.
pub async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid()")
        .get(0)
}

/// Connect and keep the connection task's handle: its result says how the connection ended
/// (e.g. an unsolicited FATAL ErrorResponse from the server or from pgheal).
pub async fn connect_watched(
    url: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    (client, tokio::spawn(conn))
}

/// A libpq-style URL to pgheal for another user/password/database.
pub fn proxy_url_as(p: &ProxyHandle, user: &str, password: &str, db: &str) -> String {
    format!(
        "postgres://{user}:{password}@127.0.0.1:{}/{db}",
        p.addr.port()
    )
}

/// A superuser connection straight to the server (for pg_stat_activity, pg_terminate_backend).
pub async fn admin_client(pg: &TempCluster) -> tokio_postgres::Client {
    connect(&pg.superuser_url(DB)).await
}

/// Poll `check` every 100 ms until it returns true, for at most `limit`. Returns the last answer.
/// For waiting on server-side state (never for asserting on elapsed time).
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Whether a backend with this pid is still listed in pg_stat_activity.
pub async fn backend_alive(admin: &tokio_postgres::Client, pid: i32) -> bool {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .map(|r| r.get::<_, i64>(0) > 0)
        .unwrap_or(true)
}

/// Start a pgheal process (stderr piped); the task collects everything it logs on stderr until
/// it exits.
pub fn spawn_logging(
    mut c: tokio::process::Command,
) -> (tokio::process::Child, tokio::task::JoinHandle<String>) {
    use tokio::io::AsyncReadExt;
    let mut child = c.spawn().expect("spawn pgheal");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stderr = tokio::spawn(async move {
        let mut s = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut s).await;
        String::from_utf8_lossy(&s).into_owned()
    });
    (child, stderr)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe a free port")
        .port()
}
