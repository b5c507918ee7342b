//! `RELOAD`, SIGHUP and `SET` on the binary run with a pgbouncer.ini, against real
//! PostgreSQL: a pool resized under load with no failed transaction, an invalid file that
//! changes nothing, databases added and removed, `SET` values and how a reload treats them,
//! and the log level following `verbose`.

use crate::common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::bin::{pgheal_cmd, send_signal};
use common::certs::Dir;
use common::console::{named_rows, Row};
use common::*;

const ADMIN_PW: &str = "admin-pw";

/// The pieces of the test's pgbouncer.ini that change between reloads.
struct Ini<'a> {
    pg_port: u16,
    port: u16,
    /// `[databases]` lines.
    databases: &'a str,
    /// More `[pgbouncer]` lines.
    extra: &'a str,
}

impl Ini<'_> {
    fn text(&self, userlist: &std::path::Path) -> String {
        format!(
            "[databases]\n{}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {}\n\
             auth_type = md5\nauth_file = {}\npool_mode = transaction\nadmin_users = admin\n\
             server_idle_timeout = 0\n{}\n",
            self.databases.replace("PGPORT", &self.pg_port.to_string()),
            self.port,
            userlist.display(),
            self.extra
        )
    }
}

struct Running {
    child: tokio::process::Child,
    port: u16,
    log: tokio::task::JoinHandle<String>,
    ini: PathBuf,
    userlist: PathBuf,
    pg_port: u16,
}

impl Running {
    async fn start(
        pg: &pgheal::cluster::TempCluster,
        dir: &Dir,
        databases: &str,
        extra: &str,
    ) -> Running {
        let port = free_port();
        let userlist = dir.write(
            "userlist.txt",
            &format!("\"{USER}\" \"{PASSWORD}\"\n\"admin\" \"{ADMIN_PW}\"\n"),
        );
        let ini = Ini {
            pg_port: pg.port(),
            port,
            databases,
            extra,
        };
        let path = dir.write("pgbouncer.ini", &ini.text(&userlist));
        let mut c = pgheal_cmd();
        c.arg(&path);
        let (child, log) = spawn_logging(c);
        let r = Running {
            child,
            port,
            log,
            ini: path,
            userlist,
            pg_port: pg.port(),
        };
        let console = r.console_url();
        let up = eventually(Duration::from_secs(20), || async {
            try_connect(&console).await.is_ok()
        })
        .await;
        assert!(up, "pgheal did not start accepting on port {port}");
        r
    }

    /// Rewrite the file (the next RELOAD or SIGHUP reads it).
    fn rewrite(&self, databases: &str, extra: &str) {
        let ini = Ini {
            pg_port: self.pg_port,
            port: self.port,
            databases,
            extra,
        };
        std::fs::write(&self.ini, ini.text(&self.userlist)).expect("rewrite the ini");
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    fn console_url(&self) -> String {
        format!(
            "postgres://admin:{ADMIN_PW}@127.0.0.1:{}/pgbouncer",
            self.port
        )
    }

    fn sighup(&self) {
        send_signal(self.child.id().expect("pid"), "HUP");
    }

    /// Stop with SIGTERM and return everything pgheal logged.
    async fn stop(mut self) -> String {
        send_signal(self.child.id().expect("pid"), "QUIT");
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("pgheal exits after SIGQUIT");
        tokio::time::timeout(Duration::from_secs(5), self.log)
            .await
            .expect("the log is read")
            .expect("the log task")
    }
}

/// Run a console command: its rows as (column → value) lists, or the error message.
async fn console(url: &str, sql: &str) -> Result<Vec<Row>, String> {
    let c = connect(url).await;
    let msgs = tokio::time::timeout(Duration::from_secs(20), c.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql} answers within 20 s"));
    match msgs {
        Err(e) => Err(e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string())),
        Ok(msgs) => Ok(named_rows(&msgs)),
    }
}

fn field<'a>(row: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    row.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref())
}

/// `SHOW DATABASES`' `pool_size` of a database, if it is listed.
async fn pool_size(url: &str, db: &str) -> Option<i64> {
    let rows = console(url, "SHOW DATABASES")
        .await
        .expect("SHOW DATABASES");
    rows.iter()
        .find(|r| field(r, "name") == Some(db))
        .and_then(|r| field(r, "pool_size"))
        .map(|v| v.parse().expect("an integer pool_size"))
}

/// `SHOW CONFIG`'s (value, changeable) of a key.
async fn config_row(url: &str, key: &str) -> (String, String) {
    let rows = console(url, "SHOW CONFIG").await.expect("SHOW CONFIG");
    let row = rows
        .iter()
        .find(|r| field(r, "key") == Some(key))
        .unwrap_or_else(|| panic!("SHOW CONFIG lists {key}"));
    (
        field(row, "value").unwrap_or("").to_owned(),
        field(row, "changeable").unwrap_or("").to_owned(),
    )
}

/// Server connections PostgreSQL has for the test database's user.
async fn server_connections(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND datname = $2",
            &[&USER, &DB],
        )
        .await
        .expect("count server connections")
        .get(0)
}

const ONE_DB: &str = "appdb = host=127.0.0.1 port=PGPORT dbname=appdb user=app password=secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_resizes_a_pool_under_load_and_no_transaction_fails() {
    let pg = start_pg();
    let admin = admin_client(&pg).await;
    admin_sql(
        &admin,
        "CREATE TABLE reload_load (n int); ALTER TABLE reload_load OWNER TO app",
    )
    .await;
    let dir = Dir::new("reload-resize");
    let running = Running::start(&pg, &dir, ONE_DB, "default_pool_size = 2").await;
    let console_url = running.console_url();
    assert_eq!(pool_size(&console_url, DB).await, Some(2));

    // Eight clients, each running short write transactions until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for n in 0..8 {
        let client = connect(&running.url(DB)).await;
        let (stop, done) = (stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .batch_execute(&format!(
                        "BEGIN; INSERT INTO reload_load VALUES ({n}); SELECT pg_sleep(0.05); COMMIT"
                    ))
                    .await;
                match r {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failures.push(e.to_string());
                        break;
                    }
                }
            }
            failures
        }));
    }
    let busy = eventually(Duration::from_secs(10), || async {
        server_connections(&admin).await == 2
    })
    .await;
    assert!(busy, "the load uses the whole pool of 2");

    running.rewrite(ONE_DB, "default_pool_size = 5");
    running.sighup();
    let grown = eventually(Duration::from_secs(10), || async {
        pool_size(&console_url, DB).await == Some(5) && server_connections(&admin).await == 5
    })
    .await;
    if !grown {
        let now = server_connections(&admin).await;
        let pools = console(&console_url, "SHOW POOLS").await;
        let servers = console(&console_url, "SHOW SERVERS").await;
        eprintln!("pools {pools:?}\nservers {servers:?}");
        stop.store(true, Ordering::Relaxed);
        let log = running.stop().await;
        panic!("after SIGHUP the pool grows to 5 server connections (now {now}); log:\n{log}");
    }

    running.rewrite(ONE_DB, "default_pool_size = 1");
    running.sighup();
    let shrunk = eventually(Duration::from_secs(15), || async {
        pool_size(&console_url, DB).await == Some(1) && server_connections(&admin).await == 1
    })
    .await;
    assert!(
        shrunk,
        "after SIGHUP the pool shrinks to 1 server connection as they come back (now {})",
        server_connections(&admin).await
    );
    let before = done.load(Ordering::Relaxed);
    let progressed = eventually(Duration::from_secs(10), || async {
        done.load(Ordering::Relaxed) > before + 20
    })
    .await;
    assert!(progressed, "transactions go on through the pool of 1");

    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(
            tokio::time::timeout(Duration::from_secs(20), w)
                .await
                .expect("a worker stops")
                .expect("a worker task"),
        );
    }
    assert!(failures.is_empty(), "failed transactions: {failures:?}");
    let committed: i64 = admin
        .query_one("SELECT count(*) FROM reload_load", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        committed as u64,
        done.load(Ordering::Relaxed),
        "every acknowledged transaction is in the table, once"
    );
    let log = running.stop().await;
    assert!(log.contains("configuration reloaded"), "{log}");
}

async fn admin_sql(admin: &tokio_postgres::Client, sql: &str) {
    admin.batch_execute(sql).await.expect(sql);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_changes_nothing() {
    let pg = start_pg();
    let dir = Dir::new("reload-invalid");
    let running = Running::start(&pg, &dir, ONE_DB, "default_pool_size = 3").await;
    let console_url = running.console_url();
    let client = connect(&running.url(DB)).await;

    running.rewrite(ONE_DB, "default_pool_size = lots");
    let err = console(&console_url, "RELOAD")
        .await
        .expect_err("RELOAD of an invalid file fails");
    assert!(
        err.contains("RELOAD failed")
            && err.contains("default_pool_size")
            && err.contains("pgbouncer.ini:"),
        "the error names the key, file and line: {err}"
    );
    running.sighup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pool_size(&console_url, DB).await,
        Some(3),
        "the old pool size stays"
    );
    let v: i32 = client
        .query_one("SELECT 41 + 1", &[])
        .await
        .expect("the session goes on")
        .get(0);
    assert_eq!(v, 42);
    assert!(
        try_connect(&running.url(DB)).await.is_ok(),
        "new logins still work"
    );

    running.rewrite(ONE_DB, "default_pool_size = 4");
    console(&console_url, "RELOAD")
        .await
        .expect("RELOAD of a fixed file");
    assert_eq!(pool_size(&console_url, DB).await, Some(4));
    let log = running.stop().await;
    assert!(
        log.contains("RELOAD failed: keeping the configuration in force"),
        "the failed SIGHUP reload is logged: {log}"
    );
    assert!(!log.contains(PASSWORD), "no secret in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_databases_and_set_changes_settings() {
    let pg = start_pg();
    let dir = Dir::new("reload-dbs");
    let running = Running::start(&pg, &dir, ONE_DB, "").await;
    let console_url = running.console_url();
    let old_session = connect(&running.url(DB)).await;

    // A database added.
    let other = "other = host=127.0.0.1 port=PGPORT dbname=appdb user=app password=secret";
    assert!(try_connect(&running.url("other")).await.is_err());
    running.rewrite(&format!("{ONE_DB}\n{other}"), "");
    console(&console_url, "RELOAD").await.expect("RELOAD");
    let c = connect(&running.url("other")).await;
    let db: String = c
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(db, DB);

    // A database removed: new logins fail; the session already there goes on.
    running.rewrite(other, "verbose = 1");
    console(&console_url, "RELOAD").await.expect("RELOAD");
    let (code, message) = common::login::login_error(&running.url(DB)).await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("3D000", "database \"appdb\" does not exist"),
        "a removed database refuses new logins"
    );
    let v: i32 = old_session
        .query_one("SELECT 7", &[])
        .await
        .expect("a session of a removed database finishes its work")
        .get(0);
    assert_eq!(v, 7);
    assert_eq!(pool_size(&console_url, DB).await, None, "no longer listed");

    // SET: changes the pools at once, is listed as changeable, refuses what needs a restart.
    console(&console_url, "SET default_pool_size = 7")
        .await
        .expect("SET");
    assert_eq!(pool_size(&console_url, "other").await, Some(7));
    let (value, changeable) = config_row(&console_url, "default_pool_size").await;
    assert_eq!((value.as_str(), changeable.as_str()), ("7", "yes"));
    assert_eq!(config_row(&console_url, "listen_port").await.1, "no");
    let e = console(&console_url, "SET listen_port = 1")
        .await
        .expect_err("restart-only");
    assert!(e.contains("SET failed") && e.contains("restart"), "{e}");
    let e = console(&console_url, "SET default_pool_size = many")
        .await
        .expect_err("invalid");
    assert!(
        e.contains("SET failed") && e.contains("default_pool_size"),
        "{e}"
    );
    let e = console(&console_url, "SET no_such_key = 1")
        .await
        .expect_err("unknown");
    assert!(e.contains("SET failed"), "{e}");
    // A RELOAD keeps a SET value the file does not set; the file wins once it sets the key.
    console(&console_url, "RELOAD").await.expect("RELOAD");
    assert_eq!(pool_size(&console_url, "other").await, Some(7));
    running.rewrite(other, "verbose = 1\ndefault_pool_size = 6");
    console(&console_url, "RELOAD").await.expect("RELOAD");
    assert_eq!(pool_size(&console_url, "other").await, Some(6));

    let log = running.stop().await;
    assert!(
        log.contains("log level changed"),
        "verbose = 1 changes the level: {log}"
    );
    assert!(log.contains("DEBUG"), "debug lines follow: {log}");
}
