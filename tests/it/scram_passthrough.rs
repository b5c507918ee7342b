//! SCRAM pass-through: an auth_file holding only the SCRAM verifier copied from the server's
//! `pg_authid` logs clients in through pgheal, and pgheal into the server with the keys the
//! client's proof revealed, with no plain-text password anywhere in pgheal's configuration.
//! Over TLS, pgheal binds the server login to the channel (SCRAM-SHA-256-PLUS).

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::certs::{start_tls_pg, Ca, Dir};
use common::login::{current_user, login_error};
use common::*;
use pgheal::auth::{md5_password_hash, ScramSecret};
use pgheal::cluster::TempCluster;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use tokio::process::Command;

/// app's verifier, as the server stores it.
fn verifier(pg: &TempCluster, user: &str) -> String {
    let v = admin(
        pg,
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"),
    );
    assert!(v.starts_with("SCRAM-SHA-256$"), "not a SCRAM verifier");
    v
}

/// The upstream URL with the user but no password: pgheal must find the credential elsewhere.
fn passwordless_upstream(pg: &TempCluster) -> String {
    format!("postgres://{USER}@127.0.0.1:{}/{DB}", pg.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifier_from_pg_authid_logs_in_both_pool_modes() {
    let pg = start_pg();
    let dir = Dir::new("passthrough");
    let auth_file = dir.write(
        "userlist.txt",
        &format!("\"{USER}\" \"{}\"\n", verifier(&pg, USER)),
    );
    for mode in ["session", "transaction"] {
        let proxy = start_proxy_with(
            FileConfig::default(),
            &RunArgs {
                listen: Some("127.0.0.1:0".into()),
                upstream: Some(passwordless_upstream(&pg)),
                auth_file: Some(auth_file.display().to_string()),
                pool_mode: Some(mode.into()),
                ..Default::default()
            },
        )
        .await;
        let url = proxy_url(&proxy);
        // Several clients at once: transaction pooling opens connections with the keys kept
        // in the pool, session pooling one per client.
        let clients: Vec<_> = futures_join(3, || current_user(&url)).await;
        for c in clients {
            assert_eq!(c.expect("pass-through login").as_str(), USER, "{mode}");
        }
        assert_eq!(
            login_error(&proxy_url_as(&proxy, USER, "wrong", DB)).await,
            (
                "28P01".to_owned(),
                format!("password authentication failed for user \"{USER}\"")
            ),
            "{mode}"
        );
        assert_eq!(current_user(&url).await.expect("again").as_str(), USER);
    }
}

/// Run `n` copies of `f` concurrently.
async fn futures_join<F, Fut, T>(n: usize, f: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut set = Vec::new();
    for _ in 0..n {
        set.push(f());
    }
    let mut out = Vec::new();
    for fut in set {
        out.push(fut.await);
    }
    out
}

/// A verifier for the right password but another salt checks the client, but cannot log into
/// the server: the client is told why, and nothing secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifier_with_another_salt_gives_a_clear_error() {
    let pg = start_pg();
    let dir = Dir::new("passthrough-salt");
    let other = ScramSecret::from_password(PASSWORD, b"not-the-servers!", 4096);
    let auth_file = dir.write(
        "userlist.txt",
        &format!("\"{USER}\" \"{}\"\n", other.to_verifier_string()),
    );
    let proxy = start_proxy(&pg, |a| {
        a.upstream = Some(passwordless_upstream(&pg));
        a.auth_file = Some(auth_file.display().to_string());
    })
    .await;
    let (code, message) = login_error(&proxy_url(&proxy)).await;
    assert_eq!(code, "08001", "{message}");
    assert!(
        message.contains("salt or iteration count differs"),
        "{message}"
    );
}

/// md5 secrets in the auth_file still log into an md5 server (no SCRAM involved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_secret_still_logs_in() {
    let pg = TempCluster::start_with(pgheal::cluster::ClusterOptions {
        auth_method: pgheal::cluster::AuthMethod::Md5,
        ..Default::default()
    })
    .expect("start md5 cluster");
    pg.create_user(USER, PASSWORD).expect("user");
    pg.create_database(DB, USER).expect("db");
    let dir = Dir::new("passthrough-md5");
    let auth_file = dir.write(
        "userlist.txt",
        &format!("\"{USER}\" \"{}\"\n", md5_password_hash(USER, PASSWORD)),
    );
    let proxy = start_proxy(&pg, |a| {
        a.upstream = Some(passwordless_upstream(&pg));
        a.auth_file = Some(auth_file.display().to_string());
        a.auth_type = Some("md5".into());
    })
    .await;
    assert_eq!(
        current_user(&proxy_url(&proxy))
            .await
            .expect("md5 login")
            .as_str(),
        USER
    );
}

fn pgheal() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgheal"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PGHEAL_") || k == "NOTIFY_SOCKET" {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// The pgheal binary over a TLS-only server, pass-through with channel binding, at the most
/// verbose log level: the server login chose SCRAM-SHA-256-PLUS (PostgreSQL checked the
/// binding, or the login would have failed), and nothing secret reached the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_over_tls_and_no_secret_in_the_log() {
    let ca = Ca::new("pgheal passthrough CA");
    let dir = Dir::new("passthrough-tls");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    let pg = start_tls_pg(&ca);
    // A password that cannot appear in a log by chance.
    const CAROL_PW: &str = "carol-Xq7-zyzzyva";
    pg.create_user("carol", CAROL_PW).expect("user");
    let verifier = verifier(&pg, "carol");
    let auth_file = dir.write("userlist.txt", &format!("\"carol\" \"{verifier}\"\n"));
    let port = free_port();
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\n\
             {DB} = host=localhost port={} dbname={DB}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             auth_type = scram-sha-256\n\
             auth_file = {}\n\
             server_tls_sslmode = verify-full\n\
             server_tls_ca_file = {}\n\
             pool_mode = transaction\n",
            pg.port(),
            auth_file.display(),
            ca_file.display()
        ),
    );
    let mut c = pgheal();
    c.arg("-vv").arg(&ini);
    let (mut child, stderr) = spawn_logging(c);
    let url = format!("postgres://carol:{CAROL_PW}@127.0.0.1:{port}/{DB}");
    let up = eventually(Duration::from_secs(20), || async {
        current_user(&url).await.is_ok()
    })
    .await;
    assert!(up, "pass-through login over TLS did not work");
    let c = connect(&url).await;
    let r = c
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    assert!(r.get::<_, bool>(0), "the server connection must be TLS");
    let wrong = format!("postgres://carol:not-{CAROL_PW}@127.0.0.1:{port}/{DB}");
    assert!(current_user(&wrong).await.is_err());
    drop(c);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().expect("pid").to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("pgheal exits");
    let log = stderr.await.expect("stderr");
    assert!(
        log.contains("mechanism=\"SCRAM-SHA-256-PLUS\"")
            || log.contains("mechanism=SCRAM-SHA-256-PLUS"),
        "the server login must bind to the channel; log:\n{log}"
    );
    let secrets = verifier
        .split(['$', ':'])
        .skip(1)
        .filter(|p| p.len() >= 8)
        .map(str::to_owned)
        .chain(["zyzzyva".to_owned()]);
    // No SCRAM message either (client-first `n=,r=`, client-final `c=…,r=…,p=…`).
    assert!(
        !log.contains("n=,r=") && !log.contains(",p="),
        "the log shows SCRAM messages"
    );
    for s in secrets {
        assert!(!log.contains(&s), "the log shows a secret:\n{log}");
    }
}

/// The upstream URL's `channel_binding=require`: a TLS server offering SCRAM-SHA-256-PLUS logs
/// in (with a password, and by pass-through); a server without TLS is refused with the reason,
/// before any password is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_require_in_the_upstream_url() {
    let ca = Ca::new("pgheal channel binding CA");
    let dir = Dir::new("passthrough-cb");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    let pg = start_tls_pg(&ca);
    let tls = format!(
        "?sslmode=verify-full&sslrootcert={}&channel_binding=require",
        ca_file.display()
    );
    let with_password = format!(
        "postgres://{USER}:{PASSWORD}@localhost:{}/{DB}{tls}",
        pg.port()
    );
    let proxy = start_proxy(&pg, |a| a.upstream = Some(with_password)).await;
    assert_eq!(
        current_user(&proxy_url(&proxy))
            .await
            .expect("password login with channel binding"),
        USER
    );

    let auth_file = dir.write(
        "userlist.txt",
        &format!("\"{USER}\" \"{}\"\n", verifier(&pg, USER)),
    );
    let passthrough = format!("postgres://{USER}@localhost:{}/{DB}{tls}", pg.port());
    let proxy = start_proxy(&pg, |a| {
        a.upstream = Some(passthrough);
        a.auth_file = Some(auth_file.display().to_string());
    })
    .await;
    assert_eq!(
        current_user(&proxy_url(&proxy))
            .await
            .expect("pass-through with channel binding"),
        USER
    );

    let plain = start_pg();
    let url = format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DB}?sslmode=disable&channel_binding=require",
        plain.port()
    );
    let proxy = start_proxy(&plain, |a| a.upstream = Some(url)).await;
    let (code, message) = login_error(&proxy_url(&proxy)).await;
    assert_eq!(code, "08001", "{message}");
    assert!(message.contains("channel_binding is require"), "{message}");
}

/// `min_pool_size` with pass-through: nothing can be opened before a client has logged in
/// (pgheal has no key yet); after the first login the pool tops itself up with the kept keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_fills_after_the_first_login() {
    let pg = start_pg();
    let dir = Dir::new("passthrough-min");
    let auth_file = dir.write(
        "userlist.txt",
        &format!("\"{USER}\" \"{}\"\n", verifier(&pg, USER)),
    );
    let proxy = start_proxy(&pg, |a| {
        a.upstream = Some(passwordless_upstream(&pg));
        a.auth_file = Some(auth_file.display().to_string());
        a.min_pool_size = Some(3);
    })
    .await;
    let admin = admin_client(&pg).await;
    let app_backends = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(-1)
    };
    // A few maintenance rounds pass without a key: no connection.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(app_backends().await, 0);
    assert_eq!(current_user(&proxy_url(&proxy)).await.expect("login"), USER);
    let filled = eventually(Duration::from_secs(20), || async {
        app_backends().await >= 3
    })
    .await;
    assert!(
        filled,
        "the pool did not top itself up after the first login"
    );
}
