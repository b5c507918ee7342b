//! The `pgheal` binary: invalid settings exit with code 2 naming the key, and a running pgheal
//! serves clients and exits 0 on SIGTERM, without ever logging the server password.

use crate::common;

use std::time::Duration;

use common::bin::pgheal_cmd as pgheal;
use common::*;
use tokio::process::Command;

const UNREACHABLE: &str = "postgres://a:b@127.0.0.1:1/d";

/// Run to completion (bounded) and return (exit code, stderr).
async fn run(mut c: Command) -> (Option<i32>, String) {
    let out = tokio::time::timeout(Duration::from_secs(30), c.output())
        .await
        .expect("pgheal exits by itself on a bad configuration")
        .expect("spawn pgheal");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn expect_config_error(c: Command, key: &str) {
    let (code, stderr) = run(c).await;
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("`{key}`")),
        "stderr should name {key}: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_exit_with_code_2_naming_the_key() {
    let mut c = pgheal();
    c.args(["--pool-size", "0", "--upstream", UNREACHABLE]);
    expect_config_error(c, "pool_size").await;

    let mut c = pgheal();
    c.args(["--pool-mode", "per-query", "--upstream", UNREACHABLE]);
    expect_config_error(c, "pool_mode").await;

    let mut c = pgheal();
    c.args(["--listen", "localhost:6432", "--upstream", UNREACHABLE]);
    expect_config_error(c, "listen").await;

    let mut c = pgheal();
    c.env("PGHEAL_POOL_SIZE", "0")
        .env("PGHEAL_UPSTREAM", UNREACHABLE);
    expect_config_error(c, "pool_size").await;

    // A flag wins over the environment.
    let mut c = pgheal();
    c.env("PGHEAL_POOL_SIZE", "5")
        .env("PGHEAL_UPSTREAM", UNREACHABLE)
        .args(["--pool-size", "0"]);
    expect_config_error(c, "pool_size").await;

    let path = std::env::temp_dir().join(format!("pgheal-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "[pgheal]\npool_sise = 3\n").expect("write config");
    let mut c = pgheal();
    c.arg("--config")
        .arg(&path)
        .args(["--upstream", UNREACHABLE]);
    let (code, stderr) = run(c).await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("pool_sise"), "stderr: {stderr}");

    // No database at all.
    expect_config_error(pgheal(), "databases").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_clients_and_exits_0_on_sigterm() {
    let pg = start_pg();
    let port = free_port();
    let mut c = pgheal();
    // The upstream (with its password) goes in the environment, not on the command line.
    c.env("PGHEAL_UPSTREAM", direct_url(&pg))
        .env("PGHEAL_LOG", "debug")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--shutdown-timeout", "1"]);
    let (mut child, stderr) = spawn_logging(c);

    let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}");
    let up = eventually(Duration::from_secs(20), || async {
        try_connect(&url).await.is_ok()
    })
    .await;
    assert!(up, "pgheal did not start accepting on port {port}");

    let client = connect(&url).await;
    let r = client
        .query_one("SELECT current_user::text, $1::int + 1", &[&41i32])
        .await
        .expect("query through the binary");
    assert_eq!(r.get::<_, String>(0), USER);
    assert_eq!(r.get::<_, i32>(1), 42);
    let wrong = format!("postgres://{USER}:not-it@127.0.0.1:{port}/{DB}");
    let err = try_connect(&wrong).await.expect_err("wrong password");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"));
    drop(client);

    // A client still connected at SIGTERM is told 57P01 after the shutdown timeout.
    let (idle, idle_conn) = connect_watched(&url).await;
    backend_pid(&idle).await;

    let pid = child.id().expect("pgheal pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("pgheal exits after SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "exit status {status}");

    let ended = tokio::time::timeout(Duration::from_secs(10), idle_conn)
        .await
        .expect("the idle client is disconnected")
        .expect("task");
    let e = ended.expect_err("the idle client gets the shutdown message");
    assert_eq!(sqlstate(&e).as_deref(), Some("57P01"), "{e}");

    let log = stderr.await.expect("stderr reader");
    assert!(log.contains("DEBUG"), "debug logging was on:\n{log}");
    assert!(
        !log.contains(PASSWORD),
        "the password appears in pgheal's log:\n{log}"
    );
}

/// Log lines of the relay (here: a heal, on sessions of both event loops) carry the client's
/// address, database and user, in JSON lines too, though the relay runs outside the client span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_log_lines_carry_the_client_fields() {
    let pg = start_pg_with_orders("");
    let port = free_port();
    let mut c = pgheal();
    c.env("PGHEAL_UPSTREAM", direct_url(&pg))
        .env("PGHEAL_LOG_FORMAT", "json")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--threads", "2", "--shutdown-timeout", "1"]);
    let (mut child, stderr) = spawn_logging(c);
    let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}");
    assert!(
        eventually(Duration::from_secs(20), || async {
            try_connect(&url).await.is_ok()
        })
        .await,
        "pgheal did not start accepting on port {port}"
    );
    // Two clients at once: one session on each event loop.
    let (a, b) = (connect(&url).await, connect(&url).await);
    let sql = "SELECT * FROM orders WHERE id = $1";
    let (sa, sb) = (a.prepare(sql).await.unwrap(), b.prepare(sql).await.unwrap());
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN region text DEFAULT 'eu'",
    );
    for (client, stmt) in [(&a, &sa), (&b, &sb)] {
        let row = client.query_one(stmt, &[&1i32]).await.expect("healed");
        assert_eq!(row.len(), 3);
    }
    drop((a, b));
    let pid = child.id().expect("pgheal pid").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("pgheal exits after SIGTERM")
        .expect("wait");
    let log = stderr.await.expect("stderr reader");
    let heals: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains("healed a stale prepared statement"))
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    assert_eq!(heals.len(), 2, "one heal per client:\n{log}");
    let mut peers = std::collections::HashSet::new();
    for h in &heals {
        let span = &h["span"];
        assert_eq!(span["name"], "client", "{h}");
        assert_eq!(span["db"], DB, "{h}");
        assert_eq!(span["user"], USER, "{h}");
        peers.insert(span["peer"].as_str().expect("peer").to_owned());
    }
    assert_eq!(peers.len(), 2, "each line names its own client: {heals:?}");
}
