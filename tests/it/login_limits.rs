//! Limits before a client is logged in: `client_login_timeout` (a silent connection, a client
//! that stops in the middle of authentication) and PostgreSQL's cap on authentication messages,
//! against real PostgreSQL. A client stopped by either frees its `max_client_conn` slot.

use crate::common;

use std::time::Duration;

use common::*;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// pgheal with `client_login_timeout = 1` and room for a single client.
async fn proxy(pg: &pgheal::cluster::TempCluster) -> pgheal::proxy::ProxyHandle {
    let mut file = FileConfig::default();
    file.pgheal.client_login_timeout = Some(1.0);
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        max_client_conn: Some(1),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

fn startup_packet() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for (k, v) in [("user", USER), ("database", DB)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut p = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    p.extend(body);
    p
}

/// Everything the server sends until it closes the connection (bounded).
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("pgheal closes the connection within 10 s")
        .expect("read until the close");
    got
}

/// The first message (tag, body) in `bytes`.
fn first_message(bytes: &[u8]) -> (u8, &[u8]) {
    assert!(bytes.len() >= 5, "a whole message: {bytes:?}");
    let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
    (bytes[0], &bytes[5..1 + len])
}

/// What pgheal sent was PgBouncer's `FATAL 08P01 client_login_timeout`.
fn assert_login_timeout(got: &[u8]) {
    let (tag, body) = first_message(got);
    assert_eq!(tag, b'E', "an ErrorResponse before the close: {got:?}");
    let text = String::from_utf8_lossy(body);
    assert!(
        text.contains("SFATAL")
            && text.contains("C08P01")
            && text.contains("Mclient_login_timeout"),
        "PgBouncer's FATAL 08P01 client_login_timeout: {text}"
    );
}

/// Read one message: (tag, body).
async fn read_message(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .expect("a message within 10 s")
        .expect("read a message header");
    let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.expect("read a message body");
    (head[0], body)
}

/// The login of an ordinary client works (the single `max_client_conn` slot is free).
async fn assert_a_client_logs_in(p: &pgheal::proxy::ProxyHandle) {
    let ok = eventually(Duration::from_secs(5), || async {
        try_connect(&proxy_url(p)).await.is_ok()
    })
    .await;
    assert!(ok, "a well-behaved client logs in afterwards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_client_login_timeout() {
    let pg = start_pg();
    let p = proxy(&pg).await;
    let mut silent = TcpStream::connect(p.addr).await.unwrap();
    assert_login_timeout(&read_to_close(&mut silent).await);
    assert_a_client_logs_in(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stopping_during_authentication_gets_client_login_timeout() {
    let pg = start_pg();
    let p = proxy(&pg).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&startup_packet()).await.unwrap();
    let (tag, _) = read_message(&mut s).await;
    assert_eq!(tag, b'R', "an authentication request");
    // While this client holds the only max_client_conn slot, another one is refused.
    let e = try_connect(&proxy_url(&p)).await.expect_err("no slot left");
    assert_eq!(sqlstate(&e).as_deref(), Some("08P01"), "{e}");
    // ... and it never answers.
    assert_login_timeout(&read_to_close(&mut s).await);
    assert_a_client_logs_in(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authentication_message_over_64_kib_is_refused() {
    let pg = start_pg();
    let p = proxy(&pg).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&startup_packet()).await.unwrap();
    let (tag, _) = read_message(&mut s).await;
    assert_eq!(tag, b'R');
    // A password message announcing 1 MiB: refused from its header, without buffering it.
    let mut m = vec![b'p'];
    m.extend_from_slice(&(1_048_576u32 + 4).to_be_bytes());
    m.extend_from_slice(&[b'x'; 1024]);
    s.write_all(&m).await.unwrap();
    let got = read_to_close(&mut s).await;
    let (tag, body) = first_message(&got);
    assert_eq!(tag, b'E', "an ErrorResponse before the close: {got:?}");
    let text = String::from_utf8_lossy(body);
    assert!(text.contains("C08P01"), "a protocol violation: {text}");
    assert_a_client_logs_in(&p).await;
}
