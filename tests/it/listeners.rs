//! Listening as PgBouncer does: several addresses at once (IPv4 and IPv6 loopback here), and
//! `so_reuseport`, which lets a second pgheal listen on the same port so a new version takes
//! new clients while the old one, sent SIGTERM, lets its sessions finish — PgBouncer 1.23's
//! rolling restart.

use crate::common;

use std::time::Duration;

use common::bin::{pgheal_cmd, send_signal};
use common::certs::Dir;
use common::*;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listens_on_every_address_given() {
    let pg = start_pg();
    let port = free_port();
    let args = RunArgs {
        listen: Some(format!("127.0.0.1:{port}, [::1]:{port}")),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        ..Default::default()
    };
    let p = start_proxy_with(FileConfig::default(), &args).await;
    assert_eq!(p.addrs.len(), 2, "{:?}", p.addrs);
    for host in ["127.0.0.1", "[::1]"] {
        let c = connect(&format!("postgres://{USER}:{PASSWORD}@{host}:{port}/{DB}")).await;
        let r = c.query_one("SELECT 40 + 2", &[]).await.expect("a query");
        assert_eq!(r.get::<_, i32>(0), 42, "through {host}");
    }
    p.shutdown().await;
}

/// Start the binary on `port` with `so_reuseport`; (child, stderr).
fn start_binary(
    pg: &pgheal::cluster::TempCluster,
    dir: &Dir,
    name: &str,
    port: u16,
    reuseport: bool,
) -> (tokio::process::Child, tokio::task::JoinHandle<String>) {
    let cfg = dir.write(
        &format!("{name}.toml"),
        &format!(
            "[pgheal]\nlisten = \"127.0.0.1:{port}\"\nso_reuseport = {reuseport}\nshutdown_timeout = 60\n\
             [databases.{DB}]\nurl = \"{}\"\n[users]\n{USER} = \"{PASSWORD}\"\n",
            pg.url(USER, PASSWORD, DB)
        ),
    );
    let mut c = pgheal_cmd();
    c.arg(&cfg);
    spawn_logging(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn so_reuseport_lets_a_new_process_take_over_while_the_old_one_drains() {
    let pg = start_pg();
    let dir = Dir::new("reuseport");
    let port = free_port();
    let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}");
    let (mut old, _old_log) = start_binary(&pg, &dir, "old", port, true);
    assert!(
        eventually(Duration::from_secs(20), || async {
            try_connect(&url).await.is_ok()
        })
        .await,
        "the old pgheal accepts clients"
    );
    // A session of the old process, in a transaction when the restart begins.
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let c = connect(&url).await;
        c.batch_execute("BEGIN").await.unwrap();
        sessions.push(c);
    }

    // Without so_reuseport a second process cannot listen there.
    let (mut refused, refused_log) = start_binary(&pg, &dir, "refused", port, false);
    let status = tokio::time::timeout(Duration::from_secs(20), refused.wait())
        .await
        .expect("a pgheal that cannot listen exits")
        .unwrap();
    assert!(!status.success());
    let log = refused_log.await.unwrap();
    assert!(log.contains("cannot listen on 127.0.0.1"), "{log}");

    let (mut new, _new_log) = start_binary(&pg, &dir, "new", port, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        new.try_wait().unwrap().is_none(),
        "the new pgheal listens beside the old one"
    );
    send_signal(old.id().expect("pid"), "TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every new client is served (by the new process), the old sessions go on.
    for i in 0..20 {
        let c = try_connect(&url)
            .await
            .unwrap_or_else(|e| panic!("client {i} after the restart began: {e}"));
        c.simple_query("SELECT 1").await.expect("a query");
    }
    for c in &sessions {
        c.batch_execute("SELECT 1; COMMIT")
            .await
            .expect("the old sessions finish their work");
    }
    drop(sessions);
    let status = tokio::time::timeout(Duration::from_secs(20), old.wait())
        .await
        .expect("the old pgheal exits once its clients left")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let c = connect(&url).await;
    c.simple_query("SELECT 1")
        .await
        .expect("the new pgheal serves alone");
    drop(c);
    send_signal(new.id().expect("pid"), "QUIT");
    let _ = tokio::time::timeout(Duration::from_secs(20), new.wait()).await;
}
