//! Pool sizes and connection caps against real PostgreSQL: the user's `pool_size` beating the
//! database's, `min_pool_size` refilled after its connections die, the reserve pool
//! (`reserve_pool_size` after `reserve_pool_timeout`), `max_db_connections` /
//! `max_user_connections` (clients wait, an idle connection of another pool is closed to make
//! room), `max_db_client_connections` / `max_user_client_connections` (logins refused with
//! PgBouncer's error), and a flood of 2,000 clients against a pool of 10.
//!
//! Every wait is bounded; assertions are on what the client got, on pg_stat_activity and on
//! the console's and the metrics' figures.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::metrics::{sample, scrape};
use common::*;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::proxy::ProxyHandle;

const ADMIN_PW: &str = "admin-pw";
const OTHER: &str = "other";
const OTHER_PW: &str = "other-pw";

/// pgheal in front of `pg` with `toml` (after `[pgheal]`'s first lines) and users `app`,
/// `other` and the console's `admin`. Without `upstream`, `toml` names the databases.
async fn proxy(pg: &pgheal::cluster::TempCluster, toml: &str, upstream: bool) -> ProxyHandle {
    let text = format!(
        "[pgheal]\nadmin_users = [\"admin\"]\n{toml}\n\
         [users]\n{USER} = \"{PASSWORD}\"\n{OTHER} = \"{OTHER_PW}\"\nadmin = \"{ADMIN_PW}\"\n",
    );
    let file: FileConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: upstream.then(|| pg.url(USER, PASSWORD, DB)),
        metrics_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

/// A `[databases.NAME]` table for `appdb` on `pg`, logging in as each client's own user.
fn database(pg: &pgheal::cluster::TempCluster, name: &str, extra: &str) -> String {
    format!(
        "[databases.{name}]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{DB}\"\n{extra}\n",
        pg.port()
    )
}

/// [`start_pg`] with a second login, `other`, allowed in `appdb`.
fn start_pg_with_other_user() -> pgheal::cluster::TempCluster {
    let pg = start_pg();
    pg.create_user(OTHER, OTHER_PW).expect("create user");
    admin(&pg, &format!("GRANT ALL ON DATABASE {DB} TO {OTHER}"));
    pg
}

/// Server backends of `users`, seen by the superuser.
async fn backends(su: &tokio_postgres::Client, users: &[&str]) -> i64 {
    let users: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
    su.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY($1)",
        &[&users],
    )
    .await
    .expect("pg_stat_activity")
    .get(0)
}

/// One console command's rows, by column name.
async fn show(p: &ProxyHandle, what: &str) -> Vec<HashMap<String, Option<String>>> {
    let c = connect(&proxy_url_as(p, "admin", ADMIN_PW, "pgbouncer")).await;
    let msgs = c.simple_query(what).await.expect(what);
    common::console::named_rows(&msgs)
        .into_iter()
        .map(|row| row.into_iter().collect())
        .collect()
}

/// A number in the row of `SHOW ...` whose `key` column is `value`.
async fn figure(p: &ProxyHandle, what: &str, key: (&str, &str), col: &str) -> i64 {
    let rows = show(p, what).await;
    let row = rows
        .iter()
        .find(|r| r.get(key.0).and_then(|v| v.as_deref()) == Some(key.1))
        .unwrap_or_else(|| panic!("{what}: no row with {} = {}: {rows:?}", key.0, key.1));
    row.get(col)
        .and_then(|v| v.as_deref())
        .unwrap_or_else(|| panic!("{what}: no {col}: {row:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{what}: {col} is not a number: {row:?}"))
}

/// `SHOW POOLS` `col` of pool (`db`, `user`).
async fn pool_figure(p: &ProxyHandle, db: &str, user: &str, col: &str) -> i64 {
    pool_figure_if_any(p, db, user, col)
        .await
        .unwrap_or_else(|| panic!("no pool {db}/{user}"))
}

/// [`pool_figure`], `None` while the pool does not exist yet (its first client is still
/// logging in).
async fn pool_figure_if_any(p: &ProxyHandle, db: &str, user: &str, col: &str) -> Option<i64> {
    let rows = show(p, "SHOW POOLS").await;
    let row = rows.iter().find(|r| {
        r.get("database").and_then(|v| v.as_deref()) == Some(db)
            && r.get("user").and_then(|v| v.as_deref()) == Some(user)
    })?;
    Some(row[col].as_deref().unwrap_or("").parse().expect(col))
}

/// The client's error: (SQLSTATE, message).
fn error_of(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("an ErrorResponse, got {e:?}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// Watch the backend count of `users` until stopped; the largest seen.
fn watch_backends(
    su: tokio_postgres::Client,
    users: &'static [&'static str],
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<i64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let mut max = 0;
        while !s.load(Ordering::SeqCst) {
            max = max.max(backends(&su, users).await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        max
    });
    (stop, task)
}

async fn stop_watch(w: (Arc<AtomicBool>, tokio::task::JoinHandle<i64>)) -> i64 {
    w.0.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(10), w.1)
        .await
        .expect("the watcher stops")
        .expect("watcher task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_pool_size_wins_over_the_databases() {
    let pg = start_pg();
    let p = proxy(
        &pg,
        "pool_size = 5\nquery_wait_timeout = 1\n[user_settings.app]\npool_size = 1\n",
        true,
    )
    .await;
    let su = admin_client(&pg).await;
    let first = connect(&proxy_url(&p)).await;
    backend_pid(&first).await;
    // Session pooling: a second client needs a second server connection, which the user's
    // pool_size of 1 does not allow (the database's 5 would).
    let e = try_connect(&proxy_url(&p))
        .await
        .expect_err("the pool of 1 is taken");
    assert_eq!(sqlstate(&e).as_deref(), Some("08P01"), "{e}");
    assert_eq!(backends(&su, &[USER]).await, 1);
    drop(first);
    let again = eventually(Duration::from_secs(10), || async {
        try_connect(&proxy_url(&p)).await.is_ok()
    })
    .await;
    assert!(
        again,
        "the connection is free again once the first client left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_is_refilled_after_its_connections_are_terminated() {
    let pg = start_pg();
    let p = proxy(&pg, "pool_size = 5\nmin_pool_size = 2\n", true).await;
    let su = admin_client(&pg).await;
    let warm = eventually(Duration::from_secs(15), || async {
        backends(&su, &[USER]).await == 2
    })
    .await;
    assert!(warm, "min_pool_size connections opened without a client");
    let pids: Vec<i32> = su
        .query(
            "SELECT pid FROM pg_stat_activity WHERE usename = 'app'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    su.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
        &[],
    )
    .await
    .unwrap();
    let refilled = eventually(Duration::from_secs(15), || async {
        let now: Vec<i32> = su
            .query(
                "SELECT pid FROM pg_stat_activity WHERE usename = 'app'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        now.len() == 2 && now.iter().all(|p| !pids.contains(p))
    })
    .await;
    assert!(
        refilled,
        "two new warm connections replace the terminated ones"
    );
    assert_eq!(pool_figure(&p, DB, USER, "sv_idle").await, 2);
    // And they work.
    let c = connect(&proxy_url(&p)).await;
    let pid = backend_pid(&c).await;
    assert!(!pids.contains(&pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reserve_pool_is_used_only_after_reserve_pool_timeout() {
    let pg = start_pg();
    let p = proxy(
        &pg,
        "pool_size = 1\nreserve_pool_size = 1\nreserve_pool_timeout = 2\nquery_wait_timeout = 6\n",
        true,
    )
    .await;
    let su = admin_client(&pg).await;
    let watch = watch_backends(admin_client(&pg).await, &[USER]);
    let first = connect(&proxy_url(&p)).await;
    backend_pid(&first).await;
    // The second client waits (session pooling, pool of 1)...
    let url = proxy_url(&p);
    let second = tokio::spawn(async move { connect(&url).await });
    let waiting = eventually(Duration::from_secs(20), || async {
        pool_figure(&p, DB, USER, "cl_waiting").await == 1
    })
    .await;
    assert!(waiting, "the second client waits for a server connection");
    // ... on the pool's one connection, not on the reserve yet.
    assert_eq!(backends(&su, &[USER]).await, 1);
    assert_eq!(
        sample(
            &scrape(&p).await,
            "pgheal_pool_reserve_used_total",
            "database=\"appdb\",user=\"app\""
        ),
        Some(0.0)
    );
    // After reserve_pool_timeout it gets the reserve's connection.
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second client logs in from the reserve")
        .expect("client task");
    let pid2 = backend_pid(&second).await;
    assert_eq!(backends(&su, &[USER]).await, 2);
    let m = scrape(&p).await;
    let labels = "database=\"appdb\",user=\"app\"";
    assert_eq!(
        sample(&m, "pgheal_pool_reserve_used_total", labels),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "pgheal_pool_reserve_active_connections", labels),
        Some(1.0)
    );
    assert_eq!(sample(&m, "pgheal_pool_reserve_size", labels), Some(1.0));
    assert_eq!(
        figure(&p, "SHOW DATABASES", ("name", DB), "reserve_pool_size").await,
        1
    );
    // A third client: pool and reserve are taken; it waits out query_wait_timeout.
    let e = try_connect(&proxy_url(&p))
        .await
        .expect_err("no connection left in pool or reserve");
    assert_eq!(sqlstate(&e).as_deref(), Some("08P01"), "{e}");
    assert!(
        stop_watch(watch).await <= 2,
        "never more than pool_size + reserve_pool_size"
    );
    // The reserve's connection, given back, is closed rather than kept over pool_size.
    drop(second);
    let shrunk = eventually(Duration::from_secs(10), || async {
        backends(&su, &[USER]).await == 1
    })
    .await;
    assert!(shrunk, "the reserve's connection is closed once given back");
    assert!(!backend_alive(&su, pid2).await || backends(&su, &[USER]).await == 1);
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_client_connections_refuses_logins_with_pgbouncers_error() {
    let pg = start_pg();
    let p = proxy(&pg, "max_db_client_connections = 2\n", true).await;
    let su = admin_client(&pg).await;
    let a = connect(&proxy_url(&p)).await;
    let b = connect(&proxy_url(&p)).await;
    let e = try_connect(&proxy_url(&p))
        .await
        .expect_err("a third client of the database");
    assert_eq!(
        error_of(&e),
        (
            "08P01".to_owned(),
            "client connections exceeded (max_db_client_connections)".to_owned()
        )
    );
    // The refused login took no server connection.
    assert_eq!(backends(&su, &[USER]).await, 2);
    assert_eq!(
        figure(&p, "SHOW DATABASES", ("name", DB), "max_client_connections").await,
        2
    );
    assert_eq!(
        figure(
            &p,
            "SHOW DATABASES",
            ("name", DB),
            "current_client_connections"
        )
        .await,
        2
    );
    let m = scrape(&p).await;
    assert_eq!(
        sample(
            &m,
            "pgheal_clients_refused_total",
            "reason=\"max_db_client_connections\""
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "pgheal_database_max_client_connections",
            "database=\"appdb\""
        ),
        Some(2.0)
    );
    // The console is not counted.
    show(&p, "SHOW VERSION").await;
    drop(a);
    let again = eventually(Duration::from_secs(10), || async {
        try_connect(&proxy_url(&p)).await.is_ok()
    })
    .await;
    assert!(again, "a place is free once a client left");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_client_connections_of_a_user_refuses_its_logins() {
    let pg = start_pg_with_other_user();
    let p = proxy(
        &pg,
        &format!(
            "[user_settings.app]\nmax_user_client_connections = 1\n{}",
            database(&pg, DB, "")
        ),
        false,
    )
    .await;
    let a = connect(&proxy_url(&p)).await;
    let e = try_connect(&proxy_url(&p))
        .await
        .expect_err("a second client as app");
    assert_eq!(
        error_of(&e),
        (
            "08P01".to_owned(),
            "client connections exceeded (max_user_client_connections)".to_owned()
        )
    );
    // Another user is not limited.
    let o1 = connect(&proxy_url_as(&p, OTHER, OTHER_PW, DB)).await;
    let o2 = connect(&proxy_url_as(&p, OTHER, OTHER_PW, DB)).await;
    assert_eq!(
        figure(
            &p,
            "SHOW USERS",
            ("name", USER),
            "max_user_client_connections"
        )
        .await,
        1
    );
    assert_eq!(
        sample(
            &scrape(&p).await,
            "pgheal_clients_refused_total",
            "reason=\"max_user_client_connections\""
        ),
        Some(1.0)
    );
    drop((a, o1, o2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_makes_clients_wait_and_closes_an_idle_connection_of_another_pool() {
    let pg = start_pg_with_other_user();
    let p = proxy(
        &pg,
        &format!(
            "pool_size = 5\nmax_db_connections = 2\nquery_wait_timeout = 20\n{}",
            database(&pg, DB, "")
        ),
        false,
    )
    .await;
    let su = admin_client(&pg).await;
    let watch = watch_backends(admin_client(&pg).await, &[USER, OTHER]);
    // Two sessions of app hold the database's two connections.
    let a1 = connect(&proxy_url(&p)).await;
    let a2 = connect(&proxy_url(&p)).await;
    backend_pid(&a1).await;
    backend_pid(&a2).await;
    // A client of another pool of the same database waits: it is not refused.
    let url = proxy_url_as(&p, OTHER, OTHER_PW, DB);
    let other = tokio::spawn(async move { connect(&url).await });
    // (Generous: the flood test of this file may load the machine at the same time.)
    let waiting = eventually(Duration::from_secs(20), || async {
        pool_figure_if_any(&p, DB, OTHER, "cl_waiting").await == Some(1)
    })
    .await;
    assert!(waiting, "the other user's client waits");
    assert_eq!(backends(&su, &[USER, OTHER]).await, 2);
    assert_eq!(
        figure(&p, "SHOW DATABASES", ("name", DB), "max_connections").await,
        2
    );
    assert_eq!(
        figure(&p, "SHOW DATABASES", ("name", DB), "current_connections").await,
        2
    );
    // app's first client leaves: its connection goes back idle in app's pool, where it would
    // stay; the waiting client's pool closes it to open its own.
    drop(a1);
    let other = tokio::time::timeout(Duration::from_secs(15), other)
        .await
        .expect("the waiting client logs in once app's connection is idle")
        .expect("client task");
    let row = other
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query as other");
    assert_eq!(row.get::<_, String>(0), OTHER);
    assert!(
        stop_watch(watch).await <= 2,
        "never more than max_db_connections"
    );
    let two = eventually(Duration::from_secs(10), || async {
        backends(&su, &[USER, OTHER]).await == 2
    })
    .await;
    assert!(two, "app's second session and other's");
    assert_eq!(pool_figure(&p, DB, USER, "sv_idle").await, 0);
    assert_eq!(
        sample(
            &scrape(&p).await,
            "pgheal_database_server_connections",
            "database=\"appdb\""
        ),
        Some(2.0)
    );
    drop(a2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_connections_caps_a_users_pools_of_every_database() {
    let pg = start_pg();
    let p = proxy(
        &pg,
        &format!(
            "pool_size = 5\nquery_wait_timeout = 2\n[user_settings.app]\nmax_user_connections = 1\n{}{}",
            database(&pg, DB, ""),
            database(&pg, "second", "")
        ),
        false,
    )
    .await;
    let su = admin_client(&pg).await;
    let a = connect(&proxy_url(&p)).await;
    backend_pid(&a).await;
    // The same user in another database: it waits, and query_wait_timeout ends the wait.
    let e = try_connect(&proxy_url_as(&p, USER, PASSWORD, "second"))
        .await
        .expect_err("app's one server connection is taken");
    assert_eq!(sqlstate(&e).as_deref(), Some("08P01"), "{e}");
    assert_eq!(backends(&su, &[USER]).await, 1);
    assert_eq!(
        figure(&p, "SHOW USERS", ("name", USER), "max_user_connections").await,
        1
    );
    // Once app's connection is idle, the other database's pool takes its place.
    drop(a);
    let b = eventually(Duration::from_secs(10), || async {
        try_connect(&proxy_url_as(&p, USER, PASSWORD, "second"))
            .await
            .is_ok()
    })
    .await;
    assert!(
        b,
        "the other database's pool closes app's idle connection to open its own"
    );
    let one = eventually(Duration::from_secs(10), || async {
        backends(&su, &[USER]).await == 1
    })
    .await;
    assert!(one, "app keeps one server connection");
    // The second database's connection is idle once its reset is done.
    let idle = eventually(Duration::from_secs(10), || async {
        pool_figure(&p, "second", USER, "sv_idle").await == 1
    })
    .await;
    assert!(idle, "the second database's pool keeps its connection idle");
    assert_eq!(pool_figure(&p, DB, USER, "sv_idle").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_limits_under_load() {
    let pg = start_pg();
    let dir = common::certs::Dir::new("pool-limits-reload");
    let users = dir.write(
        "userlist.txt",
        &format!("\"{USER}\" \"{PASSWORD}\"\n\"admin\" \"{ADMIN_PW}\"\n"),
    );
    let port = free_port();
    let write = |max_db: usize| {
        dir.write(
            "pgbouncer.ini",
            &format!(
                "[databases]\n{DB} = host=127.0.0.1 port={} dbname={DB} max_db_connections={max_db}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = scram-sha-256\n\
                 auth_file = {}\nadmin_users = admin\npool_mode = transaction\ndefault_pool_size = 10\n",
                pg.port(),
                users.display()
            ),
        )
    };
    let ini = write(3);
    let args = RunArgs {
        config: Some(ini),
        ..Default::default()
    };
    let cfg = pgheal::config::load(&args).expect("the ini loads");
    assert_eq!(cfg.database(DB).unwrap().limits.max_db_connections, 3);
    let live = Arc::new(pgheal::config::live::LiveConfig::new(cfg, args));
    let p = pgheal::proxy::start_live(live)
        .await
        .expect("pgheal starts");
    let su = admin_client(&pg).await;
    let watch = watch_backends(admin_client(&pg).await, &[USER]);
    // 20 clients run short transactions while the limit goes 3 → 1 → 4.
    let url = proxy_url(&p);
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (url, done) = (url.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let c = connect(&url).await;
            for _ in 0..30 {
                c.simple_query("SELECT pg_sleep(0.005)")
                    .await
                    .expect("query");
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    let console = connect(&proxy_url_as(&p, "admin", ADMIN_PW, "pgbouncer")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    write(1);
    console.simple_query("RELOAD").await.expect("RELOAD");
    let one = eventually(Duration::from_secs(10), || async {
        backends(&su, &[USER]).await <= 1
    })
    .await;
    assert!(
        one,
        "the database shrinks to max_db_connections = 1 under load"
    );
    write(4);
    console.simple_query("RELOAD").await.expect("RELOAD");
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("every client finishes after the reloads")
            .expect("client task");
    }
    assert_eq!(done.load(Ordering::SeqCst), 20);
    assert!(stop_watch(watch).await <= 4);
    assert_eq!(
        figure(&p, "SHOW DATABASES", ("name", DB), "max_connections").await,
        4
    );
    // The console's SET changes a client limit too.
    console
        .simple_query("SET max_db_client_connections = 1")
        .await
        .expect("SET");
    // Bounded: 100 tries 100 ms apart, while the earlier clients' sessions end.
    let mut first = None;
    for _ in 0..100 {
        if let Ok(c) = try_connect(&url).await {
            first = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        first.is_some(),
        "one client of the database once the others are gone"
    );
    let e = try_connect(&url)
        .await
        .expect_err("a second client after SET");
    assert_eq!(
        error_of(&e),
        (
            "08P01".to_owned(),
            "client connections exceeded (max_db_client_connections)".to_owned()
        )
    );
    drop(first);
}

/// The longest any backend of `user` has been idle inside a transaction, until stopped.
fn watch_idle_in_transaction(
    su: tokio_postgres::Client,
    user: &'static str,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<f64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let mut max: f64 = 0.0;
        while !s.load(Ordering::SeqCst) {
            let age: f64 = su
                .query_one(
                    "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - state_change)), 0)::float8 \
                     FROM pg_stat_activity WHERE usename = $1 AND state = 'idle in transaction'",
                    &[&user],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            max = max.max(age);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        max
    });
    (stop, task)
}

/// How an admitted client of the flood ended.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Admitted {
    /// Its query ran.
    Finished,
    /// It idled inside a transaction and was closed with this error.
    ClosedIdleInTransaction(String, String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_2000_clients_against_a_pool_of_10() {
    let pg = start_pg();
    let p = proxy(
        &pg,
        "auth_type = \"trust\"\npool_mode = \"transaction\"\npool_size = 10\n\
         max_client_conn = 1000\nreserve_pool_size = 2\nreserve_pool_timeout = 1\n\
         idle_transaction_timeout = 1\n",
        true,
    )
    .await;
    let watch = watch_backends(admin_client(&pg).await, &[USER]);
    let idle_watch = watch_idle_in_transaction(admin_client(&pg).await, USER);
    const CLIENTS: usize = 2000;
    // Every admitted client stays connected until every client has tried: exactly
    // max_client_conn are admitted, the rest refused.
    let tried = Arc::new(AtomicUsize::new(0));
    let all_tried = Arc::new(tokio::sync::Notify::new());
    let url = proxy_url(&p);
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (url, tried, all_tried) = (url.clone(), tried.clone(), all_tried.clone());
        tasks.push(tokio::spawn(async move {
            let attempt = try_connect(&url).await;
            let last = tried.fetch_add(1, Ordering::SeqCst) + 1 == CLIENTS;
            if last {
                all_tried.notify_waiters();
            }
            match attempt {
                Err(e) => Err(error_of(&e)),
                // One client in 50 opens a transaction and goes idle inside it, holding a
                // server connection: idle_transaction_timeout must take it back.
                Ok(c) if i % 50 == 0 => {
                    c.batch_execute("BEGIN; SELECT 1")
                        .await
                        .expect("an idler's transaction starts");
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    let e = c
                        .batch_execute("COMMIT")
                        .await
                        .expect_err("the idler was closed by idle_transaction_timeout");
                    let (code, msg) = match e.as_db_error() {
                        Some(db) => (db.code().code().to_owned(), db.message().to_owned()),
                        // The FATAL came while the client was idle; its connection reported it.
                        None => ("closed".to_owned(), e.to_string()),
                    };
                    Ok(Admitted::ClosedIdleInTransaction(code, msg))
                }
                Ok(c) => {
                    let wait = all_tried.notified();
                    let n: i64 = c
                        .query_one("SELECT $1::bigint + 1", &[&(i as i64)])
                        .await
                        .expect("an admitted client's query")
                        .get(0);
                    assert_eq!(n, i as i64 + 1);
                    if tried.load(Ordering::SeqCst) < CLIENTS {
                        tokio::time::timeout(Duration::from_secs(50), wait)
                            .await
                            .expect("every client tries within 50 s");
                    }
                    Ok(Admitted::Finished)
                }
            }
        }));
    }
    let mut admitted: HashMap<Admitted, usize> = HashMap::new();
    let mut refused: HashMap<(String, String), usize> = HashMap::new();
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(55), t)
            .await
            .expect("every client ends within 55 s")
            .expect("client task")
        {
            Ok(a) => *admitted.entry(a).or_default() += 1,
            Err(e) => *refused.entry(e).or_default() += 1,
        }
    }
    let max = stop_watch(watch).await;
    idle_watch.0.store(true, Ordering::SeqCst);
    let longest_idle = tokio::time::timeout(Duration::from_secs(10), idle_watch.1)
        .await
        .expect("the idle watcher stops")
        .expect("idle watcher");
    // At least max_client_conn are admitted (the others stay until every client has tried;
    // an idler closed by the timeout frees its slot for a latecomer), the rest refused.
    let n_admitted: usize = admitted.values().sum();
    assert!(
        n_admitted >= 1000,
        "max_client_conn clients admitted, refused: {refused:?}"
    );
    // Every idler that got in was closed with PgBouncer's words; every other client finished.
    for (how, n) in &admitted {
        match how {
            Admitted::Finished => {}
            Admitted::ClosedIdleInTransaction(code, msg) => assert!(
                (code == "08P01" && msg == "idle transaction timeout") || code == "closed",
                "{n} idlers ended with {code} {msg}"
            ),
        }
    }
    assert!(admitted.contains_key(&Admitted::Finished), "{admitted:?}");
    // No server connection stays idle in a transaction past the timeout (1 s), give or take
    // the watcher's and the timer's resolution.
    assert!(
        longest_idle < 2.0,
        "a backend stayed idle in a transaction for {longest_idle:.2} s"
    );
    assert_eq!(
        refused,
        HashMap::from([(
            (
                "08P01".to_owned(),
                "no more connections allowed (max_client_conn)".to_owned()
            ),
            CLIENTS - n_admitted
        )])
    );
    assert!(
        (1..=12).contains(&max),
        "the server saw {max} backends (pool_size 10 + reserve_pool_size 2 at most)"
    );
    let m = scrape(&p).await;
    assert_eq!(
        sample(
            &m,
            "pgheal_clients_refused_total",
            "reason=\"max_client_conn\""
        ),
        Some((CLIENTS - n_admitted) as f64)
    );
    assert!(
        p.metrics
            .timeouts
            .with_label_values(&[DB, USER, "idle_transaction_timeout"])
            .get()
            >= 1,
        "the idlers' closes are counted"
    );
}
