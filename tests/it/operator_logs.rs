//! The log lines an operator coming from PgBouncer expects (`log_connections`,
//! `log_disconnections`, `log_pooler_errors`, `log_stats` every `stats_period`), in
//! PgBouncer's words, on by default and off by their keys; and heal lines that name types
//! (`integer → bigint`) and say what the client received. The binary runs as operators run it;
//! its stderr is read after SIGTERM.

use crate::common;

use std::time::Duration;

use common::bin::pgheal_cmd;
use common::*;

/// Run pgheal with `toml` as its configuration file in front of `pg`, let `work` talk to it,
/// stop it with SIGTERM and return its log.
async fn logged<F, Fut>(tag: &str, pg: &pgheal::cluster::TempCluster, toml: &str, work: F) -> String
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = common::certs::Dir::new(tag);
    let file = dir.write("pgheal.toml", toml);
    let port = free_port();
    let mut c = pgheal_cmd();
    c.env("PGHEAL_UPSTREAM", direct_url(pg))
        .env("PGHEAL_LOG", "info")
        .arg("--config")
        .arg(&file)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--shutdown-timeout", "1"]);
    let (mut child, stderr) = spawn_logging(c);
    let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}");
    assert!(
        eventually(Duration::from_secs(20), || async {
            try_connect(&url).await.is_ok()
        })
        .await,
        "pgheal did not start accepting on port {port}"
    );
    work(url).await;
    let pid = child.id().expect("pgheal pid");
    common::bin::send_signal(pid, "TERM");
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("pgheal exits after SIGTERM")
        .expect("wait");
    stderr.await.expect("stderr reader")
}

/// A login, a query, a wrong password, a heal with projection, a type change that cannot be
/// healed, and (with `stats_period = 1`) time for a stats line.
async fn activity(pg: &pgheal::cluster::TempCluster, url: String) {
    let c = connect(&url).await;
    c.simple_query("SELECT 1").await.expect("query");
    let wrong = url.replace(PASSWORD, "wrong-password");
    assert!(try_connect(&wrong).await.is_err(), "wrong password refused");
    let wide = c
        .prepare("SELECT * FROM orders WHERE id = $1")
        .await
        .expect("prepare");
    let ids = c
        .prepare("SELECT id FROM orders WHERE id = $1")
        .await
        .expect("prepare");
    c.query(&wide, &[&1i32]).await.expect("query");
    c.query(&ids, &[&1i32]).await.expect("query");
    admin(pg, "ALTER TABLE orders ADD COLUMN region text");
    let rows = c.query(&wide, &[&1i32]).await.expect("healed");
    assert_eq!(rows[0].len(), 3);
    admin(pg, "ALTER TABLE orders ALTER COLUMN id TYPE bigint");
    let e = c
        .query(&ids, &[&1i32])
        .await
        .expect_err("a changed type cannot be healed");
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
    // Past one stats_period: the maintenance task writes the stats line.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn lines<'a>(log: &'a str, text: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(text)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncers_log_lines_are_on_by_default() {
    let pg = start_pg_with_orders("");
    let log = logged("oplog-on", &pg, "[pgheal]\nstats_period = 1\n", |url| {
        activity(&pg, url)
    })
    .await;
    assert!(
        !lines(&log, "login attempt: db=appdb user=app tls=no").is_empty(),
        "log_connections:\n{log}"
    );
    assert!(
        !lines(&log, "closing because: client close request (age=").is_empty(),
        "log_disconnections:\n{log}"
    );
    let pooler = lines(&log, "pooler error: ");
    assert!(
        pooler
            .iter()
            .any(|l| l.contains("WARN") && l.contains("password authentication failed")),
        "log_pooler_errors:\n{log}"
    );
    assert!(
        !lines(&log, "closing because: password authentication failed").is_empty(),
        "the refused session's end names why:\n{log}"
    );
    let stats = lines(&log, "stats: ");
    assert!(
        stats
            .iter()
            .any(|l| (l.contains("db=\"appdb\"") || l.contains("db=appdb"))
                && l.contains(" xacts/s, ")
                && l.contains(" us")),
        "log_stats every stats_period:\n{log}"
    );
    assert!(
        stats
            .iter()
            .any(|l| l.contains("queries/s") && l.contains("wait ")),
        "{stats:?}"
    );
    let projected = lines(
        &log,
        "the client received rows projected onto the columns it prepared",
    );
    assert_eq!(projected.len(), 1, "{log}");
    let refused = lines(&log, "integer → bigint");
    assert!(
        refused
            .iter()
            .any(|l| l.contains("WARN") && l.contains("the client received PostgreSQL's error")),
        "the refusal names the types and what the client got:\n{log}"
    );
    assert!(!log.contains(PASSWORD), "no password in the log");
    if std::env::var_os("PGHEAL_SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_line_turns_off_with_its_key() {
    let pg = start_pg_with_orders("");
    let toml = "[pgheal]\nstats_period = 1\nlog_connections = false\nlog_disconnections = false\n\
                log_pooler_errors = false\nlog_stats = false\n";
    let log = logged("oplog-off", &pg, toml, |url| activity(&pg, url)).await;
    for text in [
        "login attempt:",
        "closing because:",
        "pooler error:",
        "stats: ",
    ] {
        assert!(lines(&log, text).is_empty(), "{text} is off:\n{log}");
    }
    // Heal lines are not among PgBouncer's switches.
    assert!(!lines(&log, "integer → bigint").is_empty(), "{log}");
}
