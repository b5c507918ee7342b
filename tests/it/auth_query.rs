//! `auth_user` / `auth_query` / `auth_dbname`: a user that exists only on the server logs in
//! through pgheal, its secret looked up with PgBouncer's default query (auth_user a superuser)
//! or a SECURITY DEFINER function (auth_user unprivileged); a changed password is picked up at
//! once; an unknown user and a wrong password get the same error; secrets stay out of the log.

use crate::common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::certs::Dir;
use common::login::{current_user, login_error};
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::{FileConfig, FileDatabase, General};
use pgheal::proxy::ProxyHandle;

const LOOKUP_PW: &str = "lookup-Pw-31337";
const DAVE_PW: &str = "dave-Pw-quokka";

/// A cluster with `lookup` (superuser, password in the auth_file) and `dave` (a login that
/// exists only on the server).
fn setup() -> TempCluster {
    let pg = start_pg();
    admin(
        &pg,
        &format!(
            "CREATE ROLE lookup LOGIN SUPERUSER PASSWORD '{LOOKUP_PW}';
             CREATE ROLE dave LOGIN PASSWORD '{DAVE_PW}';"
        ),
    );
    pg
}

async fn proxy(
    pg: &TempCluster,
    dir: &Dir,
    auth_user: &str,
    auth_pw: &str,
    auth_query: Option<&str>,
    mode: &str,
) -> ProxyHandle {
    proxy_auth(
        pg,
        dir,
        auth_user,
        auth_pw,
        auth_query,
        mode,
        "scram-sha-256",
    )
    .await
}

async fn proxy_auth(
    pg: &TempCluster,
    dir: &Dir,
    auth_user: &str,
    auth_pw: &str,
    auth_query: Option<&str>,
    mode: &str,
    auth_type: &str,
) -> ProxyHandle {
    let auth_file = dir.write(
        &format!("userlist-{auth_user}-{mode}.txt"),
        &format!("\"{auth_user}\" \"{auth_pw}\"\n"),
    );
    let mut databases = BTreeMap::new();
    databases.insert(
        DB.to_owned(),
        FileDatabase {
            host: Some("127.0.0.1".into()),
            port: Some(pg.port()),
            dbname: Some(DB.into()),
            auth_user: Some(auth_user.into()),
            ..Default::default()
        },
    );
    let file = FileConfig {
        databases,
        pgheal: General {
            auth_query: auth_query.map(str::to_owned),
            ..Default::default()
        },
        ..Default::default()
    };
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        auth_file: Some(auth_file.display().to_string()),
        pool_mode: Some(mode.into()),
        auth_type: Some(auth_type.into()),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

fn wrong_password(user: &str) -> (String, String) {
    (
        "28P01".to_owned(),
        format!("password authentication failed for user \"{user}\""),
    )
}

/// The checks every auth_query setup must pass, for user dave.
async fn dave_logs_in_and_password_changes(pg: &TempCluster, proxy: &ProxyHandle, tag: &str) {
    let url = |pw: &str| proxy_url_as(proxy, "dave", pw, DB);
    assert_eq!(
        current_user(&url(DAVE_PW)).await.expect(tag),
        "dave",
        "{tag}"
    );
    assert_eq!(
        login_error(&url("not-it")).await,
        wrong_password("dave"),
        "{tag}"
    );
    // Unknown to the server: the same error, no hint.
    assert_eq!(
        login_error(&proxy_url_as(proxy, "ghost", "whatever", DB)).await,
        wrong_password("ghost"),
        "{tag}"
    );
    // A NOLOGIN role without password and a role with a NULL password: the same.
    assert_eq!(
        login_error(&proxy_url_as(proxy, "pg_monitor", "x", DB)).await,
        wrong_password("pg_monitor"),
        "{tag}"
    );
    let new_pw = format!("{DAVE_PW}-{tag}");
    admin(pg, &format!("ALTER ROLE dave PASSWORD '{new_pw}'"));
    assert_eq!(
        current_user(&url(&new_pw))
            .await
            .expect("the new password works"),
        "dave",
        "{tag}"
    );
    assert_eq!(
        login_error(&url(DAVE_PW)).await,
        wrong_password("dave"),
        "{tag}: the old password must fail"
    );
    admin(pg, &format!("ALTER ROLE dave PASSWORD '{DAVE_PW}'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_query_as_a_superuser() {
    let pg = setup();
    let dir = Dir::new("auth-query");
    for mode in ["session", "transaction"] {
        let p = proxy(&pg, &dir, "lookup", LOOKUP_PW, None, mode).await;
        dave_logs_in_and_password_changes(&pg, &p, mode).await;
        // The auth_user itself, from the auth_file.
        assert_eq!(
            current_user(&proxy_url_as(&p, "lookup", LOOKUP_PW, DB))
                .await
                .expect("auth_user"),
            "lookup"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_definer_function_as_an_unprivileged_user() {
    let pg = setup();
    admin(
        &pg,
        "CREATE ROLE finder LOGIN PASSWORD 'finder-pw';
         CREATE SCHEMA pgheal;
         CREATE FUNCTION pgheal.user_lookup(i_username text, OUT uname text, OUT phash text)
         RETURNS record AS $$
         BEGIN
             SELECT usename, passwd FROM pg_catalog.pg_shadow
             WHERE usename = i_username INTO uname, phash;
             RETURN;
         END;
         $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog;
         REVOKE ALL ON FUNCTION pgheal.user_lookup(text) FROM public;
         GRANT USAGE ON SCHEMA pgheal TO finder;
         GRANT EXECUTE ON FUNCTION pgheal.user_lookup(text) TO finder;",
    );
    let dir = Dir::new("auth-query-definer");
    // finder cannot read pg_shadow: the default query fails, and the client learns nothing
    // about dave.
    let p = proxy(&pg, &dir, "finder", "finder-pw", None, "session").await;
    let (code, message) = login_error(&proxy_url_as(&p, "dave", DAVE_PW, DB)).await;
    assert_eq!(code, "08001", "{message}");
    assert!(!message.contains("dave"), "{message}");

    let query = "SELECT uname, phash FROM pgheal.user_lookup($1)";
    for mode in ["session", "transaction"] {
        let p = proxy(&pg, &dir, "finder", "finder-pw", Some(query), mode).await;
        dave_logs_in_and_password_changes(&pg, &p, mode).await;
    }
}

/// The name is a parameter, never SQL: a name with quotes is just an unknown user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_name_is_a_parameter() {
    let pg = setup();
    let dir = Dir::new("auth-query-inject");
    let p = proxy(&pg, &dir, "lookup", LOOKUP_PW, None, "session").await;
    let evil = "x' OR usename='dave";
    assert_eq!(
        login_error(&proxy_url_as(&p, &urlencode(evil), DAVE_PW, DB)).await,
        wrong_password(evil)
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The pgheal binary with a pgbouncer.ini (`auth_user` per database, `auth_dbname`), at the
/// most verbose level: logins work, and no password, verifier or hash reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ini_keys_and_no_secret_in_the_log() {
    let pg = setup();
    let dir = Dir::new("auth-query-ini");
    let auth_file = dir.write("userlist.txt", &format!("\"lookup\" \"{LOOKUP_PW}\"\n"));
    let port = free_port();
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\n\
             {DB} = host=127.0.0.1 port={} dbname={DB} auth_user=lookup auth_dbname=postgres\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             auth_type = scram-sha-256\n\
             auth_file = {}\n\
             pool_mode = transaction\n",
            pg.port(),
            auth_file.display(),
        ),
    );
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgheal"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PGHEAL_") {
            c.env_remove(k);
        }
    }
    c.arg("-vv")
        .arg(&ini)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let (mut child, stderr) = spawn_logging(c);
    let url = |pw: &str| format!("postgres://dave:{pw}@127.0.0.1:{port}/{DB}");
    let up = eventually(Duration::from_secs(20), || async {
        current_user(&url(DAVE_PW)).await.is_ok()
    })
    .await;
    assert!(up, "dave did not log in through the ini's auth_query");
    assert!(current_user(&url("wrong-quokka")).await.is_err());
    let verifier = admin(
        &pg,
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'dave'",
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().expect("pid").to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("pgheal exits");
    let log = stderr.await.expect("stderr");
    let secrets = verifier
        .split(['$', ':'])
        .skip(1)
        .filter(|p| p.len() >= 8)
        .map(str::to_owned)
        .chain(["quokka".to_owned(), "31337".to_owned()]);
    assert!(
        !log.contains("n=,r=") && !log.contains(",p="),
        "SCRAM messages in the log"
    );
    for s in secrets {
        assert!(!log.contains(&s), "the log shows a secret:\n{log}");
    }
}

/// An md5 server and a user whose md5 hash comes from auth_query: pgheal logs into the server
/// with the hash, and after `ALTER ROLE ... PASSWORD` new server connections use the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_secret_from_auth_query_follows_a_password_change() {
    let pg = TempCluster::start_with(pgheal::cluster::ClusterOptions {
        auth_method: pgheal::cluster::AuthMethod::Md5,
        ..Default::default()
    })
    .expect("start md5 cluster");
    pg.create_user(USER, PASSWORD).expect("user");
    pg.create_database(DB, USER).expect("db");
    admin(
        &pg,
        &format!(
            "CREATE ROLE lookup LOGIN SUPERUSER PASSWORD '{LOOKUP_PW}';
             CREATE ROLE dave LOGIN PASSWORD '{DAVE_PW}';"
        ),
    );
    assert_eq!(
        admin(
            &pg,
            "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'dave'"
        ),
        "md5"
    );
    let dir = Dir::new("auth-query-md5");
    let p = proxy_auth(&pg, &dir, "lookup", LOOKUP_PW, None, "session", "md5").await;
    let url = |pw: &str| proxy_url_as(&p, "dave", pw, DB);
    assert_eq!(
        current_user(&url(DAVE_PW)).await.expect("md5 login"),
        "dave"
    );
    let new_pw = format!("{DAVE_PW}-2");
    admin(
        &pg,
        &format!(
            "ALTER ROLE dave PASSWORD '{new_pw}';
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'dave';"
        ),
    );
    // The idle server connection is gone: the next login opens one with the new hash.
    let ok = eventually(Duration::from_secs(20), || async {
        current_user(&url(&new_pw)).await.is_ok()
    })
    .await;
    assert!(
        ok,
        "the new password must log in (with a new server connection)"
    );
    assert_eq!(login_error(&url(DAVE_PW)).await, wrong_password("dave"));
}
