//! The admin console against real PostgreSQL: PgBouncer 1.25's SHOW columns (those
//! pgbouncer_exporter and dashboards read) filled with figures that match known activity,
//! who may use which command, and the runbook commands — RECONNECT after a migration,
//! PAUSE/RESUME around a restart, KILL, KILL_CLIENT, DISABLE/ENABLE, WAIT_CLOSE, SHUTDOWN.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::console::stop_now;
use common::*;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::proxy::ProxyHandle;
use tokio_postgres::SimpleQueryMessage;

const ADMIN_PW: &str = "admin-pw";
const WATCH_PW: &str = "watch-pw";

/// pgheal in front of `pg` with an admin user `admin` and a stats user `watcher`.
async fn proxy(pg: &pgheal::cluster::TempCluster, mode: &str) -> ProxyHandle {
    let file: FileConfig = toml::from_str(&format!(
        "[pgheal]\npool_mode = \"{mode}\"\npool_size = 2\nadmin_users = [\"admin\"]\nstats_users = [\"watcher\"]\n\
         [users]\n{USER} = \"{PASSWORD}\"\nadmin = \"{ADMIN_PW}\"\nwatcher = \"{WATCH_PW}\"\n"
    ))
    .expect("test TOML");
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

async fn console(p: &ProxyHandle, user: &str, pw: &str) -> tokio_postgres::Client {
    connect(&proxy_url_as(p, user, pw, "pgbouncer")).await
}

/// A console result: column names and rows by column name.
struct Shown {
    columns: Vec<String>,
    rows: Vec<HashMap<String, Option<String>>>,
}

impl Shown {
    /// The row whose `key` column is `value`.
    fn row(&self, key: &str, value: &str) -> &HashMap<String, Option<String>> {
        self.rows
            .iter()
            .find(|r| r.get(key).and_then(|v| v.as_deref()) == Some(value))
            .unwrap_or_else(|| panic!("no row with {key} = {value}: {:?}", self.rows))
    }

    fn num(row: &HashMap<String, Option<String>>, col: &str) -> i64 {
        row.get(col)
            .and_then(|v| v.as_deref())
            .unwrap_or_else(|| panic!("no value in {col}: {row:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("{col} is not a number: {row:?}"))
    }
}

async fn show(c: &tokio_postgres::Client, sql: &str) -> Shown {
    let msgs = tokio::time::timeout(Duration::from_secs(10), c.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql} did not answer within 10 s"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                let mut map = HashMap::new();
                for (i, c) in r.columns().iter().enumerate() {
                    map.insert(c.name().to_owned(), r.get(i).map(str::to_owned));
                }
                rows.push(map);
            }
            _ => {}
        }
    }
    Shown { columns, rows }
}

async fn refused(c: &tokio_postgres::Client, sql: &str) -> String {
    let e = tokio::time::timeout(Duration::from_secs(10), c.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql} did not answer within 10 s"))
        .expect_err(sql);
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_report_real_activity_in_pgbouncers_columns() {
    let pg = start_pg();
    let p = proxy(&pg, "transaction").await;
    let app = connect(&proxy_url(&p)).await;
    app.batch_execute("BEGIN; SELECT 1; SELECT 2; COMMIT")
        .await
        .unwrap();
    for _ in 0..3 {
        app.simple_query("SELECT 1").await.unwrap();
    }
    // A session holding its server connection, to check SHOW SERVERS' pid and link.
    let holder = connect(&proxy_url(&p)).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let holder_pid = backend_pid(&holder).await;

    let admin = console(&p, "admin", ADMIN_PW).await;
    let pools = show(&admin, "SHOW POOLS;").await;
    assert_eq!(
        pools.columns,
        names(&[
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active",
            "sv_active_cancel",
            "sv_being_canceled",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
            "maxwait_us",
            "pool_mode",
            "load_balance_hosts",
        ])
    );
    let row = pools.row("database", DB);
    assert_eq!(row["user"].as_deref(), Some(USER));
    assert_eq!(
        Shown::num(row, "cl_active"),
        2,
        "two clients logged in: {row:?}"
    );
    assert_eq!(Shown::num(row, "cl_waiting"), 0);
    assert_eq!(
        Shown::num(row, "sv_active"),
        1,
        "the open transaction holds one: {row:?}"
    );
    assert_eq!(row["pool_mode"].as_deref(), Some("transaction"));
    assert_eq!(
        pools.row("database", "pgbouncer")["pool_mode"].as_deref(),
        Some("statement")
    );

    let stats = show(&admin, "show stats").await;
    assert_eq!(stats.columns.len(), 25);
    assert_eq!(
        &stats.columns[..4],
        &names(&[
            "database",
            "total_server_assignment_count",
            "total_xact_count",
            "total_query_count"
        ])
    );
    assert_eq!(stats.columns[24], "avg_client_login_count");
    let s = stats.row("database", DB);
    // A query is what ends in ReadyForQuery, as PgBouncer counts: the BEGIN..COMMIT batch
    // (one simple Query, one transaction), three single queries, the open BEGIN, and
    // pg_backend_pid() inside it (prepare, then execute: two). pgheal may add one of its
    // own on the server when it prepares the statement under its pool-wide name.
    assert_eq!(Shown::num(s, "total_xact_count"), 4, "{s:?}");
    let queries = Shown::num(s, "total_query_count");
    assert!((7..=8).contains(&queries), "{s:?}");
    assert_eq!(Shown::num(s, "total_client_parse_count"), 1, "{s:?}");
    assert!(Shown::num(s, "total_received") > 0 && Shown::num(s, "total_sent") > 0);
    assert_eq!(Shown::num(s, "total_client_login_count"), 2);
    assert!(Shown::num(s, "total_xact_time") > 0);

    let totals = show(&admin, "SHOW STATS_TOTALS").await;
    assert_eq!(totals.columns[4], "bytes_received");
    let averages = show(&admin, "SHOW STATS_AVERAGES").await;
    assert_eq!(averages.columns[9], "avg_client_parse_count");
    let all = show(&admin, "SHOW TOTALS").await;
    assert_eq!(Shown::num(all.row("name", "total_xact_count"), "value"), 4);

    let servers = show(&admin, "SHOW SERVERS").await;
    assert_eq!(servers.columns.len(), 21);
    assert_eq!(servers.columns[16], "remote_pid");
    let held = servers.row("remote_pid", &holder_pid.to_string());
    assert_eq!(held["state"].as_deref(), Some("active"));
    assert_eq!(held["type"].as_deref(), Some("S"));
    assert_eq!(held["database"].as_deref(), Some(DB));

    let clients = show(&admin, "SHOW CLIENTS").await;
    assert_eq!(clients.columns, servers.columns);
    // The holder's client row links to the server row, and the server row back.
    let holder_row = clients
        .rows
        .iter()
        .find(|r| r["link"].as_deref() == held["ptr"].as_deref())
        .expect("a client linked to the held server connection");
    assert_eq!(holder_row["state"].as_deref(), Some("active"));
    assert_eq!(held["link"].as_deref(), holder_row["ptr"].as_deref());
    assert_eq!(
        clients.row("database", "pgbouncer")["user"].as_deref(),
        Some("admin")
    );
    assert_eq!(
        clients
            .rows
            .iter()
            .filter(
                |r| r["database"].as_deref() == Some(DB) && r["state"].as_deref() == Some("idle")
            )
            .count(),
        1,
        "the client between transactions shows idle"
    );

    let dbs = show(&admin, "SHOW DATABASES").await;
    assert_eq!(dbs.columns.len(), 17);
    let d = dbs.row("name", DB);
    assert_eq!(Shown::num(d, "port"), i64::from(pg.port()));
    assert_eq!(Shown::num(d, "pool_size"), 2);
    assert_eq!(Shown::num(d, "current_client_connections"), 2);
    assert_eq!(Shown::num(d, "paused"), 0);

    let lists = show(&admin, "SHOW LISTS").await;
    assert_eq!(Shown::num(lists.row("list", "used_clients"), "items"), 3);
    assert_eq!(Shown::num(lists.row("list", "pools"), "items"), 2);
    let state = show(&admin, "SHOW STATE").await;
    assert_eq!(state.row("key", "paused")["value"].as_deref(), Some("no"));
    let version = show(&admin, "SHOW VERSION").await;
    assert!(version.rows[0]["version"]
        .as_deref()
        .unwrap()
        .contains("PgBouncer 1.25.2"));
    let config = show(&admin, "SHOW CONFIG").await;
    assert_eq!(
        config.columns,
        names(&["key", "value", "default", "changeable"])
    );
    assert_eq!(
        config.row("key", "pool_mode")["default"].as_deref(),
        Some("session")
    );
    assert_eq!(
        config.row("key", "admin_users")["value"].as_deref(),
        Some("admin")
    );
    let users = show(&admin, "SHOW USERS").await;
    assert!(users
        .rows
        .iter()
        .any(|r| r["name"].as_deref() == Some("watcher")));
    for (cmd, n) in [
        ("SHOW FDS", 15),
        ("SHOW MEM", 5),
        ("SHOW DNS_HOSTS", 3),
        ("SHOW DNS_ZONES", 3),
        ("SHOW PEERS", 4),
        ("SHOW PEER_POOLS", 5),
        ("SHOW SOCKETS", 28),
        ("SHOW ACTIVE_SOCKETS", 28),
    ] {
        assert_eq!(show(&admin, cmd).await.columns.len(), n, "{cmd}");
    }
    let enc = show(&admin, "SHOW client_encoding").await;
    assert_eq!(enc.rows[0]["client_encoding"].as_deref(), Some("UTF-8"));
    admin
        .simple_query("SET client_encoding = 'UTF8'")
        .await
        .expect("SET ignored");

    assert_eq!(
        refused(&admin, "SHOW NONSENSE").await,
        "invalid command 'SHOW NONSENSE', use SHOW HELP;"
    );
    // The extended protocol is refused and the connection closed, as in PgBouncer.
    let e = admin.query("SHOW POOLS", &[]).await.unwrap_err();
    assert!(
        e.as_db_error().is_some_and(
            |d| d.message() == "extended query protocol not supported by admin console"
        ),
        "{e}"
    );

    // stats_users may look but not act; other users may not log in at all.
    let watcher = console(&p, "watcher", WATCH_PW).await;
    assert_eq!(show(&watcher, "SHOW POOLS").await.columns.len(), 17);
    assert_eq!(refused(&watcher, "PAUSE").await, "admin access needed");
    assert_eq!(refused(&watcher, "SHOW FDS").await, "admin access needed");
    let Err(e) = try_connect(&proxy_url_as(&p, USER, PASSWORD, "pgbouncer")).await else {
        panic!("app is not a console user");
    };
    assert_eq!(e.as_db_error().map(|d| d.message()), Some("not allowed"));
    let Err(e) = try_connect(&proxy_url_as(&p, "admin", "wrong", "pgheal")).await else {
        panic!("a wrong password");
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"));
    holder.batch_execute("COMMIT").await.unwrap();
    stop_now(p).await;
}

/// The runbook after a migration: RECONNECT the database, WAIT_CLOSE until every old
/// connection is gone; the next transactions run on new server connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replaces_server_connections_once_released() {
    let pg = start_pg();
    let p = proxy(&pg, "transaction").await;
    let app = connect(&proxy_url(&p)).await;
    let before = backend_pid(&app).await;
    let admin = console(&p, "admin", ADMIN_PW).await;
    // A transaction in progress keeps its connection until it ends.
    let busy = connect(&proxy_url(&p)).await;
    busy.batch_execute("BEGIN").await.unwrap();
    let busy_pid = backend_pid(&busy).await;
    show(&admin, &format!("RECONNECT {DB}")).await;
    let servers = show(&admin, "SHOW SERVERS").await;
    assert_eq!(
        Shown::num(
            servers.row("remote_pid", &busy_pid.to_string()),
            "close_needed"
        ),
        1
    );
    let wait = tokio::spawn({
        let admin = console(&p, "admin", ADMIN_PW).await;
        async move { show(&admin, "WAIT_CLOSE").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !wait.is_finished(),
        "WAIT_CLOSE waits for the open transaction"
    );
    assert_eq!(
        backend_pid(&busy).await,
        busy_pid,
        "the transaction keeps its connection"
    );
    busy.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("WAIT_CLOSE returns once the old connections are closed")
        .unwrap();
    let after = backend_pid(&app).await;
    assert_ne!(
        after, before,
        "the next transaction runs on a new server connection"
    );
    assert_ne!(after, busy_pid);
    let admin_pg = admin_client(&pg).await;
    for pid in [before, busy_pid] {
        assert!(
            eventually(Duration::from_secs(5), || async {
                !backend_alive(&admin_pg, pid).await
            })
            .await,
            "backend {pid} is gone after RECONNECT"
        );
    }
    assert_eq!(
        refused(&admin, "RECONNECT nosuchdb").await,
        "no such database: nosuchdb"
    );
    assert_eq!(
        refused(&admin, "RECONNECT pgbouncer").await,
        "cannot reconnect admin db: pgbouncer"
    );
    stop_now(p).await;
}

/// PAUSE waits for transactions to end, closes the server connections, holds new queries
/// until RESUME; nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_transactions_and_resume_releases_waiting_clients() {
    let pg = start_pg_with_orders("");
    let p = proxy(&pg, "transaction").await;
    let a = connect(&proxy_url(&p)).await;
    a.batch_execute("BEGIN; UPDATE orders SET note = 'during pause' WHERE id = 1")
        .await
        .unwrap();
    let a_pid = backend_pid(&a).await;
    let admin = console(&p, "admin", ADMIN_PW).await;
    let pause = tokio::spawn({
        let admin = console(&p, "admin", ADMIN_PW).await;
        async move { show(&admin, "PAUSE").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pause.is_finished(), "PAUSE waits for the open transaction");
    assert_eq!(
        show(&admin, "SHOW STATE").await.row("key", "paused")["value"].as_deref(),
        Some("yes")
    );
    // The transaction may finish while pausing.
    a.batch_execute("COMMIT")
        .await
        .expect("the open transaction commits during PAUSE");
    tokio::time::timeout(Duration::from_secs(10), pause)
        .await
        .expect("PAUSE completes once the transaction ended")
        .unwrap();
    let admin_pg = admin_client(&pg).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            !backend_alive(&admin_pg, a_pid).await
        })
        .await,
        "PAUSE closes the server connection"
    );
    // A new query waits for RESUME.
    let b = connect(&proxy_url(&p)).await;
    let waiting = tokio::spawn(async move {
        b.query_one("SELECT note FROM orders WHERE id = 1", &[])
            .await
            .map(|r| r.get::<_, String>(0))
    });
    let seen = eventually(Duration::from_secs(5), || async {
        Shown::num(
            show(&admin, "SHOW POOLS").await.row("database", DB),
            "cl_waiting",
        ) == 1
    })
    .await;
    assert!(seen, "SHOW POOLS shows the waiting client");
    assert!(!waiting.is_finished());
    assert_eq!(refused(&admin, "PAUSE").await, "already suspended/paused");
    show(&admin, "RESUME").await;
    let note = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting query runs after RESUME")
        .unwrap()
        .expect("no error for the waiting client");
    assert_eq!(note, "during pause");
    assert_eq!(
        refused(&admin, "RESUME").await,
        "pooler is not paused/suspended"
    );
    stop_now(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_kill_and_disable_end_and_refuse_sessions() {
    let pg = start_pg();
    let p = proxy(&pg, "session").await;
    let admin = console(&p, "admin", ADMIN_PW).await;
    let victim = connect(&proxy_url(&p)).await;
    victim.simple_query("SELECT 1").await.unwrap();
    let clients = show(&admin, "SHOW CLIENTS").await;
    let id = clients.row("database", DB)["id"].clone().unwrap();
    show(&admin, &format!("KILL_CLIENT {id}")).await;
    let e = victim.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        sqlstate(&e).as_deref() == Some("57P01") || victim.is_closed(),
        "the killed client's connection ends: {e}"
    );
    assert_eq!(
        refused(&admin, "KILL_CLIENT 999999").await,
        "client not found"
    );

    show(&admin, &format!("DISABLE {DB}")).await;
    let Err(e) = try_connect(&proxy_url(&p)).await else {
        panic!("a disabled database refuses logins");
    };
    assert_eq!(
        e.as_db_error().map(|d| d.message().to_owned()),
        Some(format!("database \"{DB}\" is disabled"))
    );
    assert_eq!(
        Shown::num(
            show(&admin, "SHOW DATABASES").await.row("name", DB),
            "disabled"
        ),
        1
    );
    show(&admin, &format!("ENABLE {DB}")).await;
    let c = connect(&proxy_url(&p)).await;
    c.simple_query("SELECT 1").await.unwrap();

    // KILL drops every client of the database and pauses it until RESUME.
    show(&admin, &format!("KILL {DB}")).await;
    assert!(
        c.simple_query("SELECT 1").await.is_err(),
        "KILL ended the session"
    );
    // In session pooling the login itself waits for a server connection.
    let url = proxy_url(&p);
    let query = tokio::spawn(async move {
        let later = connect(&url).await;
        later.simple_query("SELECT 1").await.map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!query.is_finished(), "a killed database is paused");
    show(&admin, &format!("RESUME {DB}")).await;
    tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the query runs after RESUME")
        .unwrap()
        .expect("no error");
    stop_now(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wait_for_clients_stops_listening_and_ends_when_the_last_client_leaves() {
    let pg = start_pg();
    let p = proxy(&pg, "transaction").await;
    let app = connect(&proxy_url(&p)).await;
    let admin = console(&p, "admin", ADMIN_PW).await;
    show(&admin, "SHUTDOWN WAIT_FOR_CLIENTS").await;
    let refused_login = eventually(Duration::from_secs(5), || async {
        try_connect(&proxy_url(&p)).await.is_err()
    })
    .await;
    assert!(refused_login, "no new client is accepted");
    app.simple_query("SELECT 1")
        .await
        .expect("the existing client goes on");
    drop(app);
    drop(admin);
    tokio::time::timeout(Duration::from_secs(15), p.wait())
        .await
        .expect("pgheal stops once every client has left");
}

/// psql, as operators run the console: `psql -h … -U admin pgbouncer -c 'SHOW POOLS'`.
async fn psql_console(
    pg: &pgheal::cluster::TempCluster,
    p: &ProxyHandle,
    db: &str,
    sql: &str,
) -> (bool, Vec<Vec<String>>, String) {
    let mut cmd = common::pgbench::client_cmd(pg, "psql", p.addr.port());
    cmd.env("PGPASSWORD", ADMIN_PW)
        .args([
            "-U",
            "admin",
            "-d",
            db,
            "-X",
            "-A",
            "-F",
            "|",
            "-P",
            "footer=off",
            "-c",
            sql,
        ])
        .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("psql finished within 30 s")
        .expect("run psql");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_the_console_as_with_pgbouncer() {
    let pg = start_pg();
    let p = proxy(&pg, "transaction").await;
    let app = connect(&proxy_url(&p)).await;
    app.simple_query("SELECT 1").await.unwrap();
    let (ok, lines, err) = psql_console(&pg, &p, "pgbouncer", "SHOW POOLS").await;
    assert!(ok, "psql SHOW POOLS failed: {err}");
    assert_eq!(
        lines[0][..4],
        names(&["database", "user", "cl_active", "cl_waiting"])[..]
    );
    let row = lines
        .iter()
        .find(|l| l[0] == DB)
        .expect("a row for the database");
    assert_eq!(
        (row[1].as_str(), row[2].as_str(), row[15].as_str()),
        (USER, "1", "transaction")
    );
    let (ok, lines, err) = psql_console(&pg, &p, "pgheal", &format!("RECONNECT {DB}")).await;
    assert!(ok, "RECONNECT through psql failed: {err}");
    assert_eq!(lines, [["RECONNECT"]], "psql prints the command tag");
    let (ok, _, err) = psql_console(&pg, &p, "pgbouncer", "SHOW HELP").await;
    assert!(
        ok && err.contains("SHOW HELP|CONFIG|DATABASES"),
        "SHOW HELP: {err}"
    );
    let (ok, _, err) = psql_console(&pg, &p, "pgbouncer", "PAUSE nosuchdb").await;
    assert!(!ok && err.contains("no such database: nosuchdb"), "{err}");
    stop_now(p).await;
}
