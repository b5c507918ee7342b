//! Online restart (`pgheal -R`, PgBouncer's contract): a new process takes the listening
//! sockets and the idle clients of the running one. Under a write load of prepared-statement
//! transactions no client sees an error, every acknowledged row is stored once, and an old
//! cancel key cancels through the new process; without a running process `-R` boots
//! normally; a session-pooled client inside a transaction finishes on the old process.

use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bin::pgheal_cmd;
use common::certs::Dir;
use common::*;

/// A pgbouncer.ini in transaction pooling with a Unix socket in `dir`, and a session-pooled
/// database `sessdb`.
fn ini(pg: &pgheal::cluster::TempCluster, dir: &Dir, port: u16) -> std::path::PathBuf {
    let pg_port = pg.port();
    let userlist = dir.write("userlist.txt", &format!("\"{USER}\" \"{PASSWORD}\"\n"));
    dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\n\
             {DB} = host=127.0.0.1 port={pg_port} dbname={DB} user={USER} password={PASSWORD}\n\
             sessdb = host=127.0.0.1 port={pg_port} dbname={DB} user={USER} password={PASSWORD} pool_mode=session\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir = {}\n\
             auth_type = md5\n\
             auth_file = {}\n\
             pool_mode = transaction\n\
             default_pool_size = 10\n\
             shutdown_timeout = 60\n",
            dir.0.display(),
            userlist.display()
        ),
    )
}

/// The inode of the takeover socket file (which process made it).
fn takeover_ino(dir: &Dir, port: u16) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir.0.join(format!(".s.PGHEAL.{port}")))
        .ok()
        .map(|m| m.ino())
}

fn tcp_url(port: u16, db: &str) -> String {
    format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}")
}

fn unix_url(dir: &Dir, port: u16) -> String {
    format!(
        "host={} port={port} user={USER} password={PASSWORD} dbname={DB}",
        dir.0.display()
    )
}

async fn start_pgheal(
    args: &[&std::ffi::OsStr],
    port: u16,
) -> (tokio::process::Child, tokio::task::JoinHandle<String>) {
    let mut c = pgheal_cmd();
    c.args(args);
    let (child, log) = spawn_logging(c);
    let up = eventually(Duration::from_secs(20), || async {
        try_connect(&tcp_url(port, DB)).await.is_ok()
    })
    .await;
    assert!(up, "pgheal did not start accepting on port {port}");
    (child, log)
}

/// Starts `pgheal -R` with `ini` and waits for `old` to hand over and exit cleanly; the new
/// process and its log.
async fn reboot(
    ini: &std::path::Path,
    old: &mut tokio::process::Child,
) -> (tokio::process::Child, tokio::task::JoinHandle<String>) {
    let mut c = pgheal_cmd();
    c.arg("-R").arg(ini);
    let new = spawn_logging(c);
    let status = tokio::time::timeout(Duration::from_secs(40), old.wait())
        .await
        .expect("the old process exits once its clients moved")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    new
}

/// Stops the new process; its log must say it took over from the old one.
async fn stop_new_and_check_it_took_over(
    mut new: tokio::process::Child,
    new_log: tokio::task::JoinHandle<String>,
) {
    let _ = new.start_kill();
    let log = tokio::time::timeout(Duration::from_secs(10), new_log)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    assert!(
        log.contains("online restart"),
        "the new process says it took over:\n{log}"
    );
}

/// What the load's workers report.
#[derive(Default)]
struct Outcome {
    acked: Vec<i64>,
    errors: Vec<String>,
}

/// A worker: write transactions with a prepared INSERT until `stop`.
async fn worker(
    client: tokio_postgres::Client,
    n: i64,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Outcome>>,
) {
    let insert = match client
        .prepare("INSERT INTO restart_rows (id, worker) VALUES ($1, $2)")
        .await
    {
        Ok(s) => s,
        Err(e) => {
            out.lock().unwrap().errors.push(format!("prepare: {e}"));
            return;
        }
    };
    let mut i = 0i64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let id = n * 1_000_000 + i;
        let r = async {
            client.batch_execute("BEGIN").await?;
            client.execute(&insert, &[&id, &(n as i32)]).await?;
            client.batch_execute("COMMIT").await
        }
        .await;
        match r {
            Ok(()) => out.lock().unwrap().acked.push(id),
            Err(e) => {
                out.lock()
                    .unwrap()
                    .errors
                    .push(format!("worker {n}, row {id}: {e:?}"));
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_load_moves_every_client_without_an_error() {
    let pg = start_pg();
    let direct = connect(&direct_url(&pg)).await;
    direct
        .batch_execute("CREATE TABLE restart_rows (id bigint PRIMARY KEY, worker int NOT NULL)")
        .await
        .unwrap();
    let dir = Dir::new("restart-load");
    let port = free_port();
    let ini = ini(&pg, &dir, port);
    let (mut old, old_log) = start_pgheal(&[ini.as_os_str()], port).await;

    // 20 clients, half of them on the Unix socket.
    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Mutex::new(Outcome::default()));
    let mut workers = Vec::new();
    for n in 0..20i64 {
        let client = if n % 2 == 0 {
            connect(&tcp_url(port, DB)).await
        } else {
            connect(&unix_url(&dir, port)).await
        };
        workers.push(tokio::spawn(worker(client, n, stop.clone(), out.clone())));
    }
    // A client whose cancel key was issued by the old process.
    let sleeper = connect(&tcp_url(port, DB)).await;
    sleeper.simple_query("SELECT 1").await.unwrap();
    let cancel = sleeper.cancel_token();
    let loaded = eventually(Duration::from_secs(20), || async {
        out.lock().unwrap().acked.len() >= 200
    })
    .await;
    assert!(loaded, "the load runs: {:?}", out.lock().unwrap().errors);

    let (mut new, new_log) = reboot(&ini, &mut old).await;
    let at_exit = out.lock().unwrap().acked.len();
    // The old process is gone: whatever answers now is the new one.
    let more = eventually(Duration::from_secs(20), || async {
        out.lock().unwrap().acked.len() >= at_exit + 400
    })
    .await;
    if !more {
        let errors = out.lock().unwrap().errors.clone();
        let log = old_log.await.unwrap_or_default();
        panic!("the clients go on through the new process: {errors:?}\nold log:\n{log}");
    }
    assert!(new.try_wait().unwrap().is_none(), "the new process runs");
    let fresh = connect(&tcp_url(port, DB)).await;
    fresh.simple_query("SELECT 1").await.expect("a new client");

    // The old cancel key cancels through the new process.
    let sleeping = tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(30)").await });
    let cancelled = eventually(Duration::from_secs(10), || async {
        let active = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        active == 1
    })
    .await;
    assert!(cancelled, "the sleep runs");
    cancel
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("the cancel request is sent");
    let err = tokio::time::timeout(Duration::from_secs(10), sleeping)
        .await
        .expect("the sleep is cancelled")
        .unwrap()
        .expect_err("cancelled");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err:?}");

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .expect("the workers stop")
            .unwrap();
    }
    let (acked_list, errors) = {
        let out = out.lock().unwrap();
        (out.acked.clone(), out.errors.clone())
    };
    assert!(errors.is_empty(), "client errors: {errors:?}");
    let rows: Vec<i64> = direct
        .query("SELECT id FROM restart_rows", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stored: HashSet<i64> = rows.iter().copied().collect();
    let acked: HashSet<i64> = acked_list.iter().copied().collect();
    assert_eq!(acked.len(), acked_list.len(), "no row acknowledged twice");
    assert_eq!(
        stored, acked,
        "every acknowledged row is stored, and nothing else"
    );
    stop_new_and_check_it_took_over(new, new_log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_without_a_running_process_boots_normally() {
    let pg = start_pg();
    let dir = Dir::new("restart-alone");
    let port = free_port();
    let ini = ini(&pg, &dir, port);
    let (_p, _log) = start_pgheal(&["-R".as_ref(), ini.as_os_str()], port).await;
    let c = connect(&unix_url(&dir, port)).await;
    let rows = c.simple_query("SELECT 1").await.expect("a query");
    assert!(!rows.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_pooled_transaction_finishes_on_the_old_process() {
    let pg = start_pg();
    let direct = connect(&direct_url(&pg)).await;
    direct
        .batch_execute("CREATE TABLE restart_session (v int)")
        .await
        .unwrap();
    let dir = Dir::new("restart-session");
    let port = free_port();
    let ini = ini(&pg, &dir, port);
    let (mut old, _old_log) = start_pgheal(&[ini.as_os_str()], port).await;
    let (session, conn) = connect_watched(&tcp_url(port, "sessdb")).await;
    session
        .batch_execute("BEGIN; INSERT INTO restart_session VALUES (1)")
        .await
        .unwrap();
    let backend = backend_pid(&session).await;
    let old_ino = takeover_ino(&dir, port);
    assert!(
        old_ino.is_some(),
        "the old process listens on its takeover socket"
    );

    let (_new, _new_log) = {
        let mut c = pgheal_cmd();
        c.arg("-R").arg(&ini);
        spawn_logging(c)
    };
    // The new process serves once it took the listeners over (it then makes the takeover
    // socket its own: a new file), while the old one keeps the session.
    let served = eventually(Duration::from_secs(20), || async {
        if takeover_ino(&dir, port) == old_ino {
            return false;
        }
        let Ok(c) = try_connect(&tcp_url(port, DB)).await else {
            return false;
        };
        c.query_one("SELECT count(*) FROM restart_session", &[])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 0)
    })
    .await;
    assert!(served, "the new process serves beside the old one");
    assert!(
        old.try_wait().unwrap().is_none(),
        "the old process waits for its session"
    );
    session
        .batch_execute("INSERT INTO restart_session VALUES (2); COMMIT")
        .await
        .expect("the transaction finishes on the old process");
    assert_eq!(
        backend_pid(&session).await,
        backend,
        "the same server connection"
    );
    drop(session);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    let status = tokio::time::timeout(Duration::from_secs(30), old.wait())
        .await
        .expect("the old process exits once its last client left")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let n: i64 = direct
        .query_one("SELECT count(*) FROM restart_session", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "both rows committed");
}

/// The systemd recipe of the README: `Type=notify`, `NotifyAccess=all`, `ExecReload=pgheal -R
/// -d <ini>` (the unit's pidfile). The new process, detached, tells systemd it is the main
/// process now (`MAINPID=` with `READY=1`); the old one exits without `STOPPING=1`, which would
/// tell systemd the service is going away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_reload_by_reboot_hands_the_main_pid_over() {
    use std::os::unix::net::UnixDatagram;
    let pg = start_pg();
    let dir = Dir::new("restart-systemd");
    let port = free_port();
    let ini = ini(&pg, &dir, port);
    let pidfile = dir.0.join("pgheal.pid");
    let text = std::fs::read_to_string(&ini).unwrap();
    let ini = dir.write(
        "pgbouncer.ini",
        &text.replace(
            "[pgbouncer]\n",
            &format!("[pgbouncer]\npidfile = {}\n", pidfile.display()),
        ),
    );
    let sock_path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let sock = Arc::new(sock);
    let recv = |sock: Arc<UnixDatagram>| async move {
        tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 256];
            sock.recv(&mut buf)
                .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .await
        .expect("join")
    };
    let mut c = pgheal_cmd();
    c.arg(&ini).env("NOTIFY_SOCKET", &sock_path);
    let (mut old, _old_log) = spawn_logging(c);
    assert_eq!(recv(sock.clone()).await.expect("READY=1"), "READY=1");
    let client = connect(&tcp_url(port, DB)).await;
    client.simple_query("SELECT 1").await.unwrap();

    let mut c = pgheal_cmd();
    c.args(["-R", "-d"])
        .arg(&ini)
        .env("NOTIFY_SOCKET", &sock_path);
    let (mut reload, reload_log) = spawn_logging(c);
    let status = tokio::time::timeout(Duration::from_secs(30), reload.wait())
        .await
        .expect("ExecReload returns once the new process is ready")
        .unwrap();
    if status.code() != Some(0) {
        let log = reload_log.await.unwrap_or_default();
        panic!("pgheal -R -d failed ({status}):\n{log}");
    }
    let new_pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("the new process's pidfile")
        .trim()
        .parse()
        .expect("a pid");
    let _kill = KillPid(new_pid);
    assert_eq!(
        recv(sock.clone()).await.expect("the new process notifies"),
        format!("MAINPID={new_pid}\nREADY=1")
    );
    let status = tokio::time::timeout(Duration::from_secs(30), old.wait())
        .await
        .expect("the old process exits")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    client
        .simple_query("SELECT 1")
        .await
        .expect("the client goes on through the new process");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    if let Ok(m) = recv(sock).await {
        panic!("nothing more is sent to systemd, got {m:?}");
    }
}

/// Ends a detached pgheal when the test ends.
struct KillPid(u32);

impl Drop for KillPid {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-QUIT", &self.0.to_string()])
            .status();
    }
}

/// The judging run: pgbench's write transactions (`-M prepared`, 8 clients) through
/// pgheal while `pgheal -R` replaces the process. pgbench reports no failed transaction, every
/// transaction it counted left exactly one row in `pgbench_history`, and the old process has
/// handed over and exited before pgbench ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_through_a_reboot_without_a_failed_transaction() {
    use common::pgbench::{assert_report, init, pgbench};

    const CLIENTS: u32 = 8;
    const PER_CLIENT: u32 = 1500;
    let pg = start_pg();
    init(&pg).await;
    let direct = connect(&direct_url(&pg)).await;
    let dir = Dir::new("restart-pgbench");
    let port = free_port();
    let ini = ini(&pg, &dir, port);
    let (mut old, old_log) = start_pgheal(&[ini.as_os_str()], port).await;

    let mut bench = pgbench(&pg, port);
    bench.args([
        "-M",
        "prepared",
        "-n",
        "-c",
        &CLIENTS.to_string(),
        "-j",
        "2",
    ]);
    bench.args(["-t", &PER_CLIENT.to_string(), DB]);
    let bench = tokio::spawn(bench.output());

    let history = || async {
        direct
            .query_one("SELECT count(*) FROM pgbench_history", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let running = eventually(Duration::from_secs(30), || async { history().await >= 500 }).await;
    assert!(running, "pgbench runs through pgheal");

    let (new, new_log) = reboot(&ini, &mut old).await;
    let at_exit = history().await;
    let total = i64::from(CLIENTS * PER_CLIENT);

    let out = tokio::time::timeout(Duration::from_secs(120), bench)
        .await
        .expect("pgbench ends")
        .unwrap()
        .expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let log = old_log.await.unwrap_or_default();
        panic!(
            "pgbench failed ({}):\n{stdout}\n{stderr}\nold process log:\n{log}",
            out.status
        );
    }
    assert_report(
        &stdout,
        "prepared",
        CLIENTS * PER_CLIENT,
        "pgbench through a reboot",
    );
    assert!(
        at_exit < total,
        "the restart happened while pgbench ran ({at_exit} of {total} transactions done)"
    );
    assert_eq!(
        history().await,
        total,
        "each counted transaction stored one history row, none lost or doubled"
    );
    stop_new_and_check_it_took_over(new, new_log).await;
}
