//! TLS between pgheal and PostgreSQL, against a real server with `ssl = on`, certificates made
//! here with rcgen (no key material in the repository) and a `hostssl`-only pg_hba.conf:
//! pg_stat_ssl shows pgheal's server connections encrypted; a wrong CA, a wrong host name and
//! a server without TLS under `require` each give a clear error, quickly.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::certs::{start_tls_pg, Ca, Dir};
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::config::validate::build;

/// The upstream URL to `host` with TLS parameters.
fn upstream(pg: &TempCluster, host: &str, params: &str) -> String {
    format!(
        "postgres://{USER}:{PASSWORD}@{host}:{}/{DB}{params}",
        pg.port()
    )
}

async fn proxy_for(
    upstream: String,
    tweak: impl FnOnce(&mut RunArgs),
) -> pgheal::proxy::ProxyHandle {
    start_proxy_with_upstream(upstream, tweak).await
}

async fn start_proxy_with_upstream(
    upstream: String,
    tweak: impl FnOnce(&mut RunArgs),
) -> pgheal::proxy::ProxyHandle {
    let mut args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(upstream),
        ..Default::default()
    };
    tweak(&mut args);
    start_proxy_with(FileConfig::default(), &args).await
}

/// Whether the server connection behind `c` is encrypted, and its TLS version.
async fn server_side_tls(c: &tokio_postgres::Client) -> (bool, Option<String>) {
    let r = c
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    (r.get(0), r.get(1))
}

/// The error a client gets from pgheal, within a bound (a hang is a failure).
async fn connect_error(url: &str) -> (String, String) {
    let r = tokio::time::timeout(Duration::from_secs(20), try_connect(url))
        .await
        .expect("pgheal must answer, not hang");
    let Err(e) = r else {
        panic!("the connection must fail")
    };
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got {e}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_use_tls_per_sslmode() {
    let ca = Ca::new("pgheal test CA");
    let other_ca = Ca::new("some other CA");
    let dir = Dir::new("modes");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    let other_ca_file = dir.write("other-ca.pem", &other_ca.cert.pem());
    let pg = start_tls_pg(&ca);
    let q = |p: &Path| p.display().to_string();

    // verify-full against the name on the certificate, from the URL's parameters.
    let proxy = proxy_for(
        upstream(
            &pg,
            "localhost",
            &format!("?sslmode=verify-full&sslrootcert={}", q(&ca_file)),
        ),
        |_| {},
    )
    .await;
    let c = connect(&proxy_url(&proxy)).await;
    let (ssl, version) = server_side_tls(&c).await;
    assert!(ssl, "pg_stat_ssl: the server connection is not encrypted");
    assert!(
        version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
        "{version:?}"
    );
    // Large messages both ways go through the TLS stream whole.
    let big = "x".repeat(3 << 20);
    let r = c
        .query_one("SELECT length($1::text), repeat('y', 2000000)", &[&big])
        .await
        .expect("big round trip");
    assert_eq!(r.get::<_, i32>(0), 3 << 20);
    assert_eq!(r.get::<_, String>(1).len(), 2_000_000);
    drop(c);
    proxy.shutdown().await;

    // The default (prefer, no CA): TLS since the server offers it, no certificate check.
    let proxy = proxy_for(upstream(&pg, "127.0.0.1", ""), |_| {}).await;
    let c = connect(&proxy_url(&proxy)).await;
    assert!(server_side_tls(&c).await.0);
    drop(c);
    proxy.shutdown().await;

    // verify-ca: the chain is checked, the name (127.0.0.1 is not on the certificate) is not.
    let proxy = proxy_for(upstream(&pg, "127.0.0.1", ""), |a| {
        a.server_tls_sslmode = Some("verify-ca".into());
        a.server_tls_ca_file = Some(q(&ca_file));
    })
    .await;
    let c = connect(&proxy_url(&proxy)).await;
    assert!(server_side_tls(&c).await.0);
    drop(c);
    proxy.shutdown().await;

    // verify-full with a host name not on the certificate: a clear error, no hang.
    let proxy = proxy_for(upstream(&pg, "127.0.0.1", ""), |a| {
        a.server_tls_sslmode = Some("verify-full".into());
        a.server_tls_ca_file = Some(q(&ca_file));
    })
    .await;
    let (code, msg) = connect_error(&proxy_url(&proxy)).await;
    assert_eq!(code, "08001", "{msg}");
    assert!(
        msg.contains("TLS handshake with the server failed"),
        "{msg}"
    );
    assert!(msg.contains("not valid for name"), "{msg}");
    proxy.shutdown().await;

    // A CA that did not sign the server's certificate (require + a root cert checks the
    // chain, libpq's rule).
    let proxy = proxy_for(
        upstream(
            &pg,
            "localhost",
            &format!("?sslmode=require&sslrootcert={}", q(&other_ca_file)),
        ),
        |_| {},
    )
    .await;
    let (code, msg) = connect_error(&proxy_url(&proxy)).await;
    assert_eq!(code, "08001", "{msg}");
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    proxy.shutdown().await;

    // sslmode=disable: the hostssl-only server refuses the plain-text login; the client is
    // told pgheal could not log in, with PostgreSQL's reason.
    let proxy = proxy_for(upstream(&pg, "127.0.0.1", "?sslmode=disable"), |_| {}).await;
    let (code, msg) = connect_error(&proxy_url(&proxy)).await;
    assert_eq!(code, "08001", "{msg}");
    assert!(
        msg.starts_with("pgheal could not log in to the server: "),
        "{msg}"
    );
    assert!(msg.contains("no encryption"), "{msg}");
    proxy.shutdown().await;
}

/// A pooled TLS connection keeps working when a session on another event loop takes it
/// over (its socket moves loops with the TLS session intact), in both pooling modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_tls_connections_move_between_event_loops() {
    let ca = Ca::new("pgheal test CA");
    let dir = Dir::new("loops");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    let pg = start_tls_pg(&ca);
    for mode in ["session", "transaction"] {
        let proxy = proxy_for(
            upstream(
                &pg,
                "localhost",
                &format!("?sslmode=verify-full&sslrootcert={}", ca_file.display()),
            ),
            |a| {
                a.threads = Some(2);
                a.pool_size = Some(1);
                a.pool_mode = Some(mode.into());
            },
        )
        .await;
        let a = connect(&proxy_url(&proxy)).await;
        let pid_a = backend_pid(&a).await;
        // b lands on the other loop (fewest sessions) and, in session mode, waits for a's
        // connection.
        let url = proxy_url(&proxy);
        let b = tokio::spawn(async move {
            let b = connect(&url).await;
            let pid = backend_pid(&b).await;
            let (ssl, _) = server_side_tls(&b).await;
            let n: i64 = b
                .query_one("SELECT count(*) FROM generate_series(1, 50000)", &[])
                .await
                .expect("query on the moved connection")
                .get(0);
            (pid, ssl, n)
        });
        if mode == "session" {
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(a);
        } else {
            for _ in 0..20 {
                assert!(server_side_tls(&a).await.0);
            }
        }
        let (pid_b, ssl, n) = tokio::time::timeout(Duration::from_secs(30), b)
            .await
            .expect("b must get the connection")
            .expect("b's task");
        assert_eq!(pid_b, pid_a, "{mode}: one server connection, shared");
        assert!(ssl, "{mode}");
        assert_eq!(n, 50000);
        proxy.shutdown().await;
    }
}

/// `require` against a server without TLS: refused with a clear error, not sent in plain
/// text; `prefer` (the default) falls back to plain text there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_a_server_without_tls() {
    let pg = start_pg();
    let proxy = proxy_for(upstream(&pg, "127.0.0.1", "?sslmode=require"), |_| {}).await;
    let (code, msg) = connect_error(&proxy_url(&proxy)).await;
    assert_eq!(code, "08001", "{msg}");
    assert!(
        msg.contains("the server does not support TLS, but sslmode is require"),
        "{msg}"
    );
    proxy.shutdown().await;

    let proxy = proxy_for(upstream(&pg, "127.0.0.1", ""), |_| {}).await;
    let c = connect(&proxy_url(&proxy)).await;
    assert!(!server_side_tls(&c).await.0);
    proxy.shutdown().await;
}

/// Configuration errors at startup: unknown URL parameters, a verify mode without a root
/// certificate, unreadable files. None shows the password.
#[test]
fn tls_configuration_errors_name_the_key() {
    let run = |upstream: &str, tweak: &dyn Fn(&mut RunArgs)| {
        let mut args = RunArgs {
            upstream: Some(upstream.into()),
            ..Default::default()
        };
        tweak(&mut args);
        build(FileConfig::default(), &args)
    };
    let url = "postgres://app:t0psecret@db.example.com/appdb";
    let e = run(&format!("{url}?sslmode=require&connect_timeout=5"), &|_| {}).unwrap_err();
    assert_eq!(e.key, "upstream");
    assert!(e.reason.contains("`connect_timeout`"), "{e}");
    let e = run(&format!("{url}?sslmode=verify-full"), &|_| {}).unwrap_err();
    assert_eq!(e.key, "upstream");
    assert!(e.reason.contains("root certificate"), "{e}");
    let e = run(url, &|a| a.server_tls_sslmode = Some("verify-ca".into())).unwrap_err();
    assert_eq!(e.key, "server_tls_sslmode");
    let e = run(url, &|a| {
        a.server_tls_sslmode = Some("verify-ca".into());
        a.server_tls_ca_file = Some("/nonexistent/ca.pem".into());
    })
    .unwrap_err();
    assert!(e.reason.contains("/nonexistent/ca.pem"), "{e}");
    let e = run(url, &|a| a.server_tls_protocols = Some("tlsv1.1".into())).unwrap_err();
    assert_eq!(e.key, "server_tls_protocols");
    let e = run(url, &|a| a.server_tls_sslmode = Some("on".into())).unwrap_err();
    assert_eq!(e.key, "server_tls_sslmode");
    let cfg = run(&format!("{url}?sslmode=disable"), &|_| {}).expect("valid");
    assert!(!format!("{cfg:?}").contains("t0psecret"));
}
