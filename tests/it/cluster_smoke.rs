//! Smoke test of `pgheal::cluster::TempCluster`: the throwaway PostgreSQL every other
//! integration test relies on. Starts real servers from the system binaries.

use std::process::Command;

use pgheal::cluster::{AuthMethod, ClusterOptions, TempCluster};

/// Runs `select 1`-style SQL with the cluster's own psql as `user`, password in PGPASSWORD.
fn psql_as(pg: &TempCluster, user: &str, password: &str, db: &str, sql: &str) -> (bool, String) {
    let output = Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", pg.host(), "-p"])
        .arg(pg.port().to_string())
        .args(["-U", user, "-d", db, "-c", sql])
        .env("PGPASSWORD", password)
        .env_remove("PGPASSFILE")
        .env_remove("PGSERVICE")
        .output()
        .expect("spawn psql");
    let text = if output.status.success() {
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    } else {
        String::from_utf8_lossy(&output.stderr).trim().to_string()
    };
    (output.status.success(), text)
}

/// Same, but with the connection given as the `url()` (credentials inside the URL).
fn psql_url(pg: &TempCluster, url: &str, sql: &str) -> (bool, String) {
    let output = Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .output()
        .expect("spawn psql");
    let stream = if output.status.success() {
        &output.stdout
    } else {
        &output.stderr
    };
    (
        output.status.success(),
        String::from_utf8_lossy(stream).trim().to_string(),
    )
}

#[test]
fn scram_cluster_serves_users_and_survives_restart() {
    let pg = TempCluster::start().expect("start cluster");
    assert_eq!(pg.host(), "127.0.0.1");
    assert!(pg.port() > 0);

    // A password that needs percent-encoding in the URL.
    let password = "s3cr:t/p@ss w%rd";
    pg.create_user("app_user", password).expect("create user");
    pg.create_database("app_db", "app_user")
        .expect("create database");

    // Stored as a SCRAM verifier, and the database belongs to the user.
    let stored = pg
        .psql(
            "postgres",
            "select left(rolpassword, 14) from pg_authid where rolname = 'app_user'",
        )
        .expect("read pg_authid");
    assert_eq!(stored, "SCRAM-SHA-256$");
    let owner = pg
        .psql(
            "postgres",
            "select pg_get_userbyid(datdba) from pg_database where datname = 'app_db'",
        )
        .expect("read pg_database");
    assert_eq!(owner, "app_user");

    // The user logs in over TCP with SCRAM.
    let (ok, out) = psql_as(
        &pg,
        "app_user",
        password,
        "app_db",
        "select 1, current_user, current_database()",
    );
    assert!(ok, "psql as app_user failed: {out}");
    assert_eq!(out, "1|app_user|app_db");

    // The URL form carries the same credentials, percent-encoded.
    let url = pg.url("app_user", password, "app_db");
    assert!(
        url.starts_with("postgres://app_user:s3cr%3At%2Fp%40ss%20w%25rd@127.0.0.1:"),
        "{url}"
    );
    let (ok, out) = psql_url(&pg, &url, "select 1");
    assert!(ok, "psql with url failed: {out}");
    assert_eq!(out, "1");

    // A wrong password is refused: the cluster really authenticates.
    let (ok, out) = psql_as(&pg, "app_user", "wrong", "app_db", "select 1");
    assert!(!ok, "wrong password accepted");
    assert!(out.contains("password authentication failed"), "{out}");

    // Superuser helpers, multi-statement input and errors.
    let (ok, out) = psql_as(
        &pg,
        "app_user",
        password,
        "app_db",
        "create table t(x int); insert into t values (41), (1)",
    );
    assert!(ok, "create table as app_user failed: {out}");
    assert_eq!(
        pg.psql("app_db", "select 'x';\nselect sum(x) from t;")
            .expect("psql script"),
        "x\n42"
    );
    let err = pg
        .psql("app_db", "select * from no_such_table")
        .expect_err("error must be reported");
    assert!(err.to_string().contains("no_such_table"), "{err}");

    // Restart on the same port; data and credentials survive.
    let port = pg.port();
    pg.restart().expect("restart");
    assert_eq!(pg.port(), port);
    let (ok, out) = psql_as(&pg, "app_user", password, "app_db", "select sum(x) from t");
    assert!(ok, "psql after restart failed: {out}");
    assert_eq!(out, "42");
    let (ok, out) = psql_url(&pg, &pg.superuser_url("app_db"), "select count(*) from t");
    assert!(ok, "superuser url after restart failed: {out}");
    assert_eq!(out, "2");
}

#[test]
fn md5_cluster_with_options_and_cleanup() {
    let mut pg = TempCluster::start_with(ClusterOptions {
        superuser_password: "sup'er".to_string(),
        auth_method: AuthMethod::Md5,
        max_connections: 7,
        extra_conf: vec![("work_mem".to_string(), "3MB".to_string())],
    })
    .expect("start md5 cluster");

    assert_eq!(
        pg.psql("postgres", "show max_connections").expect("show"),
        "7"
    );
    assert_eq!(pg.psql("postgres", "show work_mem").expect("show"), "3MB");
    pg.create_user("legacy", "old pass").expect("create user");
    let stored = pg
        .psql(
            "postgres",
            "select left(rolpassword, 3) from pg_authid where rolname = 'legacy'",
        )
        .expect("read pg_authid");
    assert_eq!(stored, "md5");
    let (ok, out) = psql_as(&pg, "legacy", "old pass", "postgres", "select 1");
    assert!(ok, "md5 login failed: {out}");
    assert_eq!(out, "1");

    // Stop, start again via restart, then drop removes everything.
    let dir = pg.dir().to_path_buf();
    pg.stop().expect("stop");
    assert!(!pg.is_running());
    assert!(pg.psql("postgres", "select 1").is_err());
    pg.restart().expect("start after stop");
    assert_eq!(pg.psql("postgres", "select 1").expect("select"), "1");
    drop(pg);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn parallel_clusters_do_not_collide() {
    let handles: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let pg = TempCluster::start_with(ClusterOptions {
                    auth_method: AuthMethod::Trust,
                    ..ClusterOptions::default()
                })
                .expect("start cluster");
                let out = pg.psql("postgres", &format!("select {i}")).expect("select");
                assert_eq!(out, i.to_string());
                (pg.port(), pg.dir().to_path_buf())
            })
        })
        .collect();
    for handle in handles {
        let (port, dir) = handle.join().expect("thread");
        assert!(port > 0);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
