//! Several hosts per database (`host=a,b` with `load_balance_hosts`), failover and
//! `server_login_retry`, `server_check_query`, and what a database entry adds to its server
//! connections (`connect_query`, `timezone`, ...) and `application_name_add_host`, against
//! real PostgreSQL clusters. Two clusters on two loopback ports stand for two hosts (one port
//! per host, libpq's `port=a,b`).

use crate::common;

use std::time::Duration;

use common::*;
use pgheal::cluster::TempCluster;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::proxy::ProxyHandle;

const LIMIT: Duration = Duration::from_secs(20);

/// pgheal on a free port with this TOML (plus the `app` user).
async fn proxy(toml: &str) -> ProxyHandle {
    let file: FileConfig = toml::from_str(&format!("[users]\napp = \"secret\"\n{toml}"))
        .unwrap_or_else(|e| panic!("test TOML: {e}\n{toml}"));
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

/// A `[databases.NAME]` entry over both clusters, session pooling.
fn two_hosts(name: &str, a: &TempCluster, b: &TempCluster, extra: &str) -> String {
    format!(
        "[databases.{name}]\nhost = \"127.0.0.1,127.0.0.1\"\nports = [{}, {}]\ndbname = \"{DB}\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\npool_mode = \"session\"\n{extra}\n",
        a.port(),
        b.port()
    )
}

/// The port of the server behind a client of `db`.
async fn server_port(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT inet_server_port()", &[])
        .await
        .expect("inet_server_port()")
        .get(0)
}

async fn client(
    p: &ProxyHandle,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    tokio::time::timeout(LIMIT, try_connect(&proxy_url_as(p, USER, PASSWORD, db)))
        .await
        .unwrap_or_else(|_| panic!("login to {db} through pgheal did not end within {LIMIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_connections_and_disable_keeps_the_first_host() {
    let a = start_pg();
    let b = start_pg();
    let p = proxy(&format!(
        "{}{}",
        two_hosts("rr", &a, &b, ""),
        two_hosts("first", &a, &b, "load_balance_hosts = \"disable\"")
    ))
    .await;
    // Session pooling: each client holds its own server connection.
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..4 {
        let c = client(&p, "rr").await.expect("login to rr");
        ports.push(server_port(&c).await);
        held.push(c);
    }
    let on_a = ports.iter().filter(|&&x| x == i32::from(a.port())).count();
    let on_b = ports.iter().filter(|&&x| x == i32::from(b.port())).count();
    assert_eq!(
        (on_a, on_b),
        (2, 2),
        "round-robin over both hosts: {ports:?}"
    );
    for _ in 0..3 {
        let c = client(&p, "first").await.expect("login to first");
        assert_eq!(
            server_port(&c).await,
            i32::from(a.port()),
            "disable: the first host"
        );
        held.push(c);
    }
    // What the servers see: two of rr's and three of first's connections on a.
    let count = |pg: &TempCluster| {
        admin(
            pg,
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'",
        )
    };
    assert_eq!(count(&a).trim(), "5");
    assert_eq!(count(&b).trim(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_host_is_skipped_then_retried_and_all_down_is_an_error() {
    let mut a = start_pg();
    let mut b = start_pg();
    let p = proxy(&format!(
        "[pgheal]\nserver_login_retry = 2\nserver_connect_timeout = 5\n{}",
        two_hosts("db", &a, &b, "")
    ))
    .await;
    a.stop().expect("stop host a");
    // Every new client (each holding its own new server connection: session pooling) gets b,
    // whichever host round-robin starts at.
    let mut held = Vec::new();
    for _ in 0..3 {
        let c = client(&p, "db").await.expect("login while host a is down");
        assert_eq!(
            server_port(&c).await,
            i32::from(b.port()),
            "the host still up"
        );
        held.push(c);
    }
    // a is back: after server_login_retry it gets connections again.
    a.restart().expect("start host a again");
    let mut back = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let c = client(&p, "db").await.expect("login while host a is back");
        back = server_port(&c).await == i32::from(a.port());
        held.push(c);
        if back {
            break;
        }
    }
    assert!(back, "host a gets new connections again once it is back");
    drop(held);

    // Both down: the client that finds it out gets pgheal's connect error, the next ones
    // PgBouncer's server_login_retry error at once, until a host is tried again.
    a.stop().expect("stop host a");
    b.stop().expect("stop host b");
    let e = client(&p, "db").await.expect_err("no host: login fails");
    assert_eq!(sqlstate(&e).as_deref(), Some("08001"), "{e}");
    let e = client(&p, "db").await.expect_err("no host: login fails");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("a server error, got {e}"));
    assert_eq!(db.code().code(), "08P01", "{e}");
    assert!(
        db.message()
            .starts_with("server login has been failing, cached error: ")
            && db.message().ends_with(" (server_login_retry)"),
        "{}",
        db.message()
    );
    b.restart().expect("start host b again");
    let back = eventually(LIMIT, || async { client(&p, "db").await.is_ok() }).await;
    assert!(back, "clients get in again once a host is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_settings_reach_new_server_connections() {
    let pg = start_pg();
    admin(&pg, "CREATE SCHEMA hosts_test AUTHORIZATION app");
    let port = pg.port();
    let p = proxy(&format!(
        "[pgheal]\napplication_name_add_host = true\n\
         [databases.tz]\nhost = \"localhost\"\nport = {port}\ndbname = \"{DB}\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\npool_mode = \"session\"\n\
         timezone = \"Pacific/Chatham\"\ndatestyle = \"SQL, DMY\"\n\
         connect_query = \"SET search_path = hosts_test, public\"\n\
         [databases.bad]\nhost = \"127.0.0.1\"\nport = {port}\ndbname = \"{DB}\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\n\
         pool_mode = \"session\"\nconnect_query = \"SELECT no_such_function()\"\n"
    ))
    .await;
    let url = format!(
        "{}?application_name=web",
        proxy_url_as(&p, USER, PASSWORD, "tz")
    );
    let c = tokio::time::timeout(LIMIT, try_connect(&url))
        .await
        .expect("login within the limit")
        .expect("login to tz (host given as a name)");
    let one = |sql: &'static str| {
        let c = &c;
        async move {
            let rows = c
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows.iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap_or("").to_owned())
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{sql}: no row"))
        }
    };
    assert_eq!(one("SHOW timezone").await, "Pacific/Chatham");
    assert_eq!(one("SHOW datestyle").await, "SQL, DMY");
    assert_eq!(one("SHOW search_path").await, "hosts_test, public");
    let app =
        one("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()").await;
    assert!(
        app.starts_with("web - 127.0.0.1:"),
        "application_name_add_host: {app:?}"
    );

    let e = client(&p, "bad")
        .await
        .expect_err("a failing connect_query fails the login");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("a server error, got {e}"));
    assert_eq!(db.code().code(), "08001");
    assert!(
        db.message().contains("connect_query failed") && db.message().contains("no_such_function"),
        "{}",
        db.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_checked_after_server_check_delay() {
    let pg = start_pg();
    admin(
        &pg,
        "CREATE TABLE checks(at timestamptz DEFAULT now());
         ALTER TABLE checks OWNER TO app;
         CREATE FUNCTION hosts_check() RETURNS void LANGUAGE sql AS 'INSERT INTO checks DEFAULT VALUES';
         ALTER FUNCTION hosts_check() OWNER TO app;",
    );
    let port = pg.port();
    let p = proxy(&format!(
        "[pgheal]\nserver_check_delay = 2\nserver_check_query = \"SELECT hosts_check()\"\n\
         [databases.{DB}]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\npool_mode = \"transaction\"\n"
    ))
    .await;
    let checks = || admin(&pg, "SELECT count(*) FROM checks").trim().to_owned();
    let c = client(&p, DB).await.expect("login");
    let pid = backend_pid(&c).await;
    // Reused within the delay: no check.
    assert_eq!(backend_pid(&c).await, pid);
    assert_eq!(
        checks(),
        "0",
        "no check on a connection reused within server_check_delay"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(backend_pid(&c).await, pid, "the same connection, checked");
    assert_eq!(checks(), "1", "one check after server_check_delay");

    // A backend killed while idle: the client still gets a working connection.
    admin(&pg, &format!("SELECT pg_terminate_backend({pid})"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let other = backend_pid(&c).await;
    assert_ne!(other, pid, "a new server connection");
    let pools = p.pools.all();
    let (runs, failed) = pools[0].stats.check_counts();
    assert!(runs >= 1, "checks counted: {runs} runs, {failed} failed");
}

/// Give back `c` (session pooling: its server connection is reset, then idle) and wait until
/// the pool holds `idle` idle connections.
async fn give_back(p: &ProxyHandle, c: tokio_postgres::Client, idle: usize) {
    drop(c);
    let ok = eventually(LIMIT, || async {
        p.pools
            .all()
            .iter()
            .map(|pool| pool.idle_count())
            .sum::<usize>()
            == idle
    })
    .await;
    assert!(ok, "{idle} idle server connections within {LIMIT:?}");
}

// One thread: pgheal prefers an idle connection of the client's own event loop whatever the
// order, and loop 0 is the test's runtime (`threads = 1` and a current-thread runtime).
#[tokio::test]
async fn server_round_robin_reuses_the_oldest_idle_connection() {
    let pg = start_pg();
    let port = pg.port();
    for (round_robin, expect_first) in [(false, false), (true, true)] {
        let p = proxy(&format!(
            "[pgheal]\nserver_round_robin = {round_robin}\nthreads = 1\n\
             [databases.{DB}]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\npool_mode = \"session\"\n"
        ))
        .await;
        let first = client(&p, DB).await.expect("login");
        let second = client(&p, DB).await.expect("login");
        let (pid1, pid2) = (backend_pid(&first).await, backend_pid(&second).await);
        give_back(&p, first, 1).await;
        give_back(&p, second, 2).await;
        let next = client(&p, DB).await.expect("login");
        let want = if expect_first { pid1 } else { pid2 };
        assert_eq!(
            backend_pid(&next).await,
            want,
            "server_round_robin = {round_robin}: the {} idle connection",
            if expect_first {
                "oldest"
            } else {
                "most recent"
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_host_list_moves_new_connections() {
    let a = start_pg();
    let b = start_pg();
    let entry = |ports: &str| {
        format!(
            "[users]\napp = \"secret\"\n[databases.db]\nhost = \"127.0.0.1\"\nports = [{ports}]\ndbname = \"{DB}\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\npool_mode = \"session\"\n"
        )
    };
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let old_toml = entry(&a.port().to_string());
    let new_toml = entry(&b.port().to_string());
    let load = |t: &str| {
        let file: FileConfig = toml::from_str(t).expect("test TOML");
        pgheal::config::validate::build(file, &args).expect("valid config")
    };
    let p = start_proxy_with(toml::from_str(&old_toml).expect("test TOML"), &args).await;
    let c = client(&p, "db").await.expect("login");
    assert_eq!(server_port(&c).await, i32::from(a.port()));
    give_back(&p, c, 1).await;
    p.pools.reconfigure(&load(&old_toml), &load(&new_toml));
    let c = client(&p, "db").await.expect("login after the reload");
    assert_eq!(
        server_port(&c).await,
        i32::from(b.port()),
        "a new host: the idle connection to the old one is not reused"
    );
}
