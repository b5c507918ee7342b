//! Protocol versions from clients newer than the server: PostgreSQL 18's protocol 3.2 (longer
//! cancel keys), libpq 19's "3.9999" probe and `_pq_.` options. pgheal accepts any 3.x startup,
//! answers a newer minor version or unknown options with NegotiateProtocolVersion (once, before
//! authentication, as PostgreSQL does), gives 3.2 clients 32-byte cancel keys and 3.0 clients
//! 4-byte ones, and still speaks 3.0 to its PostgreSQL 15 server. Raw startup packets check the
//! bytes; libpq 18 (bundled in psycopg's binary wheel) checks a real client's negotiation and
//! cancel.

use crate::common;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use common::{start_pg, start_proxy, DB, USER};
use pgheal::protocol::backend;
use pgheal::protocol::{encode, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw client: the startup packet with any version code and parameters, then frames.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn start(port: u16, version: i32, params: &[(&str, &str)]) -> Raw {
        let mut body = BytesMut::new();
        body.put_i32(version);
        for (k, v) in params {
            body.put_slice(k.as_bytes());
            body.put_u8(0);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut packet = BytesMut::new();
        packet.put_i32(body.len() as i32 + 4);
        packet.put_slice(&body);
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(&packet).await.unwrap();
        Raw {
            s,
            buf: BytesMut::new(),
        }
    }

    /// The next frame, or None when pgheal closed the connection.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = pgheal::protocol::frame::split_frame(&mut self.buf, 1 << 20).unwrap() {
                return Some(f);
            }
            let n = tokio::time::timeout(Duration::from_secs(20), self.s.read_buf(&mut self.buf))
                .await
                .expect("pgheal answered within 20 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Every frame up to the first ReadyForQuery (or the connection's end).
    async fn until_ready(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = self.frame().await {
            let done = f.tag == backend::READY_FOR_QUERY;
            out.push(f);
            if done {
                break;
            }
        }
        out
    }

    async fn query(&mut self, sql: &str) -> Vec<Frame> {
        self.s
            .write_all(&encode::query(sql.as_bytes()).bytes)
            .await
            .unwrap();
        self.until_ready().await
    }
}

fn body(f: &Frame) -> &[u8] {
    &f.bytes[5..]
}

/// NegotiateProtocolVersion's fields: the version code and the options named.
fn negotiation(f: &Frame) -> (i32, Vec<String>) {
    let b = body(f);
    let version = i32::from_be_bytes(b[0..4].try_into().unwrap());
    let n = i32::from_be_bytes(b[4..8].try_into().unwrap());
    let names: Vec<String> = b[8..]
        .split(|&c| c == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert_eq!(names.len(), n as usize, "the count matches the names");
    (version, names)
}

/// BackendKeyData's process id and key.
fn key_data(frames: &[Frame]) -> (i32, Vec<u8>) {
    let k = frames
        .iter()
        .find(|f| f.tag == b'K')
        .expect("a BackendKeyData");
    let b = body(k);
    (
        i32::from_be_bytes(b[0..4].try_into().unwrap()),
        b[4..].to_vec(),
    )
}

fn tags(frames: &[Frame]) -> String {
    frames.iter().map(|f| f.tag as char).collect()
}

async fn send_cancel(port: u16, pid: i32, key: &[u8]) {
    let mut packet = BytesMut::new();
    packet.put_i32(12 + key.len() as i32);
    packet.put_i32(80_877_102);
    packet.put_i32(pid);
    packet.put_slice(key);
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&packet).await.unwrap();
    // pgheal closes the cancel connection once it has forwarded (or dropped) the request.
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
}

const V3_0: i32 = 3 << 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startups_of_every_3x_version_are_negotiated_as_postgresql_does() {
    let pg = start_pg();
    let p = start_proxy(&pg, |a| a.auth_type = Some("trust".into())).await;
    let port = p.addr.port();
    let login = [("user", USER), ("database", DB)];

    // 3.2: nothing to negotiate; a 32-byte cancel key.
    let mut c = Raw::start(port, V3_0 | 2, &login).await;
    let hello = c.until_ready().await;
    assert!(!tags(&hello).contains('v'), "{}", tags(&hello));
    assert_eq!(key_data(&hello).1.len(), 32, "3.2 clients get long keys");
    let rows = c.query("SELECT 40 + 2").await;
    assert!(rows.iter().any(|f| f.tag == b'D'), "{}", tags(&rows));

    // 3.9999 (libpq 19's probe) with an option: one NegotiateProtocolVersion, first, naming
    // 3.2 and the option; then the login goes on in 3.2.
    let mut c = Raw::start(
        port,
        V3_0 | 9999,
        &[("user", USER), ("_pq_.test_option", "on"), ("database", DB)],
    )
    .await;
    let hello = c.until_ready().await;
    assert_eq!(
        hello[0].tag,
        b'v',
        "negotiation comes first: {}",
        tags(&hello)
    );
    assert_eq!(
        hello.iter().filter(|f| f.tag == b'v').count(),
        1,
        "exactly once"
    );
    assert_eq!(
        negotiation(&hello[0]),
        (V3_0 | 2, vec!["_pq_.test_option".to_owned()])
    );
    assert_eq!(key_data(&hello).1.len(), 32);
    let rows = c.query("SHOW application_name").await;
    assert!(rows.iter().any(|f| f.tag == b'D'), "{}", tags(&rows));

    // 3.0 with an option: negotiated down to 3.0 naming it; a 4-byte key.
    let mut c = Raw::start(port, V3_0, &[("user", USER), ("_pq_.x", "1")]).await;
    let hello = c.until_ready().await;
    assert_eq!(negotiation(&hello[0]), (V3_0, vec!["_pq_.x".to_owned()]));
    // (database defaults to the user name, which does not exist here: the error is fine; the
    // negotiation came before it.)

    // 3.0 and 3.1 without options: nothing to negotiate, 4-byte keys.
    for minor in [0, 1] {
        let mut c = Raw::start(port, V3_0 | minor, &login).await;
        let hello = c.until_ready().await;
        assert!(!tags(&hello).contains('v'), "3.{minor}: {}", tags(&hello));
        assert_eq!(key_data(&hello).1.len(), 4, "3.{minor}");
    }

    // Another major version: PostgreSQL's refusal, with the range pgheal speaks.
    let mut c = Raw::start(port, 4 << 16, &login).await;
    let out = c.until_ready().await;
    let text = String::from_utf8_lossy(&out[0].bytes).into_owned();
    assert_eq!(out[0].tag, b'E', "{}", tags(&out));
    assert!(
        text.contains("unsupported frontend protocol 4.0: server supports 3.0 to 3.2"),
        "{text}"
    );
    // Its raw clients are still connected: stop at once rather than wait for them.
    common::console::stop_now(p).await;
}

/// A 3.2 client's long key cancels its query; a shortened or altered key cancels nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_cancel_keys_cancel_only_with_every_byte() {
    let pg = start_pg();
    let p = start_proxy(&pg, |a| a.auth_type = Some("trust".into())).await;
    let port = p.addr.port();
    let mut c = Raw::start(port, V3_0 | 2, &[("user", USER), ("database", DB)]).await;
    let (pid, key) = key_data(&c.until_ready().await);
    assert_eq!(key.len(), 32);

    // Wrong keys first: the query is not cancelled and finishes by itself.
    c.s.write_all(&encode::query(b"SELECT pg_sleep(1.5)").bytes)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_cancel(port, pid, &key[..4]).await;
    let mut altered = key.clone();
    altered[31] ^= 1;
    send_cancel(port, pid, &altered).await;
    let out = c.until_ready().await;
    assert!(
        !out.iter().any(|f| f.tag == b'E'),
        "a wrong key cancelled the query: {}",
        tags(&out)
    );

    // The whole key cancels.
    c.s.write_all(&encode::query(b"SELECT pg_sleep(30)").bytes)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_cancel(port, pid, &key).await;
    let out = tokio::time::timeout(Duration::from_secs(15), c.until_ready())
        .await
        .expect("the cancelled query ended within 15 s");
    let err = out
        .iter()
        .find(|f| f.tag == b'E')
        .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
        .unwrap_or_else(|| panic!("not cancelled: {}", tags(&out)));
    assert!(err.contains("57014"), "{err}");
    // Its raw clients are still connected: stop at once rather than wait for them.
    common::console::stop_now(p).await;
}

/// libpq 18 (psycopg's binary wheel) with `max_protocol_version=latest`: it negotiates 3.2
/// through pgheal, and its cancel (with the long key) cancels the query with 57014.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libpq_18_speaks_3_2_through_pgheal_and_cancels() {
    const SCRIPT: &str = r#"
import os, sys, threading, time, psycopg
if psycopg.pq.version() < 180000:
    print("libpq", psycopg.pq.version(), "is older than 18")
    sys.exit(3)
with psycopg.connect(os.environ["CONNINFO"]) as c:
    print("protocol", c.pgconn.full_protocol_version)
    def cancel():
        time.sleep(0.5)
        c.cancel_safe()
    threading.Thread(target=cancel).start()
    try:
        c.execute("SELECT pg_sleep(30)")
        print("not cancelled")
    except psycopg.errors.QueryCanceled as e:
        print("cancelled", e.sqlstate)
"#;
    if !common::drivers::python_module_or_skip("psycopg").await {
        return;
    }
    let pg = start_pg();
    let p = start_proxy(&pg, |_| {}).await;
    let conninfo = format!(
        "host=127.0.0.1 port={} user={USER} password={} dbname={DB} max_protocol_version=latest",
        p.addr.port(),
        common::PASSWORD
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .args(["-c", SCRIPT])
            .env("CONNINFO", &conninfo)
            .output(),
    )
    .await
    .expect("the psycopg script ended within 60 s")
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs psycopg with libpq 18 or later: {stdout}"
        );
        eprintln!("skipping: {stdout}");
        return;
    }
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("protocol 30002"), "{stdout}{stderr}");
    assert!(stdout.contains("cancelled 57014"), "{stdout}{stderr}");
    // Its raw clients are still connected: stop at once rather than wait for them.
    common::console::stop_now(p).await;
}
