//! `server_fast_close` (session pooling): after RECONNECT, a session's old server connection
//! is closed at the session's next transaction boundary, and the client with it
//! (`FATAL 08P01 database configuration changed`, PgBouncer's words), instead of living until
//! the session ends. A session inside a transaction finishes it first. Without the setting, a
//! session keeps its connection after RECONNECT.

use crate::common;

use std::time::Duration;

use common::*;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::proxy::ProxyHandle;

const ADMIN_PW: &str = "admin-pw";

async fn proxy(pg: &pgheal::cluster::TempCluster, fast_close: bool) -> ProxyHandle {
    let file: FileConfig = toml::from_str(&format!(
        "[pgheal]\npool_mode = \"session\"\npool_size = 4\nadmin_users = [\"admin\"]\n\
         server_fast_close = {fast_close}\n\
         [users]\n{USER} = \"{PASSWORD}\"\nadmin = \"{ADMIN_PW}\"\n"
    ))
    .expect("test TOML");
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

async fn reconnect(p: &ProxyHandle) {
    let admin = connect(&proxy_url_as(p, "admin", ADMIN_PW, "pgbouncer")).await;
    admin
        .simple_query(&format!("RECONNECT {DB}"))
        .await
        .expect("RECONNECT");
}

/// How a session's connection ended (its task's error), waiting up to 10 s for the close.
async fn ended_with(task: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) -> String {
    let ended = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the session was closed within 10 s of RECONNECT")
        .expect("connection task");
    match ended {
        Err(e) => format!("{} {e:?}", sqlstate(&e).unwrap_or_default()),
        Ok(()) => "closed without an error".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_closes_idle_sessions_and_lets_open_transactions_finish() {
    let pg = start_pg();
    admin(&pg, "CREATE TABLE t(x int); GRANT ALL ON t TO app;");
    let p = proxy(&pg, true).await;
    let su = admin_client(&pg).await;
    let (idle, idle_task) = connect_watched(&proxy_url(&p)).await;
    let idle_pid = backend_pid(&idle).await;
    let (busy, busy_task) = connect_watched(&proxy_url(&p)).await;
    let busy_pid = backend_pid(&busy).await;
    busy.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    reconnect(&p).await;

    // The idle session is closed with PgBouncer's words, its backend gone.
    let how = ended_with(idle_task).await;
    assert!(
        how.starts_with("08P01") && how.contains("database configuration changed"),
        "{how}"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            !backend_alive(&su, idle_pid).await
        })
        .await,
        "the idle session's backend {idle_pid} is gone"
    );

    // The session in a transaction keeps its connection until the transaction ends: its
    // write commits, then it is closed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    busy.batch_execute("INSERT INTO t VALUES (2); COMMIT")
        .await
        .expect("the open transaction finishes on its connection");
    let how = ended_with(busy_task).await;
    assert!(
        how.starts_with("08P01") && how.contains("database configuration changed"),
        "{how}"
    );
    let n: i64 = su
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "both writes of the transaction committed");
    assert!(
        eventually(Duration::from_secs(10), || async {
            !backend_alive(&su, busy_pid).await
        })
        .await,
        "the transaction's backend {busy_pid} is closed after it"
    );

    // New sessions get new connections and work.
    let fresh = connect(&proxy_url(&p)).await;
    assert_ne!(backend_pid(&fresh).await, idle_pid);
    // Every client gone first, so the graceful stop does not wait out shutdown_timeout.
    drop((idle, busy, fresh));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_server_fast_close_a_session_keeps_its_connection() {
    let pg = start_pg();
    let p = proxy(&pg, false).await;
    let c = connect(&proxy_url(&p)).await;
    let pid = backend_pid(&c).await;
    reconnect(&p).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        backend_pid(&c).await,
        pid,
        "same connection after RECONNECT"
    );
    drop(c);
    p.shutdown().await;
}
