//! Dead peers are noticed (issue 14, point 6): TCP keepalive and `tcp_user_timeout` on both
//! sides. A server that stops answering mid-query, or a client that vanishes while holding a
//! server connection, is a blackhole route in a network namespace (see
//! `common::netns`): no FIN, no RST, only silence, which only keepalive probes or
//! unacknowledged data reveal.
//!
//! Each test shows the other side keeps working: the waiting client gets an error instead of a
//! hang, and the pool gets its connection back.

use crate::common;

use std::time::Duration;

use common::netns::Netns;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::{FileConfig, General};
use pgheal::proxy::ProxyHandle;

/// Forward every connection accepted in the namespace to PostgreSQL (on the host's loopback).
fn relay_to(pg: &TempCluster, listener: std::net::TcpListener) {
    let pg_port = pg.port();
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", pg_port)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
}

/// pgheal with the given keepalive keys (seconds, seconds, count, milliseconds), `listen` and
/// server at `host:port`, in `mode` with a pool of one.
async fn proxy(
    listen: &str,
    host: std::net::Ipv4Addr,
    port: u16,
    mode: &str,
    keys: (u64, u64, u64, u64),
) -> ProxyHandle {
    let (idle, intvl, cnt, user_timeout) = keys;
    let file = FileConfig {
        pgheal: General {
            tcp_keepalive: Some(true),
            tcp_keepidle: Some(idle),
            tcp_keepintvl: Some(intvl),
            tcp_keepcnt: Some(cnt),
            tcp_user_timeout: Some(user_timeout),
            ..Default::default()
        },
        ..Default::default()
    };
    let args = RunArgs {
        listen: Some(listen.into()),
        upstream: Some(format!("postgres://{USER}:{PASSWORD}@{host}:{port}/{DB}")),
        pool_mode: Some(mode.into()),
        pool_size: Some(1),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

/// The server goes silent while a client waits for its query: the client gets an error within
/// the keepalive (or user timeout) budget, and once the network is back the pool serves again.
async fn server_goes_silent(keys: (u64, u64, u64, u64), what: &str) {
    let pg = start_pg();
    let ns = Netns::create();
    let listener = ns.listen();
    let relay = listener.local_addr().unwrap();
    relay_to(&pg, listener);
    let p = proxy("127.0.0.1:0", ns.ns_ip, relay.port(), "session", keys).await;
    let client = try_connect(&proxy_url(&p))
        .await
        .unwrap_or_else(|e| panic!("{what}: login through pgheal: {e:?}"));
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    let waiting = tokio::spawn(async move {
        let r = client.simple_query("SELECT pg_sleep(120)").await;
        (r, client)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    ns.blackhole_from_host();
    let (result, client) = tokio::time::timeout(Duration::from_secs(40), waiting)
        .await
        .unwrap_or_else(|_| panic!("{what}: the client still waits for a silent server after 40 s"))
        .unwrap();
    let err = result.expect_err("the query on a dead server must fail");
    let code = sqlstate(&err);
    assert!(
        code.as_deref().is_some_and(|c| c.starts_with("08")),
        "{what}: expected a connection error (class 08), got {err:?}"
    );
    drop(client);

    // The network is back: the pool (of one) opens a new connection for the next client.
    ns.heal();
    let next = tokio::time::timeout(Duration::from_secs(20), try_connect(&proxy_url(&p)))
        .await
        .unwrap_or_else(|_| panic!("{what}: a new client waited 20 s after the network came back"))
        .unwrap_or_else(|e| panic!("{what}: a new client after the network came back: {e}"));
    let two: i32 = tokio::time::timeout(Duration::from_secs(20), next.query_one("SELECT 2", &[]))
        .await
        .unwrap_or_else(|_| panic!("{what}: the next query waited 20 s"))
        .unwrap()
        .get(0);
    assert_eq!(two, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_found_by_keepalive() {
    if !Netns::require() {
        return;
    }
    // First probe after 1 s, then every second; dead after 2 unanswered: ~3 s.
    server_goes_silent((1, 1, 2, 0), "keepalive").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_found_by_tcp_user_timeout() {
    if !Netns::require() {
        return;
    }
    // 100 probes would take 100 s, more than the test waits; tcp_user_timeout (2 s) cuts
    // that short.
    server_goes_silent((1, 1, 100, 2000), "tcp_user_timeout").await;
}

/// A client in the namespace logs in (session pooling, a pool of one: it holds the only server
/// connection) and goes silent. Keepalive finds it dead, pgheal ends its session, and a client
/// on the host gets the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_gives_its_server_connection_back() {
    if !Netns::require() {
        return;
    }
    let pg = start_pg();
    let ns = Netns::create();
    let listen = format!("{}:0", ns.host_ip);
    let p = proxy(
        &listen,
        std::net::Ipv4Addr::LOCALHOST,
        pg.port(),
        "session",
        (1, 1, 2, 0),
    )
    .await;

    let stream = ns.connect(p.addr);
    let stream = tokio::net::TcpStream::from_std(stream).unwrap();
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(USER).password(PASSWORD).dbname(DB);
    let (far, conn) = tokio::time::timeout(
        Duration::from_secs(20),
        cfg.connect_raw(stream, tokio_postgres::NoTls),
    )
    .await
    .expect("login from the namespace within 20 s")
    .expect("login from the namespace");
    tokio::spawn(conn);
    let one: i32 = far.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    // Silent once idle: the last answer's acknowledgement (delayed ACK) must get through
    // first, or pgheal's side has unacknowledged data, where TCP's retransmission timeout
    // (minutes; tcp_user_timeout shortens it) governs instead of keepalive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ns.blackhole_from_ns();
    // The far client's session holds the pool's only connection until pgheal finds it dead.
    let near = tokio::time::timeout(Duration::from_secs(40), async {
        let c = try_connect(&format!(
            "postgres://{USER}:{PASSWORD}@{}:{}/{DB}",
            ns.host_ip,
            p.addr.port()
        ))
        .await?;
        let v: i32 = c.query_one("SELECT 2", &[]).await?.get(0);
        Ok::<_, tokio_postgres::Error>(v)
    })
    .await
    .expect("a host client got the pool's connection within 40 s (keepalive found the dead one)")
    .expect("the host client's query");
    assert_eq!(near, 2);
    drop(far);
}
