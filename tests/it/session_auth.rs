//! Client authentication at pgheal: SCRAM (default), md5, cleartext and trust; a PgBouncer
//! userlist.txt with plain, md5 and SCRAM secrets; and the errors PostgreSQL would give.

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use common::*;
use pgheal::auth::{md5_password_hash, ScramSecret};
use pgheal::cluster::{AuthMethod, ClusterOptions, TempCluster};
use pgheal::config::cli::RunArgs;
use pgheal::config::file::{FileConfig, FileDatabase};
use pgheal::proxy::ProxyHandle;

/// The error of a failed login, with its SQLSTATE and message.
async fn login_error(url: &str) -> (String, String) {
    let err = try_connect(url).await.expect_err("login must fail");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a server error, got {err}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// Log in and check the session really reaches the server (as pgheal's server user `app`).
async fn login_works(url: &str) {
    let c = try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("login to {url} failed: {e}"));
    let r = c
        .query_one(
            "SELECT current_user::text, current_database()::text, 6 * 7",
            &[],
        )
        .await
        .expect("query");
    assert_eq!(r.get::<_, String>(0), USER);
    assert_eq!(r.get::<_, String>(1), DB);
    assert_eq!(r.get::<_, i32>(2), 42);
}

fn wrong_password(user: &str) -> (String, String) {
    (
        "28P01".to_owned(),
        format!("password authentication failed for user \"{user}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_login_and_its_errors() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;

    login_works(&proxy_url(&proxy)).await;
    assert_eq!(
        login_error(&proxy_url_as(&proxy, USER, "wrong", DB)).await,
        wrong_password(USER)
    );
    // An unknown user goes through the same exchange and fails the same way.
    assert_eq!(
        login_error(&proxy_url_as(&proxy, "ghost", "secret", DB)).await,
        wrong_password("ghost")
    );
    assert_eq!(
        login_error(&proxy_url_as(&proxy, USER, PASSWORD, "nodb")).await,
        (
            "3D000".to_owned(),
            "database \"nodb\" does not exist".to_owned()
        )
    );
    // Without the password, the database's existence is not revealed.
    assert_eq!(
        login_error(&proxy_url_as(&proxy, USER, "wrong", "nodb")).await,
        wrong_password(USER)
    );
    // pgheal still serves after the failures.
    login_works(&proxy_url(&proxy)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_plain_and_trust_auth_types() {
    let pg = start_pg();
    for method in ["md5", "plain"] {
        let proxy = start_proxy(&pg, |a| a.auth_type = Some(method.into())).await;
        login_works(&proxy_url(&proxy)).await;
        assert_eq!(
            login_error(&proxy_url_as(&proxy, USER, "wrong", DB)).await,
            wrong_password(USER),
            "{method}"
        );
        assert_eq!(
            login_error(&proxy_url_as(&proxy, "ghost", "x", DB)).await,
            wrong_password("ghost"),
            "{method}"
        );
    }

    let proxy = start_proxy(&pg, |a| a.auth_type = Some("trust".into())).await;
    login_works(&format!(
        "postgres://{USER}@127.0.0.1:{}/{DB}",
        proxy.addr.port()
    ))
    .await;
    // trust asks no password, so a wrong one does not matter.
    login_works(&proxy_url_as(&proxy, USER, "wrong", DB)).await;
    // ... but the user must be a configured one, as with PgBouncer.
    let (code, message) = login_error(&proxy_url_as(&proxy, "mallory", "", DB)).await;
    assert_eq!(code, "28000");
    assert!(message.contains("\"mallory\" does not exist"), "{message}");
    assert_eq!(
        login_error(&proxy_url_as(&proxy, USER, "", "nodb")).await.0,
        "3D000"
    );
}

/// A server that stores md5 passwords: pgheal answers its md5 challenge when logging in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_into_an_md5_server() {
    let pg = TempCluster::start_with(ClusterOptions {
        auth_method: AuthMethod::Md5,
        ..Default::default()
    })
    .expect("start md5 cluster");
    pg.create_user(USER, PASSWORD).expect("user");
    pg.create_database(DB, USER).expect("db");
    assert_eq!(
        admin(
            &pg,
            "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'app'"
        ),
        "md5"
    );
    let proxy = start_proxy(&pg, |_| {}).await;
    login_works(&proxy_url(&proxy)).await;
}

fn write_userlist(text: &str) -> std::path::PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "pgheal-userlist-{}-{}.txt",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).expect("write userlist");
    path
}

/// pgheal with `[databases.appdb]` logging into the server as app/secret, clients checked
/// against `auth_file`.
async fn proxy_with_userlist(pg: &TempCluster, auth_file: &str, auth_type: &str) -> ProxyHandle {
    let mut databases = BTreeMap::new();
    databases.insert(
        DB.to_owned(),
        FileDatabase {
            url: Some(pg.url(USER, PASSWORD, DB)),
            ..Default::default()
        },
    );
    let file = FileConfig {
        databases,
        ..Default::default()
    };
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        auth_type: Some(auth_type.into()),
        auth_file: Some(auth_file.into()),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_userlist_with_plain_md5_and_scram_secrets() {
    let pg = start_pg();
    let carol = ScramSecret::from_password("carol-pw", b"0123456789abcdef", 4096);
    let text = format!(
        "; PgBouncer userlist\n\
         \"alice\" \"alice-pw\"\n\
         \"bob\" \"{}\"\n\
         \"carol\" \"{}\"\n",
        md5_password_hash("bob", "bob-pw"),
        carol.to_verifier_string()
    );
    assert!(text.contains("\"md5") && text.contains("SCRAM-SHA-256$4096:"));
    let path = write_userlist(&text);
    let auth_file = path.display().to_string();

    // md5: plain and md5 secrets answer md5; the SCRAM secret upgrades the exchange to SCRAM.
    let proxy = proxy_with_userlist(&pg, &auth_file, "md5").await;
    for (user, pw) in [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
    ] {
        login_works(&proxy_url_as(&proxy, user, pw, DB)).await;
        assert_eq!(
            login_error(&proxy_url_as(&proxy, user, "bad-pw", DB)).await,
            wrong_password(user)
        );
    }
    // The server user is not a pgheal user unless listed.
    assert_eq!(login_error(&proxy_url(&proxy)).await, wrong_password(USER));

    // scram-sha-256: plain and SCRAM secrets work; an md5 hash cannot serve SCRAM.
    let proxy = proxy_with_userlist(&pg, &auth_file, "scram-sha-256").await;
    login_works(&proxy_url_as(&proxy, "alice", "alice-pw", DB)).await;
    login_works(&proxy_url_as(&proxy, "carol", "carol-pw", DB)).await;
    assert_eq!(
        login_error(&proxy_url_as(&proxy, "bob", "bob-pw", DB)).await,
        wrong_password("bob")
    );

    // plain (cleartext): every kind of secret can check a cleartext password.
    let proxy = proxy_with_userlist(&pg, &auth_file, "plain").await;
    for (user, pw) in [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
    ] {
        login_works(&proxy_url_as(&proxy, user, pw, DB)).await;
        assert_eq!(
            login_error(&proxy_url_as(&proxy, user, "alice-pw!", DB)).await,
            wrong_password(user)
        );
    }
    let _ = std::fs::remove_file(&path);
}
