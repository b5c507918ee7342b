//! Per-pool Prometheus metrics and the health endpoints against real PostgreSQL: figures
//! checked against known activity (a client waiting for a busy pool shows in the waiting
//! gauge as in `SHOW POOLS`; queries and transactions counted as `SHOW STATS` counts them; a
//! heal counted under its database), and `/readyz` flipping on PAUSE, on an unreachable
//! database and on shutdown.

use crate::common;

use std::time::Duration;

use common::metrics::{http_get, sample, scrape};
use common::*;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::proxy::ProxyHandle;
use tokio_postgres::SimpleQueryMessage;

const ADMIN_PW: &str = "admin-pw";
const POOL: &str = "database=\"appdb\",user=\"app\"";

/// pgheal in front of `pg`: transaction pooling, one server connection, an admin user, and
/// `more` TOML after `[users]` (e.g. another database).
async fn proxy(pg: &pgheal::cluster::TempCluster, more: &str) -> ProxyHandle {
    let file: FileConfig = toml::from_str(&format!(
        "[pgheal]\npool_mode = \"transaction\"\npool_size = 1\nadmin_users = [\"admin\"]\n\
         [users]\n{USER} = \"{PASSWORD}\"\nadmin = \"{ADMIN_PW}\"\n{more}"
    ))
    .expect("test TOML");
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        metrics_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

async fn run(c: &tokio_postgres::Client, sql: &str) {
    tokio::time::timeout(Duration::from_secs(10), c.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql} did not answer within 10 s"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// One column of the `SHOW POOLS` row of appdb.
async fn show_pools(admin: &tokio_postgres::Client, col: &str) -> i64 {
    let msgs = tokio::time::timeout(Duration::from_secs(10), admin.simple_query("SHOW POOLS"))
        .await
        .expect("SHOW POOLS answers within 10 s")
        .expect("SHOW POOLS");
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) if r.get("database") == Some(DB) => {
                r.get(col).and_then(|v| v.parse().ok())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {col} for {DB} in SHOW POOLS"))
}

fn value(body: &str, name: &str, labels: &str) -> f64 {
    sample(body, name, labels).unwrap_or_else(|| panic!("no {name}{{{labels}}} in:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_client_shows_in_the_gauges_and_activity_in_the_counters() {
    let pg = start_pg();
    let p = proxy(&pg, "").await;
    let admin = connect(&proxy_url_as(&p, "admin", ADMIN_PW, "pgbouncer")).await;
    let a = connect(&proxy_url(&p)).await;
    run(&a, "BEGIN").await;
    run(&a, "SELECT 1").await;

    // The only server connection is in A's transaction: B waits.
    let b = connect(&proxy_url(&p)).await;
    let waiting = tokio::spawn(async move {
        b.simple_query("SELECT 2").await.expect("B's query");
        b
    });
    let seen = eventually(Duration::from_secs(10), || async {
        let body = scrape(&p).await;
        sample(&body, "pgheal_pool_client_waiting_connections", POOL) == Some(1.0)
    })
    .await;
    assert!(seen, "B waiting shows in the gauge:\n{}", scrape(&p).await);
    assert_eq!(show_pools(&admin, "cl_waiting").await, 1);
    let body = scrape(&p).await;
    assert_eq!(
        value(&body, "pgheal_pool_client_active_connections", POOL),
        1.0
    );
    assert_eq!(
        value(&body, "pgheal_pool_server_active_connections", POOL),
        1.0
    );
    assert_eq!(value(&body, "pgheal_pool_size", POOL), 1.0);
    let waited = eventually(Duration::from_secs(10), || async {
        let body = scrape(&p).await;
        sample(&body, "pgheal_pool_client_maxwait_seconds", POOL).is_some_and(|v| v > 0.0)
    })
    .await;
    assert!(waited, "the longest wait grows while B waits");

    run(&a, "COMMIT").await;
    let b = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("B is served once A commits")
        .expect("B's task");
    drop(b);
    let settled = eventually(Duration::from_secs(10), || async {
        let body = scrape(&p).await;
        sample(&body, "pgheal_pool_client_waiting_connections", POOL) == Some(0.0)
            && sample(&body, "pgheal_pool_transactions_total", POOL) == Some(2.0)
    })
    .await;
    let body = scrape(&p).await;
    assert!(settled, "B is no longer waiting, two transactions:\n{body}");
    // A: BEGIN, SELECT 1, COMMIT; B: SELECT 2. The histograms count the same queries and
    // transactions as the counters and SHOW STATS.
    assert_eq!(value(&body, "pgheal_pool_queries_total", POOL), 4.0);
    assert_eq!(
        value(&body, "pgheal_pool_query_duration_seconds_count", POOL),
        4.0
    );
    assert_eq!(
        value(
            &body,
            "pgheal_pool_query_duration_seconds_bucket",
            &format!("{POOL},le=\"+Inf\"")
        ),
        4.0
    );
    assert_eq!(
        value(
            &body,
            "pgheal_pool_transaction_duration_seconds_count",
            POOL
        ),
        2.0
    );
    assert_eq!(
        value(&body, "pgheal_pool_client_wait_seconds_count", POOL),
        value(&body, "pgheal_pool_server_assignments_total", POOL)
    );
    assert!(value(&body, "pgheal_pool_client_wait_seconds_sum", POOL) > 0.0);
    assert!(value(&body, "pgheal_pool_received_bytes_total", POOL) > 0.0);
    assert!(value(&body, "pgheal_pool_sent_bytes_total", POOL) > 0.0);
    assert_eq!(value(&body, "pgheal_pool_client_logins_total", POOL), 2.0);
    assert_eq!(value(&body, "pgheal_paused", ""), 0.0);
    assert_eq!(value(&body, "pgheal_pools", ""), 1.0);
    // The console's SHOW STATS agrees.
    let stats = admin.simple_query("SHOW STATS").await.expect("SHOW STATS");
    let queries = stats.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) if r.get("database") == Some(DB) => {
            r.get("total_query_count").map(str::to_owned)
        }
        _ => None,
    });
    assert_eq!(queries.as_deref(), Some("4"));
    drop(a);
    common::console::stop_now(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heal_counts_under_its_database_and_moves_the_epoch() {
    let pg = start_pg_with_orders("");
    let p = proxy(&pg, "[heal]\nsavepoint_guard = \"always\"\n").await;
    let mut c = connect(&proxy_url(&p)).await;
    let body = scrape(&p).await;
    let zero = "database=\"appdb\",outcome=\"projected\"";
    assert_eq!(value(&body, "pgheal_heal_events_total", zero), 0.0);
    assert_eq!(
        value(&body, "pgheal_schema_epoch", "database=\"appdb\""),
        0.0
    );
    let stmt = c
        .prepare("SELECT * FROM orders WHERE id = $1")
        .await
        .expect("prepare");
    assert_eq!(c.query(&stmt, &[&1i32]).await.expect("query").len(), 1);
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    let rows = c.query(&stmt, &[&1i32]).await.expect("healed");
    assert_eq!(rows[0].len(), 3, "the client's three columns");

    let body = scrape(&p).await;
    assert_eq!(
        value(&body, "pgheal_heal_events_total", zero),
        1.0,
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            "pgheal_heal_events_total",
            "database=\"appdb\",outcome=\"refused\""
        ),
        0.0
    );
    let epoch = value(&body, "pgheal_schema_epoch", "database=\"appdb\"");
    assert!(
        epoch >= 1.0,
        "the cached-plan error moved the epoch: {body}"
    );
    assert_eq!(epoch as u64, p.schema_epoch(DB));
    // A Bind inside a transaction block goes behind the savepoint guard, counted in its pool.
    let tx = c.transaction().await.expect("BEGIN");
    assert_eq!(tx.query(&stmt, &[&2i32]).await.expect("guarded").len(), 1);
    tx.commit().await.expect("COMMIT");
    let body = scrape(&p).await;
    assert!(
        value(&body, "pgheal_pool_savepoint_guards_total", POOL) >= 1.0,
        "{body}"
    );
    assert_eq!(
        value(&body, "pgheal_pool_savepoint_guard_heals_total", POOL),
        0.0
    );
    // The statement stays prepared on the server connection.
    assert!(value(&body, "pgheal_pool_server_prepared_statements", POOL) >= 1.0);
    assert!(value(&body, "pgheal_pool_server_prepared_statements_max", POOL) >= 1.0);
    assert!(!body.contains("SELECT"), "statement text is never a label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_flips_on_pause_and_on_shutdown_while_healthz_stays() {
    let pg = start_pg();
    let p = proxy(&pg, "").await;
    let addr = p.metrics_addr.expect("metrics listener");
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await, (200, "ready\n".into()));

    // PAUSE through the admin console.
    let admin = connect(&proxy_url_as(&p, "admin", ADMIN_PW, "pgbouncer")).await;
    run(&admin, "PAUSE").await;
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "not ready: paused\n"));
    assert_eq!(
        http_get(addr, "/healthz").await.0,
        200,
        "alive while paused"
    );
    assert_eq!(value(&scrape(&p).await, "pgheal_paused", ""), 1.0);
    run(&admin, "RESUME").await;
    assert_eq!(http_get(addr, "/readyz").await.0, 200);

    // And through the handle (SIGUSR1).
    p.pause();
    assert_eq!(http_get(addr, "/readyz").await.0, 503);
    p.resume();
    assert_eq!(http_get(addr, "/readyz").await.0, 200);

    p.trigger_shutdown();
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    drop(admin);
    common::console::stop_now(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_an_unreachable_database_unless_allowed_down() {
    let pg = start_pg();
    let p = proxy_with_a_database_down(&pg).await;
    let addr = p.metrics_addr.expect("metrics listener");
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready: database ghost unreachable"),
        "{body}"
    );
    assert!(!body.contains("appdb"), "appdb is reachable: {body}");
    assert_eq!(
        http_get(addr, "/readyz?allow_down=ghost").await,
        (200, "ready\n".into())
    );
    // Unconfigured database names are `other`, never their own label.
    let body = scrape(&p).await;
    assert_eq!(
        value(
            &body,
            "pgheal_heal_events_total",
            "database=\"other\",outcome=\"healed\""
        ),
        0.0
    );
    assert_eq!(
        value(&body, "pgheal_schema_epoch", "database=\"ghost\""),
        0.0
    );
}

/// [`proxy`] with a database `ghost` on a port nothing listens on.
async fn proxy_with_a_database_down(pg: &pgheal::cluster::TempCluster) -> ProxyHandle {
    let port = free_port();
    proxy(
        pg,
        &format!("[databases.ghost]\nhost = \"127.0.0.1\"\nport = {port}\n"),
    )
    .await
}

/// `pgheal healthcheck`, as Docker runs it: its exit status and what it says.
async fn healthcheck(addr: std::net::SocketAddr, args: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        common::bin::pgheal_cmd()
            .arg("healthcheck")
            .args(args)
            .env("PGHEAL_METRICS_LISTEN", addr.to_string())
            .output(),
    )
    .await
    .expect("pgheal healthcheck ends within 15 s")
    .expect("run pgheal healthcheck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_command_exits_by_readiness() {
    let pg = start_pg();
    let p = proxy_with_a_database_down(&pg).await;
    let addr = p.metrics_addr.expect("metrics listener");
    let (ok, text) = healthcheck(addr, &[]).await;
    assert!(!ok, "ghost is down: {text}");
    assert!(text.contains("database ghost unreachable"), "{text}");
    let (ok, text) = healthcheck(addr, &["--allow-down", "ghost"]).await;
    assert!(ok, "{text}");
    assert_eq!(text, "ready\n");
    p.pause();
    let (ok, text) = healthcheck(addr, &["--allow-down", "ghost"]).await;
    assert!(!ok, "paused: {text}");
    assert!(text.contains("not ready: paused"), "{text}");
    let (ok, text) = healthcheck(addr, &["--live"]).await;
    assert!(ok, "alive while paused: {text}");
    p.resume();
    p.trigger_shutdown();
    let (ok, text) = healthcheck(addr, &["--allow-down", "ghost"]).await;
    assert!(!ok, "shutting down: {text}");
    assert!(text.contains("shutting down"), "{text}");
    tokio::time::timeout(Duration::from_secs(15), p.wait())
        .await
        .expect("pgheal stops within 15 s");
}
