//! The binary's signals, with PgBouncer 1.23+'s meanings: SIGUSR1 pauses and SIGUSR2 resumes
//! (a query waits in between, then runs); SIGINT waits for server connections to be released
//! (an open transaction commits first) and stops accepting; a second SIGTERM ends every
//! session at once instead of waiting for `shutdown_timeout`.

use crate::common;

use std::time::Duration;

use common::bin::{pgheal_cmd, send_signal};
use common::certs::Dir;
use common::*;

const ADMIN_PW: &str = "admin-pw";

/// Start the binary in transaction pooling with an admin user; (child, port, stderr).
async fn start(
    pg: &pgheal::cluster::TempCluster,
    dir: &Dir,
) -> (tokio::process::Child, u16, tokio::task::JoinHandle<String>) {
    let port = free_port();
    let cfg = dir.write(
        "pgheal.toml",
        &format!(
            "[pgheal]\nlisten = \"127.0.0.1:{port}\"\npool_mode = \"transaction\"\nshutdown_timeout = 60\nadmin_users = [\"admin\"]\n\
             [databases.{DB}]\nurl = \"{}\"\n[users]\n{USER} = \"{PASSWORD}\"\nadmin = \"{ADMIN_PW}\"\n",
            pg.url(USER, PASSWORD, DB)
        ),
    );
    let mut c = pgheal_cmd();
    c.arg(&cfg);
    let (child, log) = spawn_logging(c);
    let url = url(port);
    let up = eventually(Duration::from_secs(20), || async {
        try_connect(&url).await.is_ok()
    })
    .await;
    assert!(up, "pgheal did not start accepting on port {port}");
    (child, port, log)
}

fn url(port: u16) -> String {
    format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}")
}

async fn paused(port: u16) -> String {
    let console = connect(&format!(
        "postgres://admin:{ADMIN_PW}@127.0.0.1:{port}/pgbouncer"
    ))
    .await;
    let rows = console
        .simple_query("SHOW STATE")
        .await
        .expect("SHOW STATE");
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("paused") => {
                r.get(1).map(str::to_owned)
            }
            _ => None,
        })
        .expect("a paused row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usr1_pauses_usr2_resumes_and_int_waits_for_servers() {
    let pg = start_pg();
    let dir = Dir::new("signals-pause");
    let (mut child, port, _log) = start(&pg, &dir).await;
    let pid = child.id().expect("pid");
    let client = connect(&url(port)).await;
    client.simple_query("SELECT 1").await.unwrap();

    send_signal(pid, "USR1");
    assert!(
        eventually(Duration::from_secs(5), || async {
            paused(port).await == "yes"
        })
        .await,
        "SIGUSR1 pauses"
    );
    let waiting =
        tokio::spawn(async move { client.simple_query("SELECT 2").await.map(|_| client) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a query waits while paused");
    send_signal(pid, "USR2");
    let client = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the query runs after SIGUSR2")
        .unwrap()
        .expect("no error");
    assert_eq!(paused(port).await, "no");

    // SIGINT: stop accepting, wait until the open transaction has given its connection back.
    client.batch_execute("BEGIN; SELECT 1").await.unwrap();
    send_signal(pid, "INT");
    let refused = eventually(Duration::from_secs(5), || async {
        try_connect(&url(port)).await.is_err()
    })
    .await;
    assert!(refused, "no new client after SIGINT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "pgheal waits for the open transaction"
    );
    client
        .batch_execute("COMMIT")
        .await
        .expect("the transaction commits");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("pgheal exits once no server connection is in use")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_every_session_at_once() {
    let pg = start_pg();
    let dir = Dir::new("signals-term");
    let (mut child, port, _log) = start(&pg, &dir).await;
    let pid = child.id().expect("pid");
    let (client, conn) = connect_watched(&url(port)).await;
    client.simple_query("SELECT 1").await.unwrap();
    send_signal(pid, "TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first SIGTERM lets the connected client finish (shutdown_timeout is 60 s)"
    );
    client
        .simple_query("SELECT 1")
        .await
        .expect("the session goes on");
    send_signal(pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("a second SIGTERM stops pgheal at once")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the client's connection ended");
    let e = ended
        .expect("the connection task")
        .expect_err("the session was ended by pgheal");
    assert_eq!(sqlstate(&e).as_deref(), Some("57P01"), "{e}");
}
