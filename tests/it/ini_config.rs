//! The binary run as PgBouncer is run: `pgheal /path/pgbouncer.ini` with a production-style
//! file, against real PostgreSQL; PgBouncer's command-line options; systemd readiness.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::bin::pgheal_cmd as pgheal;
use common::*;
use pgheal::auth::{md5_password_hash, ScramSecret};
use tokio::process::Command;

/// Run to completion (bounded) and return (exit code, stdout, stderr).
async fn run(mut c: Command) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(30), c.output())
        .await
        .expect("pgheal exits by itself")
        .expect("spawn pgheal");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh directory for one test's files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "pgheal-ini-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).expect("create the test directory");
        Dir(d)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write a test file");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn wait_accepting(url: &str) {
    let up = eventually(Duration::from_secs(20), || async {
        try_connect(url).await.is_ok()
    })
    .await;
    assert!(up, "pgheal did not start accepting clients ({url})");
}

fn sigterm(pid: u32) {
    common::bin::send_signal(pid, "TERM");
}

/// (current_database, current_user) through a connection.
async fn whoami(client: &tokio_postgres::Client) -> (String, String) {
    let r = client
        .query_one("SELECT current_database()::text, current_user::text", &[])
        .await
        .expect("query through pgheal");
    (r.get(0), r.get(1))
}

const ALICE_PW: &str = "alice-pw";
const BOB_PW: &str = "bob-pw";

/// A PostgreSQL with `appdb`, `reportsdb` and `otherdb` (owned by app), and a user list with
/// a SCRAM secret (alice), an md5 hash (bob) and app's plain password.
fn production_setup(dir: &Dir) -> (pgheal::cluster::TempCluster, PathBuf) {
    let pg = start_pg();
    pg.create_database("reportsdb", USER)
        .expect("create reportsdb");
    pg.create_database("otherdb", USER).expect("create otherdb");
    let alice = ScramSecret::from_password(ALICE_PW, b"pgheal-ini-salt!", 4096);
    let userlist = dir.write(
        "userlist.txt",
        &format!(
            ";; PgBouncer user list\n\"alice\" \"{}\"\n\"bob\" \"{}\"\n\"{USER}\" \"{PASSWORD}\"\n",
            alice.to_verifier_string(),
            md5_password_hash("bob", BOB_PW)
        ),
    );
    (pg, userlist)
}

/// The whole path: `pgheal pgbouncer.ini` with two databases (one from an `%include` next to
/// the file), the `*` fallback, `[users]` switching app's pools to transaction pooling, md5 auth
/// with a SCRAM and an md5 secret; keys pgheal does not implement warn by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_ini_as_it_is() {
    let dir = Dir::new();
    let (pg, userlist) = production_setup(&dir);
    let port = free_port();
    let pg_port = pg.port();
    dir.write(
        "conf.d/reports.ini",
        &format!("reports = host=127.0.0.1 port={pg_port} dbname=reportsdb user={USER} password={PASSWORD} connect_query='SELECT 1'\n"),
    );
    let logfile = dir.0.join("pgheal.log");
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            r#";;; production-style PgBouncer configuration
[databases]
appdb = host=127.0.0.1 port={pg_port} dbname=appdb user={USER} password={PASSWORD} pool_size=1
%include conf.d/reports.ini
; any other database: the client's database name, logging in as app (password from auth_file)
* = host=127.0.0.1 port={pg_port} user={USER}

[users]
{USER} = pool_mode=transaction

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
auth_type = md5
auth_file = {}
logfile = {}
query_wait_timeout = 5
server_reset_query = DISCARD ALL
admin_users = alice
frobnicate = 1
"#,
            userlist.display(),
            logfile.display()
        ),
    );
    let mut c = pgheal();
    // The working directory is elsewhere: the include is found next to the file.
    c.arg(&ini).current_dir(std::env::temp_dir());
    let (mut child, stderr) = spawn_logging(c);

    let url =
        |user: &str, pw: &str, db: &str| format!("postgres://{user}:{pw}@127.0.0.1:{port}/{db}");
    wait_accepting(&url("alice", ALICE_PW, "appdb")).await;
    for (user, pw) in [("alice", ALICE_PW), ("bob", BOB_PW)] {
        for (db, server_db) in [
            ("appdb", "appdb"),
            ("reports", "reportsdb"),
            ("otherdb", "otherdb"),
        ] {
            let client = connect(&url(user, pw, db)).await;
            assert_eq!(
                whoami(&client).await,
                (server_db.to_owned(), USER.to_owned()),
                "{user} on {db}"
            );
        }
    }
    // [users] put app's pools in transaction pooling: two idle clients share appdb's single
    // server connection (in session pooling the second would wait 5 s and fail).
    let alice = connect(&url("alice", ALICE_PW, "appdb")).await;
    let bob = connect(&url("bob", BOB_PW, "appdb")).await;
    assert_eq!(backend_pid(&alice).await, backend_pid(&bob).await);
    let e = try_connect(&url("bob", "wrong", "appdb"))
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"));
    drop((alice, bob));

    sigterm(child.id().expect("pid"));
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("pgheal exits after SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    let log = stderr.await.expect("stderr");
    let warned = |needle: &str| {
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(needle))
    };
    assert!(
        warned(&format!("{}:20: unknown key `frobnicate`", ini.display())),
        "{log}"
    );
    assert!(
        !log.contains("`admin_users`"),
        "admin_users is supported (the admin console): no warning\n{log}"
    );
    assert!(
        !log.contains("connect_query"),
        "connect_query is supported: no warning\n{log}"
    );
    assert!(
        !log.contains(PASSWORD),
        "the server password is in the log:\n{log}"
    );
    // The logfile got the same lines.
    let file_log = std::fs::read_to_string(&logfile).expect("read the logfile");
    assert!(file_log.contains("unknown key `frobnicate`"), "{file_log}");
    assert!(
        file_log.contains("pgheal is accepting clients"),
        "{file_log}"
    );
    assert!(
        !file_log.contains('\x1b'),
        "no terminal colours in the logfile"
    );
}

/// An invalid value stops the start with exit code 2, naming the key, the file and the line
/// (in an included file, that file's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_values_fail_the_start_with_file_and_line() {
    let dir = Dir::new();
    let ini = dir.write(
        "pgbouncer.ini",
        "[pgbouncer]\nlisten_addr = 127.0.0.1\n\nlisten_port = 64x32\n",
    );
    let mut c = pgheal();
    c.arg(&ini);
    let (code, _, stderr) = run(c).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "invalid setting `listen_port`: {}:4: expected an integer",
            ini.display()
        )),
        "{stderr}"
    );

    let inc = dir.write(
        "more.ini",
        "[databases]\nshop = host=127.0.0.1 pool_size=lots password=hunter2\n",
    );
    let ini = dir.write(
        "main.conf",
        &format!(
            "[pgbouncer]\nlisten_addr = 127.0.0.1\n%include {}\n",
            inc.display()
        ),
    );
    // `--config` takes a pgbouncer.ini too; a [pgbouncer] section tells it from TOML.
    let mut c = pgheal();
    c.arg("--config").arg(&ini);
    let (code, _, stderr) = run(c).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "`databases.shop.pool_size`: {}:2: expected a whole number",
            inc.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// PgBouncer's options: -V, -d without a pidfile, an unknown option (-R: tests/it/online_restart.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_options() {
    let mut c = pgheal();
    c.arg("-V");
    let (code, stdout, _) = run(c).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout.trim(),
        format!("pgheal {}", env!("CARGO_PKG_VERSION"))
    );

    let dir = Dir::new();
    let ini = dir.write(
        "pgbouncer.ini",
        "[pgbouncer]\nlisten_addr = 127.0.0.1\nauth_type = trust\n[databases]\nd = host=127.0.0.1\n",
    );
    let mut c = pgheal();
    c.arg("-d").arg(&ini);
    let (code, _, stderr) = run(c).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("`pidfile`"), "{stderr}");

    let mut c = pgheal();
    c.args(["--config", "a.toml"]).arg(&ini);
    let (code, _, stderr) = run(c).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("give the configuration file once"),
        "{stderr}"
    );
}

/// Kills a detached pgheal when a test fails before stopping it.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn running(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        })
}

/// `-d`: the command returns 0 once the detached pgheal is listening; it writes the pidfile,
/// logs to the logfile only, refuses a second start on the same pidfile, and removes the
/// pidfile when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_mode_with_pidfile_and_logfile() {
    let dir = Dir::new();
    let pg = start_pg();
    let port = free_port();
    let pidfile = dir.0.join("pgheal.pid");
    let logfile = dir.0.join("pgheal.log");
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\n{DB} = host=127.0.0.1 port={} user={USER} password={PASSWORD}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\npidfile = {}\nlogfile = {}\n",
            pg.port(),
            pidfile.display(),
            logfile.display()
        ),
    );
    let mut c = pgheal();
    c.arg("-d").arg(&ini);
    let (code, stdout, stderr) = run(c).await;
    assert_eq!(code, Some(0), "stdout: {stdout} stderr: {stderr}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("the pidfile is written before -d returns")
        .trim()
        .parse()
        .expect("a pid");
    let mut guard = KillOnDrop(Some(pid));
    assert!(running(pid));

    // Listening as soon as -d returned: no retry needed.
    let client = connect(&format!("postgres://{USER}@127.0.0.1:{port}/{DB}")).await;
    assert_eq!(whoami(&client).await, (DB.to_owned(), USER.to_owned()));
    drop(client);

    // A second instance with the same pidfile refuses to start.
    let mut c = pgheal();
    c.arg(&ini);
    let (code, _, stderr) = run(c).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is running"), "{stderr}");

    sigterm(pid as u32);
    let gone = eventually(Duration::from_secs(30), || async {
        !running(pid) && !pidfile.exists()
    })
    .await;
    assert!(gone, "pgheal -d did not stop and remove its pidfile");
    guard.0 = None;
    let log = std::fs::read_to_string(&logfile).expect("read the logfile");
    assert!(log.contains("pgheal is accepting clients"), "{log}");
    assert!(log.contains("SIGTERM: shutting down"), "{log}");

    // A start that fails in the background makes -d fail, with the reason.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port();
    let ini = dir.write(
        "busy.ini",
        &format!(
            "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {busy_port}\nauth_type = trust\npidfile = {}\n",
            pidfile.display()
        ),
    );
    let mut c = pgheal();
    c.arg("-d").arg(&ini);
    let (code, _, stderr) = run(c).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot start"), "{stderr}");
    assert!(!pidfile.exists());
}

/// PgBouncer's systemd unit says `Type=notify`: pgheal sends READY=1 once listening and
/// STOPPING=1 on SIGTERM. SIGHUP (the unit's ExecReload) does not stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_and_sighup() {
    use std::os::unix::net::UnixDatagram;
    let dir = Dir::new();
    let sock_path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let port = free_port();
    let ini = dir.write(
        "pgbouncer.ini",
        &format!("[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n[databases]\nd = host=127.0.0.1\n"),
    );
    let mut c = pgheal();
    c.arg(&ini).env("NOTIFY_SOCKET", &sock_path);
    let (mut child, stderr) = spawn_logging(c);
    let sock = std::sync::Arc::new(sock);
    let recv = |sock: std::sync::Arc<UnixDatagram>| async move {
        tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 128];
            let n = sock.recv(&mut buf).expect("a notification within 20 s");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .await
        .expect("join")
    };
    assert_eq!(recv(sock.clone()).await, "READY=1");
    // Listening by then.
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("listening once READY=1 is sent");

    let pid = child.id().expect("pid").to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill -HUP");
    // Both signals pending at once are taken in either order: give the SIGHUP time to be
    // handled first, so the log can show it (the exit code proves it did not kill pgheal).
    tokio::time::sleep(Duration::from_secs(1)).await;
    sigterm(child.id().expect("pid"));
    assert_eq!(recv(sock).await, "STOPPING=1");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "SIGHUP must not kill pgheal");
    let log = stderr.await.expect("stderr");
    assert!(log.contains("SIGHUP"), "{log}");
}

/// `-u USER` switches the process to that OS user once listening (as root); started as anyone
/// else, it is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_user_after_binding() {
    let dir = Dir::new();
    let port = free_port();
    let ini = dir.write(
        "pgbouncer.ini",
        &format!("[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n[databases]\nd = host=127.0.0.1\n"),
    );
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    let mut c = pgheal();
    c.args(["-u", "postgres"]).arg(&ini);
    if !root {
        let (code, _, stderr) = run(c).await;
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("only root can"), "{stderr}");
        return;
    }
    let (mut child, _stderr) = spawn_logging(c);
    let pid = child.id().expect("pid");
    let postgres_uid = std::fs::read_to_string("/etc/passwd")
        .expect("passwd")
        .lines()
        .find_map(|l| {
            l.strip_prefix("postgres:")
                .and_then(|r| r.split(':').nth(1))
                .map(str::to_owned)
        })
        .expect("a postgres OS user (installed with PostgreSQL)");
    let switched = eventually(Duration::from_secs(20), || async {
        std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .is_some_and(|l| l.split_whitespace().skip(1).all(|id| id == postgres_uid))
        })
    })
    .await;
    assert!(switched, "pgheal did not switch to the postgres user");
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("still listening");
    sigterm(pid);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}
