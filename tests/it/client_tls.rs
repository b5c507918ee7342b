//! TLS between clients and pgheal (`client_tls_*`), with certificates made here by rcgen and a
//! real PostgreSQL behind: psql (libpq) with every sslmode, client certificates under
//! `verify-ca`, a wrong CA, a wrong host name and an expired certificate refused by the
//! client, a plain client refused under `require` with the error text, PostgreSQL 17's direct
//! TLS (ALPN `postgresql`) with a rustls client, GSSENCRequest answered `N`, SCRAM channel
//! binding (`channel_binding=require`), and certificate reload without dropping a session.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::certs::{Ca, Dir};
use common::client_tls::{
    client_config, issue_expired, psql, rewrite, tls_connect, Start, TlsWire,
};
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::config::tls::SslMode;
use pgheal::proxy::ProxyHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The files of one pgheal TLS setup.
struct Files {
    dir: Dir,
    ca: Ca,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// A CA and a pgheal certificate for `localhost` signed by it.
fn files(tag: &str) -> Files {
    let dir = Dir::new(tag);
    let ca = Ca::new(&format!("pgheal client-side CA {tag}"));
    let (cert, key) = ca.issue(&["localhost"]);
    Files {
        ca_file: dir.write("ca.pem", &ca.cert.pem()),
        cert_file: dir.write("pgheal.crt", &cert),
        key_file: dir.write("pgheal.key", &key),
        ca,
        dir,
    }
}

async fn proxy(
    pg: &TempCluster,
    mode: SslMode,
    f: &Files,
    client_ca: Option<&Path>,
) -> ProxyHandle {
    let mut file = FileConfig::default();
    file.pgheal.client_tls_sslmode = Some(mode);
    file.pgheal.client_tls_cert_file = Some(f.cert_file.display().to_string());
    file.pgheal.client_tls_key_file = Some(f.key_file.display().to_string());
    file.pgheal.client_tls_ca_file = client_ca.map(|p| p.display().to_string());
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

fn conninfo(p: &ProxyHandle, host: &str, extra: &str) -> String {
    format!(
        "host={host} port={} user={USER} dbname={DB} {extra}",
        p.addr.port()
    )
}

/// psql, expecting success and returning the query's output.
async fn psql_ok(conninfo: &str, sql: &str) -> String {
    let (ok, out) = psql(conninfo, PASSWORD, sql).await;
    assert!(ok, "psql {conninfo:?} failed: {out}");
    out.trim().to_owned()
}

/// psql, expecting failure and returning its message.
async fn psql_err(conninfo: &str) -> String {
    let (ok, out) = psql(conninfo, PASSWORD, "SELECT 1").await;
    assert!(!ok, "psql {conninfo:?} should have failed: {out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_over_tls_with_every_client_sslmode() {
    let pg = start_pg();
    let f = files("modes");
    let other = Ca::new("some other CA");
    let other_ca = f.dir.write("other-ca.pem", &other.cert.pem());
    let p = proxy(&pg, SslMode::Require, &f, None).await;
    let root = format!("sslrootcert={}", f.ca_file.display());

    // verify-full against the name on pgheal's certificate, with SCRAM channel binding.
    let out = psql_ok(
        &conninfo(
            &p,
            "localhost",
            &format!("sslmode=verify-full {root} channel_binding=require"),
        ),
        "\\conninfo",
    )
    .await;
    assert!(out.contains("SSL connection (protocol: TLSv1.3"), "{out}");
    assert_eq!(
        psql_ok(
            &conninfo(
                &p,
                "localhost",
                &format!("sslmode=verify-full {root} channel_binding=require"),
            ),
            "SELECT current_user || ' ' || 6 * 7",
        )
        .await,
        "app 42"
    );
    // verify-ca checks the chain only (127.0.0.1 is not on the certificate); require checks
    // nothing.
    assert_eq!(
        psql_ok(
            &conninfo(&p, "127.0.0.1", &format!("sslmode=verify-ca {root}")),
            "SELECT 1"
        )
        .await,
        "1"
    );
    assert_eq!(
        psql_ok(&conninfo(&p, "127.0.0.1", "sslmode=require"), "SELECT 2").await,
        "2"
    );

    // The client refuses a wrong host name and a wrong CA, with libpq's own messages.
    let e = psql_err(&conninfo(
        &p,
        "127.0.0.1",
        &format!("sslmode=verify-full {root}"),
    ))
    .await;
    assert!(
        e.contains("does not match host name \"127.0.0.1\""),
        "wrong host name: {e}"
    );
    let e = psql_err(&conninfo(
        &p,
        "localhost",
        &format!("sslmode=verify-full sslrootcert={}", other_ca.display()),
    ))
    .await;
    assert!(e.contains("certificate verify failed"), "wrong CA: {e}");

    // A plain client under require: PostgreSQL's wording, 28000.
    let e = psql_err(&conninfo(&p, "127.0.0.1", "sslmode=disable")).await;
    assert!(
        e.contains(&format!("pgheal requires TLS (client_tls_sslmode): connection refused for host \"127.0.0.1\", user \"{USER}\", database \"{DB}\", no encryption")),
        "{e}"
    );
    let Err(err) = tokio::time::timeout(Duration::from_secs(20), try_connect(&proxy_url(&p)))
        .await
        .expect("pgheal answers")
    else {
        panic!("a plain client is refused")
    };
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");

    // GSSENCRequest still gets N, then an SSLRequest on the same connection gets S.
    let mut tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut answer))
        .await
        .expect("GSSENCRequest answered")
        .unwrap();
    assert_eq!(answer[0], b'N');
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut answer))
        .await
        .expect("SSLRequest answered")
        .unwrap();
    assert_eq!(answer[0], b'S');

    // Bytes sent in plain text right behind the SSLRequest are refused (CVE-2021-23222).
    let mut tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let mut both = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    both.extend_from_slice(&encode_startup());
    tcp.write_all(&both).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .expect("pgheal closes")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&got).contains("received unencrypted data after SSL request"),
        "{got:?}"
    );
    p.shutdown().await;
}

fn encode_startup() -> Vec<u8> {
    pgheal::protocol::encode::startup_message(&[("user", USER), ("database", DB)]).to_vec()
}

/// `allow`/`prefer` take TLS when the client asks and plain text otherwise; `disable`
/// answers SSLRequest with N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_accepts_both_and_disable_refuses_tls() {
    let pg = start_pg();
    let f = files("prefer");
    let p = proxy(&pg, SslMode::Prefer, &f, None).await;
    let out = psql_ok(&conninfo(&p, "127.0.0.1", "sslmode=require"), "\\conninfo").await;
    assert!(out.contains("SSL connection"), "{out}");
    let c = connect(&proxy_url(&p)).await;
    let r = c.query_one("SELECT 5", &[]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), 5);
    drop(c);
    p.shutdown().await;

    let p = proxy(&pg, SslMode::Disable, &f, None).await;
    let e = psql_err(&conninfo(&p, "127.0.0.1", "sslmode=require")).await;
    assert!(e.contains("server does not support SSL"), "{e}");
    p.shutdown().await;
}

/// verify-ca: a client certificate from the configured CA is accepted; none, or one from
/// another CA, fails the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_under_verify_ca() {
    let pg = start_pg();
    let f = files("clientcert");
    let clients = Ca::new("client CA");
    let client_ca = f.dir.write("client-ca.pem", &clients.cert.pem());
    let (cert, key) = clients.issue(&["app"]);
    let cert = f.dir.write("app.crt", &cert);
    let key = f.dir.write("app.key", &key);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let stranger = Ca::new("stranger CA");
    let (scert, skey) = stranger.issue(&["app"]);
    let scert = f.dir.write("stranger.crt", &scert);
    let skey = f.dir.write("stranger.key", &skey);
    std::fs::set_permissions(&skey, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let p = proxy(&pg, SslMode::VerifyCa, &f, Some(&client_ca)).await;
    let root = format!("sslrootcert={}", f.ca_file.display());
    let with = |c: &Path, k: &Path| {
        conninfo(
            &p,
            "localhost",
            &format!(
                "sslmode=verify-full {root} sslcert={} sslkey={}",
                c.display(),
                k.display()
            ),
        )
    };
    assert_eq!(psql_ok(&with(&cert, &key), "SELECT 3").await, "3");
    let e = psql_err(&with(&scert, &skey)).await;
    assert!(
        e.contains("SSL") || e.contains("certificate") || e.contains("closed"),
        "{e}"
    );
    let none = f.dir.0.join("absent.crt");
    let e = psql_err(&with(&none, &none)).await;
    assert!(
        e.contains("SSL") || e.contains("certificate") || e.contains("closed"),
        "{e}"
    );
    // A plain client too.
    let e = psql_err(&conninfo(&p, "127.0.0.1", "sslmode=disable")).await;
    assert!(e.contains("no encryption"), "{e}");
    p.shutdown().await;
}

/// An expired pgheal certificate is refused by a verifying client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_is_refused_by_the_client() {
    let pg = start_pg();
    let f = files("expired");
    let (cert, key) = issue_expired(&f.ca, &["localhost"]);
    rewrite(&f.cert_file, &cert);
    rewrite(&f.key_file, &key);
    let p = proxy(&pg, SslMode::Require, &f, None).await;
    let e = psql_err(&conninfo(
        &p,
        "localhost",
        &format!("sslmode=verify-full sslrootcert={}", f.ca_file.display()),
    ))
    .await;
    // libpq 15 reports OpenSSL's verdict without its reason.
    assert!(e.contains("certificate verify failed"), "{e}");
    // A rustls client names the reason.
    let Err(e) = tls_connect(
        p.addr.port(),
        client_config(&f.ca.cert.pem(), &[]),
        Start::SslRequest,
    )
    .await
    else {
        panic!("an expired certificate must be refused")
    };
    assert!(e.to_string().contains("certificate expired"), "{e}");
    p.shutdown().await;
}

/// PostgreSQL 17's direct TLS: a ClientHello first, with ALPN `postgresql`; SCRAM-SHA-256-PLUS
/// is offered first and channel binding works; without ALPN the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_alpn_and_channel_binding_works() {
    let pg = start_pg();
    let f = files("direct");
    let p = proxy(&pg, SslMode::Require, &f, None).await;
    let ca = f.ca.cert.pem();
    let port = p.addr.port();

    let s = tls_connect(port, client_config(&ca, &[b"postgresql"]), Start::Direct)
        .await
        .expect("direct TLS handshake");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let mut w = TlsWire::login(s, USER, PASSWORD, DB, true)
        .await
        .expect("login with SCRAM-SHA-256-PLUS");
    assert_eq!(w.mechanisms, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
    assert_eq!(w.value("SELECT 'direct'").await.unwrap(), "direct");
    // Messages larger than TLS records, both ways.
    let big = "y".repeat(3 << 20);
    assert_eq!(
        w.value(&format!("SELECT length('{big}')")).await.unwrap(),
        (3 << 20).to_string()
    );
    assert_eq!(
        w.value("SELECT repeat('z', 2000000)").await.unwrap().len(),
        2_000_000
    );

    // Plain SCRAM over TLS works too (a client that cannot bind says `n`).
    let s = tls_connect(port, client_config(&ca, &[]), Start::SslRequest)
        .await
        .expect("TLS after SSLRequest");
    let mut w = TlsWire::login(s, USER, PASSWORD, DB, false)
        .await
        .expect("login with SCRAM-SHA-256");
    assert_eq!(w.value("SELECT 7").await.unwrap(), "7");

    // Direct TLS without ALPN: closed, no session.
    let r = match tls_connect(port, client_config(&ca, &[]), Start::Direct).await {
        Err(e) => Err(e.to_string()),
        Ok(s) => TlsWire::login(s, USER, PASSWORD, DB, false)
            .await
            .map(|_| ()),
    };
    assert!(r.is_err(), "direct TLS without ALPN must be refused");
    // An ALPN other than postgresql fails the handshake.
    let r = tls_connect(port, client_config(&ca, &[b"http/1.1"]), Start::Direct).await;
    assert!(r.is_err(), "a foreign ALPN must fail the handshake");
    p.shutdown().await;
}

/// A new certificate written over the files is used for new handshakes within a few seconds;
/// a session established before keeps working; a broken file keeps the previous certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_change_without_dropping_sessions() {
    let pg = start_pg();
    let f = files("reload");
    let p = proxy(&pg, SslMode::Require, &f, None).await;
    let port = p.addr.port();
    let old_ca = f.ca.cert.pem();
    let s = tls_connect(port, client_config(&old_ca, &[]), Start::SslRequest)
        .await
        .expect("TLS with the first certificate");
    let mut before = TlsWire::login(s, USER, PASSWORD, DB, true).await.unwrap();
    assert_eq!(before.value("SELECT 1").await.unwrap(), "1");

    // A broken certificate file: logged, the old certificate stays in use.
    rewrite(&f.cert_file, "not a certificate\n");
    tokio::time::sleep(Duration::from_secs(3)).await;
    tls_connect(port, client_config(&old_ca, &[]), Start::SslRequest)
        .await
        .expect("the previous certificate is still served");

    // Renewal by another CA.
    let next = Ca::new("next CA");
    let (cert, key) = next.issue(&["localhost"]);
    rewrite(&f.key_file, &key);
    rewrite(&f.cert_file, &cert);
    let new_ca = next.cert.pem();
    let switched = eventually(Duration::from_secs(20), || {
        let c = client_config(&new_ca, &[]);
        async move { tls_connect(port, c, Start::SslRequest).await.is_ok() }
    })
    .await;
    assert!(switched, "the new certificate was not served within 20 s");
    let s = tls_connect(port, client_config(&new_ca, &[]), Start::SslRequest)
        .await
        .unwrap();
    let mut after = TlsWire::login(s, USER, PASSWORD, DB, true)
        .await
        .expect("channel binding with the new certificate");
    assert_eq!(after.value("SELECT 2").await.unwrap(), "2");
    assert!(
        tls_connect(port, client_config(&old_ca, &[]), Start::SslRequest)
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    // The session from before the reload is untouched.
    assert_eq!(
        before.value("SELECT 'still here'").await.unwrap(),
        "still here"
    );
    p.shutdown().await;
}

/// SIGHUP-style reload (the handle's `reload_tls`) picks up new files too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_on_request() {
    let pg = start_pg();
    let f = files("hup");
    let p = proxy(&pg, SslMode::Require, &f, None).await;
    let port = p.addr.port();
    let next = Ca::new("hup CA");
    let (cert, key) = next.issue(&["localhost"]);
    rewrite(&f.key_file, &key);
    rewrite(&f.cert_file, &cert);
    p.reload_tls();
    tls_connect(
        port,
        client_config(&next.cert.pem(), &[]),
        Start::SslRequest,
    )
    .await
    .expect("the new certificate right after reload_tls");
    p.shutdown().await;
}

/// The `server_tls_*` files reload too: a root certificate file fixed after the start is used
/// by the next server connection (on request, as SIGHUP does, and on file change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_root_certificate_reloads() {
    let ca = Ca::new("server CA");
    let wrong = Ca::new("wrong CA");
    let dir = Dir::new("server-reload");
    let ca_file = dir.write("ca.pem", &wrong.cert.pem());
    let pg = common::certs::start_tls_pg(&ca);
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        server_tls_sslmode: Some("verify-ca".into()),
        server_tls_ca_file: Some(ca_file.display().to_string()),
        ..Default::default()
    };
    let p = start_proxy_with(FileConfig::default(), &args).await;
    let Err(e) = tokio::time::timeout(Duration::from_secs(20), try_connect(&proxy_url(&p)))
        .await
        .expect("pgheal answers")
    else {
        panic!("the wrong CA must fail the server connection")
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("08001"), "{e}");

    rewrite(&ca_file, &ca.cert.pem());
    p.reload_tls();
    let c = tokio::time::timeout(Duration::from_secs(20), try_connect(&proxy_url(&p)))
        .await
        .expect("pgheal answers")
        .expect("the reloaded root certificate is used");
    let r = c.query_one("SELECT 11", &[]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), 11);
    drop(c);
    p.shutdown().await;

    // On file change, without being asked.
    let ca_file2 = dir.write("ca2.pem", &wrong.cert.pem());
    let args = RunArgs {
        server_tls_ca_file: Some(ca_file2.display().to_string()),
        ..args
    };
    let p = start_proxy_with(FileConfig::default(), &args).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    rewrite(&ca_file2, &ca.cert.pem());
    let url = proxy_url(&p);
    let ok = eventually(Duration::from_secs(20), || {
        let url = url.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), try_connect(&url))
                .await
                .is_ok_and(|r| r.is_ok())
        }
    })
    .await;
    assert!(ok, "the changed root certificate file was not picked up");
    p.shutdown().await;
}

/// psycopg 3 (its binary wheel bundles a recent libpq, which speaks PostgreSQL 17's direct TLS):
/// `sslmode=verify-full channel_binding=require`, with SSLRequest and with
/// `sslnegotiation=direct`. Skipped when psycopg is missing, except under CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_with_verify_full_channel_binding_and_direct_tls() {
    if !common::drivers::python_module_or_skip("psycopg").await {
        return;
    }
    let pg = start_pg();
    let f = files("psycopg");
    let p = proxy(&pg, SslMode::Require, &f, None).await;
    const SCRIPT: &str = r#"
import os, psycopg
with psycopg.connect(os.environ["CONNINFO"]) as c:
    v = c.execute("SELECT %s::int + 1", (41,)).fetchone()[0]
    print("ok", v, c.pgconn.ssl_in_use, psycopg.pq.version() >= 170000)
"#;
    let run = |negotiation: &'static str| {
        let conninfo = format!(
            "host=localhost port={} user={USER} password={PASSWORD} dbname={DB} sslmode=verify-full sslrootcert={} channel_binding=require {negotiation}",
            p.addr.port(),
            f.ca_file.display()
        );
        async move {
            let mut cmd = tokio::process::Command::new("python3");
            cmd.args(["-c", SCRIPT])
                .env("CONNINFO", conninfo)
                .kill_on_drop(true);
            let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
                .await
                .expect("python finished within 30 s")
                .expect("run python3");
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }
    };
    let out = run("").await;
    assert!(out.starts_with("ok 42 True"), "{out}");
    if out.trim_end().ends_with("True") {
        // libpq 17 or later: direct TLS.
        let out = run("sslnegotiation=direct").await;
        assert!(out.starts_with("ok 42 True"), "direct TLS: {out}");
    }
    p.shutdown().await;
}
