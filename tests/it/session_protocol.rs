//! The wire protocol at pgheal's front door, spoken by hand over a raw TcpStream: malformed
//! startup packets and messages get `08P01` and a close without disturbing other sessions;
//! SSLRequest and GSSENCRequest get `N` and the session goes on.

use crate::common;

use std::time::Duration;

use common::*;
use pgheal::proxy::ProxyHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROTOCOL_3_0: i32 = 196_608;
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

/// Read one tagged message: `None` on a clean end of stream. Bounded so a hang fails the test.
async fn read_message(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    tokio::time::timeout(Duration::from_secs(15), async {
        let mut header = [0u8; 5];
        match s.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read: {e}"),
        }
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        assert!((4..1 << 24).contains(&len), "bad length {len} from pgheal");
        let mut body = vec![0u8; len as usize - 4];
        s.read_exact(&mut body).await.expect("message body");
        Some((header[0], body))
    })
    .await
    .expect("pgheal answers or closes")
}

/// The fields of an ErrorResponse body: (field type, value).
fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .expect("NUL-terminated field");
        out.push((kind, String::from_utf8_lossy(&tail[..end]).into_owned()));
        rest = &tail[end + 1..];
    }
    out
}

fn field(fields: &[(u8, String)], kind: u8) -> Option<&str> {
    fields
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| v.as_str())
}

/// Expect an ErrorResponse with `code`, then the end of the stream.
async fn expect_error_then_close(s: &mut TcpStream, code: &str, what: &str) {
    let (tag, body) = read_message(s)
        .await
        .unwrap_or_else(|| panic!("{what}: closed without an ErrorResponse"));
    assert_eq!(tag, b'E', "{what}: expected an ErrorResponse");
    let fields = error_fields(&body);
    assert_eq!(field(&fields, b'C'), Some(code), "{what}: {fields:?}");
    assert_eq!(field(&fields, b'S'), Some("FATAL"), "{what}: {fields:?}");
    assert!(field(&fields, b'M').is_some_and(|m| !m.is_empty()));
    assert!(
        read_message(s).await.is_none(),
        "{what}: pgheal must close after the error"
    );
}

fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    p.extend_from_slice(&body);
    p
}

fn query_message(sql: &str) -> Vec<u8> {
    let mut m = vec![b'Q'];
    m.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    m.extend_from_slice(sql.as_bytes());
    m.push(0);
    m
}

async fn raw_connect(p: &ProxyHandle) -> TcpStream {
    TcpStream::connect(p.addr).await.expect("connect to pgheal")
}

/// Log in (trust) and read up to ReadyForQuery; returns the tags seen.
async fn raw_login(s: &mut TcpStream) -> Vec<u8> {
    s.write_all(&startup_packet(&[("user", USER), ("database", DB)]))
        .await
        .expect("send startup");
    let mut tags = Vec::new();
    loop {
        let (tag, body) = read_message(s).await.expect("login messages");
        tags.push(tag);
        match tag {
            b'R' => assert_eq!(&body[..4], &0i32.to_be_bytes(), "AuthenticationOk"),
            b'E' => panic!("login failed: {:?}", error_fields(&body)),
            b'Z' => return tags,
            _ => {}
        }
    }
}

/// Run a simple query over the raw stream and return the first column of each DataRow.
async fn raw_query(s: &mut TcpStream, sql: &str) -> Vec<String> {
    s.write_all(&query_message(sql)).await.expect("send query");
    let mut values = Vec::new();
    loop {
        let (tag, body) = read_message(s).await.expect("query response");
        match tag {
            b'D' => {
                let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]) as usize;
                values.push(String::from_utf8_lossy(&body[6..6 + len]).into_owned());
            }
            b'E' => panic!("query failed: {:?}", error_fields(&body)),
            b'Z' => return values,
            _ => {}
        }
    }
}

/// What a connection sends back before it closes: every byte, until the end of the stream.
async fn everything_until_close(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(e)) => panic!("{what}: read: {e}"),
        Err(_) => panic!("{what}: the connection was not closed within 15 s"),
    }
    buf
}

/// Bytes that cannot begin a startup packet (a length below 8 or above 10,000, which is what a
/// tagged message such as Terminate sent before the startup packet looks like), or a packet cut
/// short: PostgreSQL logs them and closes without a word (node-postgres, which can send
/// Terminate before its startup packet, treats any answer as a crash). pgheal does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_startup_packets_are_closed_without_an_answer() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Terminate before the startup packet",
            vec![b'X', 0, 0, 0, 4],
        ),
        (
            "a Query before the startup packet",
            query_message("SELECT 1"),
        ),
        ("length 3", 3i32.to_be_bytes().to_vec()),
        ("length 0", 0i32.to_be_bytes().to_vec()),
        ("negative length", (-8i32).to_be_bytes().to_vec()),
        ("length 0x7fffffff", 0x7fff_ffffi32.to_be_bytes().to_vec()),
        ("length 10001", 10_001i32.to_be_bytes().to_vec()),
        ("a packet cut short", {
            let mut p = startup_packet(&[("user", USER), ("database", DB)]);
            p.truncate(12);
            p
        }),
    ];
    for (what, bytes) in cases {
        for (target, addr) in [("PostgreSQL", pg.port()), ("pgheal", proxy.addr.port())] {
            let mut s = TcpStream::connect(("127.0.0.1", addr))
                .await
                .expect("connect");
            s.write_all(&bytes).await.expect("send");
            s.shutdown().await.expect("half-close");
            let answer = everything_until_close(&mut s, what).await;
            assert!(
                answer.is_empty(),
                "{target}, {what}: expected a close without an answer, got {answer:?}"
            );
        }
    }
    // pgheal still serves.
    let c = connect(&proxy_url(&proxy)).await;
    assert_eq!(
        c.query_one("SELECT 3", &[])
            .await
            .expect("query")
            .get::<_, i32>(0),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_packets_get_a_fatal_and_a_close() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let bystander = connect(&proxy_url(&proxy)).await;
    let pid = backend_pid(&bystander).await;

    let mut unknown_protocol = 8i32.to_be_bytes().to_vec();
    unknown_protocol.extend_from_slice(&(1234i32 << 16).to_be_bytes());
    let mut protocol_2 = startup_packet(&[("user", USER)]);
    protocol_2[4..8].copy_from_slice(&(2i32 << 16).to_be_bytes());
    let mut unterminated = startup_packet(&[("user", USER), ("database", DB)]);
    let n = unterminated.len();
    unterminated[n - 1] = b'x'; // no final NUL: the parameter list never ends
                                // The SQLSTATEs PostgreSQL sends for each, and whether PostgreSQL answers in protocol 3
                                // (to a protocol 2 client it answers with a version 2 error, which this reader cannot read).
    let cases: Vec<(&str, Vec<u8>, &str, bool)> = vec![
        ("unknown protocol 1234.0", unknown_protocol, "0A000", true),
        ("protocol 2.0", protocol_2, "0A000", false),
        ("unterminated parameters", unterminated, "08P01", false),
    ];
    for (what, bytes, code, compare) in cases {
        let ports = if compare {
            vec![pg.port(), proxy.addr.port()]
        } else {
            vec![proxy.addr.port()]
        };
        for port in ports {
            let mut s = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            s.write_all(&bytes).await.expect("send");
            expect_error_then_close(&mut s, code, what).await;
        }
    }

    // The other session never noticed.
    assert_eq!(backend_pid(&bystander).await, pid);
    let v: i32 = bystander
        .query_one("SELECT 7", &[])
        .await
        .expect("bystander works")
        .get(0);
    assert_eq!(v, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_message_length_after_login_gets_08p01_and_a_close() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| a.auth_type = Some("trust".into())).await;
    let bystander = connect(&proxy_url(&proxy)).await;
    let pid = backend_pid(&bystander).await;

    for (what, len) in [
        ("huge length", 0x7fff_fff0i32),
        ("length 2", 2),
        ("negative", -1),
    ] {
        let mut s = raw_connect(&proxy).await;
        let tags = raw_login(&mut s).await;
        assert_eq!(tags.first(), Some(&b'R'));
        assert!(tags.contains(&b'K') && tags.contains(&b'S'), "{tags:?}");
        assert_eq!(raw_query(&mut s, "SELECT 'alive'").await, vec!["alive"]);
        let mut bad = vec![b'Q'];
        bad.extend_from_slice(&len.to_be_bytes());
        bad.extend_from_slice(b"SELECT 1");
        s.write_all(&bad).await.expect("send bad message");
        expect_error_then_close(&mut s, "08P01", what).await;
    }

    // Other sessions are unaffected, and new ones work.
    assert_eq!(backend_pid(&bystander).await, pid);
    let fresh = connect(&proxy_url(&proxy)).await;
    let v: String = fresh
        .query_one("SELECT 'fresh'::text", &[])
        .await
        .expect("new session")
        .get(0);
    assert_eq!(v, "fresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gssenc_requests_are_declined_and_the_session_goes_on() {
    let pg = start_pg();
    let scram = start_proxy(&pg, |_| {}).await;
    let trust = start_proxy(&pg, |a| a.auth_type = Some("trust".into())).await;

    // SSLRequest → 'N', then a StartupMessage → AuthenticationSASL offering SCRAM-SHA-256.
    let mut s = raw_connect(&scram).await;
    let mut req = 8i32.to_be_bytes().to_vec();
    req.extend_from_slice(&SSL_REQUEST.to_be_bytes());
    s.write_all(&req).await.expect("send SSLRequest");
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer)
        .await
        .expect("answer to SSLRequest");
    assert_eq!(&answer, b"N");
    s.write_all(&startup_packet(&[("user", USER), ("database", DB)]))
        .await
        .expect("send startup");
    let (tag, body) = read_message(&mut s).await.expect("authentication request");
    assert_eq!(tag, b'R');
    assert_eq!(&body[..4], &10i32.to_be_bytes(), "AuthenticationSASL");
    assert!(
        body.windows(b"SCRAM-SHA-256\0".len())
            .any(|w| w == b"SCRAM-SHA-256\0"),
        "mechanisms: {body:?}"
    );

    // GSSENCRequest then SSLRequest, both declined, then a full session (trust).
    let mut s = raw_connect(&trust).await;
    for code in [GSSENC_REQUEST, SSL_REQUEST] {
        let mut req = 8i32.to_be_bytes().to_vec();
        req.extend_from_slice(&code.to_be_bytes());
        s.write_all(&req).await.expect("send request");
        let mut answer = [0u8; 1];
        s.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"N");
    }
    raw_login(&mut s).await;
    assert_eq!(
        raw_query(
            &mut s,
            "SELECT current_user::text || '@' || current_database()"
        )
        .await,
        vec!["app@appdb"]
    );
    // Terminate: pgheal closes the stream.
    s.write_all(&[b'X', 0, 0, 0, 4]).await.expect("terminate");
    assert!(read_message(&mut s).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_result_does_not_poison_the_pool() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| {
        a.auth_type = Some("trust".into());
        a.pool_size = Some(1);
    })
    .await;
    let su = admin_client(&pg).await;

    let mut s = raw_connect(&proxy).await;
    raw_login(&mut s).await;
    let pid: i32 = raw_query(&mut s, "SELECT pg_backend_pid()").await[0]
        .parse()
        .expect("pid");
    // A big result: read the first rows, then drop the socket without a Terminate.
    s.write_all(&query_message(
        "SELECT g, repeat('x', 100) FROM generate_series(1, 5000000) g",
    ))
    .await
    .expect("send query");
    let mut rows = 0;
    while rows < 10 {
        let (tag, _) = read_message(&mut s).await.expect("rows");
        if tag == b'D' {
            rows += 1;
        }
    }
    drop(s);

    // pgheal reads the rest of the result (bounded: a connection that does not come to rest in
    // time is closed instead) and hands the connection on only once it is at ReadyForQuery and
    // reset: the next client is served, in a clean session, on it or on a new one.
    let c = connect(&proxy_url(&proxy)).await;
    let r = c
        .query_one(
            "SELECT pg_backend_pid(), count(*), current_setting('application_name') \
             FROM generate_series(1, 3)",
            &[],
        )
        .await
        .expect("the next client works");
    assert_eq!(r.get::<_, i64>(1), 3);
    let next_pid: i32 = r.get(0);
    // One server connection at most (pool_size 1): the abandoned one was reused or is gone.
    let gone_or_reused = eventually(Duration::from_secs(20), || async {
        next_pid == pid || !backend_alive(&su, pid).await
    })
    .await;
    assert!(
        gone_or_reused,
        "backend {pid} of the vanished client lingers beside {next_pid}"
    );
    // Nothing runs on it any more.
    let active: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%generate_series(1, 5000000)%' \
             AND state = 'active' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_activity")
        .get(0);
    assert_eq!(active, 0, "the abandoned query still runs");
}
