//! The soak (issue 14, point 5): two pgheal **processes** (session and transaction pooling,
//! pools of 20) in front of one PostgreSQL, each with `PGHEAL_SOAK_CLIENTS` clients (default
//! 1,000) for `PGHEAL_SOAK_SECS` seconds (default 90 in the suite; `scripts/soak.sh 3600` is
//! the one-hour run), while a migrator changes the schema, clients vanish mid-batch, mid-COPY
//! and mid-transaction, backends are terminated every few seconds and the server is restarted.
//!
//! The run has two waves. The first (a fifth of the time, 10–120 s) brings every client in,
//! then they all leave: the RSS of each process once they are gone is the baseline. The second
//! wave has the server restarts (`PGHEAL_SOAK_RESTARTS`, default 1 below 5 minutes, else 2);
//! when its clients are gone too, the RSS is compared with the baseline.
//!
//! Clients per process: a tenth raw-protocol *vanishers* ([`soak::vanisher_loop`]), three
//! tenths *readers* with prepared statements that the migrations make stale (so pgheal heals),
//! the rest *writers* (autocommit INSERTs and transactions, into a table without a unique
//! constraint), and a canary ([`soak::canary_loop`]). In session pooling a client's session is
//! short and it rests between sessions (a thousand sessions share 20 server connections); in
//! transaction pooling it keeps its connection and pauses between operations ([`soak::Pace`]).
//!
//! Checked at the end, on real data and processes:
//! - both processes alive (the same PIDs, still serving a login and a query) and neither logged
//!   a panic;
//! - no operation took longer than [`soak::OP_LIMIT`] and every client task ended within 30 s
//!   of the end (otherwise: what it was doing);
//! - every acknowledged write is in `soak_ledger` exactly once with the id it was told, writes
//!   that failed before COMMIT are absent, uncertain ones present at most once, no row nobody
//!   wrote; `soak_vanish`, written only by clients that vanished before their write could
//!   commit, is empty;
//! - the canaries saw no error but those a fault may cause ([`soak::FAULT_SQLSTATES`]), and no
//!   client at all saw `0A000`, or any other error outside that list, or a wrong row;
//! - it was not vacuous: heals happened in each mode, backends were terminated, the server was
//!   restarted, clients vanished in all four ways, the canaries committed;
//! - no server connection is left busy or inside a transaction once the clients are gone;
//! - RSS flat: after the second wave, within [`RSS_SLACK`] of the baseline (see there why).
//!
//! A summary line (`soak: ...`) gives the figures `docs/stress.md` records.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::certs::Dir;
use common::load::{check_writes, env_or, ErrorTally, Rng, WriteLog};
use common::soak::{self, Doing, Pace, Role, RssSeries, Settings, Tally};
use common::*;
use pgheal::cluster::{ClusterOptions, TempCluster};

/// RSS after the second wave may exceed the baseline by a quarter plus 8 MiB. Why this much:
/// what a process keeps after its clients leave is allocator state (arenas, a trimmed heap
/// that is not returned page for page) and caches that reach their size early (statement
/// registries, the pools' connections, which are re-made after each restart); their size
/// varies by a few MiB between two quiet moments. A leak per client, per transaction or per
/// restart grows with the run: over the one-hour run it would go far past this; over 90 s a
/// leak of a few hundred bytes per transaction already does.
const RSS_SLACK: f64 = 1.25;
const RSS_SLACK_KIB: u64 = 8 * 1024;

/// Pool size of each process.
const POOL: usize = 20;

/// Readers per process that keep their session for minutes (see [`wave`]).
const LONG_READERS: usize = 4;

fn settings() -> Settings {
    let secs: u64 = env_or("PGHEAL_SOAK_SECS", 90);
    Settings {
        secs,
        clients: env_or("PGHEAL_SOAK_CLIENTS", 1000),
        migrate_every: Duration::from_millis(env_or("PGHEAL_SOAK_MIGRATE_MS", 1000)),
        kill_every: Duration::from_millis(env_or("PGHEAL_SOAK_KILL_MS", 3000)),
        restarts: env_or("PGHEAL_SOAK_RESTARTS", if secs < 300 { 1 } else { 2 }),
    }
}

/// Raise the soft limit of open files to `need` (or the hard limit); the pgheal processes
/// inherit it.
fn raise_fd_limit(need: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < need {
            lim.rlim_cur = need.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        lim.rlim_cur
    }
}

/// One pgheal process under test.
struct Proc {
    mode: &'static str,
    port: u16,
    metrics_port: u16,
    url: String,
    pid: u32,
    child: tokio::process::Child,
    log: tokio::task::JoinHandle<String>,
    tally: Arc<Tally>,
    canary_tally: Arc<Tally>,
    pace: Pace,
    /// Client numbers start here (writers' rows in `soak_ledger` are told apart by it).
    base: i32,
}

fn start_binary(pg: &TempCluster, dir: &Dir, mode: &'static str, clients: usize) -> Proc {
    let port = free_port();
    let metrics_port = free_port();
    let cfg = dir.write(
        &format!("{mode}.toml"),
        &format!(
            "[pgheal]\nlisten = \"127.0.0.1:{port}\"\npool_mode = \"{mode}\"\npool_size = {POOL}\n\
             max_client_conn = {}\nserver_login_retry = 1\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
             [databases.{DB}]\nurl = \"{}\"\n[users]\n{USER} = \"{PASSWORD}\"\n",
            clients * 2 + 100,
            pg.url(USER, PASSWORD, DB)
        ),
    );
    let mut c = common::bin::pgheal_cmd();
    c.arg("--config").arg(&cfg);
    let (child, log) = spawn_logging(c);
    let pid = child.id().expect("pgheal pid");
    let session = mode == "session";
    Proc {
        mode,
        port,
        metrics_port,
        url: format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}"),
        pid,
        child,
        log,
        tally: Arc::default(),
        canary_tally: Arc::default(),
        pace: if session {
            Pace::session()
        } else {
            Pace::transaction()
        },
        base: if session { 0 } else { 1_000_000 },
    }
}

/// A metric of a pgheal process: the sum of the samples of `name` whose line contains each of
/// `labels`.
async fn metric(p: &Proc, name: &str, labels: &[&str]) -> f64 {
    let addr = format!("127.0.0.1:{}", p.metrics_port).parse().unwrap();
    let (_, body) = metrics::http_get(addr, "/metrics").await;
    body.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// What the migrator and the fault injector did.
#[derive(Default)]
struct Faults {
    terminated: AtomicU64,
    restarts: AtomicU64,
    migrations: AtomicU64,
    /// Migrations that failed with an error no fault explains, and failed restarts.
    errors: Mutex<Vec<String>>,
    migration_faults: AtomicU64,
}

/// Largest suffix of added columns (PostgreSQL allows 1,600 columns, dropped ones included).
const MAX_ADDED: u32 = 1200;

/// Columns the migrator adds, at most, to each table and to the view that `SELECT *` reads
/// (`PGHEAL_SOAK_MAX_WIDTH`). Past it, the view's columns change order instead (dropped and
/// created again in one transaction), so that the load stays the same for as long as the run
/// lasts: rows and descriptions that grew a column every few seconds would make memory grow
/// with the run for a reason that is the schema's, not pgheal's (the one-hour run with no
/// bound reached 515 columns per object).
fn max_width() -> u32 {
    env_or("PGHEAL_SOAK_MAX_WIDTH", 30)
}

/// The view, with `extra` added columns, `id` and `name` in the order `swapped` says.
fn view_sql(extra: u32, swapped: bool) -> String {
    let extra: String = (1..=extra)
        .map(|i| format!(", NULL::int AS v_{i}"))
        .collect();
    let cols = if swapped { "name, id" } else { "id, name" };
    format!("SELECT {cols}{extra} FROM soak_items")
}

/// Schema changes as the superuser straight on the server, in rotation, until `until`.
async fn migrator(
    pg: Arc<TempCluster>,
    every: Duration,
    until: Instant,
    faults: Arc<Faults>,
    start_at: u32,
) {
    let width = max_width();
    let mut n = start_at;
    let mut conn: Option<tokio_postgres::Client> = None;
    while Instant::now() < until {
        tokio::time::sleep(every).await;
        let k = n / 7 + 1;
        let wide = k > width;
        let sql = match n % 7 {
            0 | 1 if wide => {
                // The view's id and name change places (and back at the next one): a new
                // result shape of the same width.
                format!(
                    "BEGIN; DROP VIEW soak_view; CREATE VIEW soak_view AS {}; \
                     ALTER VIEW soak_view OWNER TO app; COMMIT",
                    view_sql(width, n % 7 == 0)
                )
            }
            0 => format!("ALTER TABLE soak_items ADD COLUMN a_{k} int"),
            1 => format!("CREATE OR REPLACE VIEW soak_view AS {}", view_sql(k, false)),
            2 => format!("ALTER TABLE soak_accounts ADD COLUMN x_{k} int"),
            3 => format!("ALTER TABLE soak_accounts DROP COLUMN x_{k}"),
            4 => format!("ALTER TYPE soak_state ADD VALUE 's_{k}'"),
            5 => format!(
                "ALTER TABLE soak_accounts ALTER COLUMN spare TYPE {}",
                if k % 2 == 1 { "bigint" } else { "int" }
            ),
            _ if wide => format!("ALTER TYPE soak_state ADD VALUE 't_{k}'"),
            _ => format!("ALTER TABLE soak_ledger ADD COLUMN l_{k} int"),
        };
        if k > MAX_ADDED {
            break;
        }
        let c = match conn.as_ref() {
            Some(c) if !c.is_closed() => c,
            _ => match try_connect(&pg.superuser_url(DB)).await {
                Ok(c) => {
                    let _ = c.batch_execute("SET lock_timeout = '10s'").await;
                    conn.insert(c)
                }
                Err(_) => {
                    faults.migration_faults.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        match tokio::time::timeout(soak::OP_LIMIT, c.batch_execute(&sql)).await {
            Ok(Ok(())) => {
                n += 1;
                faults.migrations.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) if soak::fault_error(&common::load::describe(&e).0) => {
                // The server restarted under it: the same migration again.
                faults.migration_faults.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            Ok(Err(e)) => {
                faults
                    .errors
                    .lock()
                    .unwrap()
                    .push(format!("migration {sql}: {e}"));
                n += 1;
            }
            Err(_) => {
                faults.errors.lock().unwrap().push(format!(
                    "migration {sql} took more than {:?}",
                    soak::OP_LIMIT
                ));
                conn = None;
            }
        }
    }
}

/// Terminate 1–3 random backends of the clients' user every `every`; restart the server
/// (`pg_ctl restart -m fast`) at each of `restart_at`.
async fn fault_injector(
    pg: Arc<TempCluster>,
    every: Duration,
    mut restart_at: Vec<Instant>,
    until: Instant,
    faults: Arc<Faults>,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    let mut conn: Option<tokio_postgres::Client> = None;
    while Instant::now() < until {
        tokio::time::sleep(every).await;
        if restart_at.first().is_some_and(|t| Instant::now() >= *t) {
            restart_at.remove(0);
            conn = None;
            let p = pg.clone();
            match tokio::task::spawn_blocking(move || p.restart()).await {
                Ok(Ok(())) => {
                    faults.restarts.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => faults.errors.lock().unwrap().push(format!("restart: {e}")),
                Err(e) => faults.errors.lock().unwrap().push(format!("restart: {e}")),
            }
            continue;
        }
        let c = match conn.as_ref() {
            Some(c) if !c.is_closed() => c,
            _ => match try_connect(&pg.superuser_url(DB)).await {
                Ok(c) => conn.insert(c),
                Err(_) => continue,
            },
        };
        let k = 1 + rng.below(3) as i64;
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            c.query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM \
                 (SELECT pid FROM pg_stat_activity WHERE usename = 'app' ORDER BY random() LIMIT $1) s",
                &[&k],
            ),
        )
        .await;
        if let Ok(Ok(row)) = r {
            faults
                .terminated
                .fetch_add(row.get::<_, i64>(0) as u64, Ordering::Relaxed);
        } else {
            conn = None;
        }
    }
}

/// A spawned client task: who it is, what it is doing, its handle.
struct Task<T> {
    who: String,
    doing: Doing,
    handle: tokio::task::JoinHandle<T>,
}

fn spawn<T: Send + 'static>(
    tasks: &mut Vec<Task<T>>,
    who: String,
    f: impl FnOnce(Doing) -> tokio::task::JoinHandle<T>,
) {
    let doing = Doing::default();
    let handle = f(doing.clone());
    tasks.push(Task { who, doing, handle });
}

/// Wait for every task until `deadline`; a task not finished by then is a hang, named with
/// what it was doing.
async fn join_all<T>(
    tasks: Vec<Task<T>>,
    deadline: Instant,
    hangs: &mut Vec<String>,
) -> Vec<(String, T)> {
    let mut out = Vec::new();
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, t.handle).await {
            Ok(Ok(v)) => out.push((t.who, v)),
            Ok(Err(e)) => hangs.push(format!("{} panicked: {e}", t.who)),
            Err(_) => {
                hangs.push(format!(
                    "{} did not end 30 s after the end: {}",
                    t.who,
                    t.doing.get()
                ));
            }
        }
    }
    out
}

/// What a canary task returns: its number, its writes, its unexpected errors.
type CanaryEnd = (i32, (WriteLog, Vec<String>));

/// One wave: every client of both processes, the migrator and the faults, for `secs`.
#[allow(clippy::too_many_arguments)]
async fn wave(
    pg: &Arc<TempCluster>,
    procs: &[Proc],
    s: &Settings,
    no: i32,
    secs: u64,
    restarts: u32,
    faults: &Arc<Faults>,
    logs: &mut HashMap<i32, WriteLog>,
    hangs: &mut Vec<String>,
    canary_unexpected: &mut Vec<String>,
) {
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let seq0 = no * 100_000_000;
    let vanishers = (s.clients / 10).max(1);
    let readers = (s.clients * 3 / 10).max(1);
    let writers = s.clients.saturating_sub(vanishers + readers).max(1);
    let mut clients: Vec<Task<(i32, WriteLog)>> = Vec::new();
    let mut others: Vec<Task<()>> = Vec::new();
    let mut canaries: Vec<Task<CanaryEnd>> = Vec::new();
    for p in procs {
        for i in 0..writers + readers {
            let (role, no_) = if i < writers {
                (Role::Writer, p.base + i as i32)
            } else {
                (Role::Reader, p.base + i as i32)
            };
            // In session pooling, a few readers keep their sessions (and so their prepared
            // statements) for minutes, as in transaction pooling: the migrations make those
            // statements stale, which short sessions rarely see.
            let pace = if role == Role::Reader && i < writers + LONG_READERS {
                Pace::transaction()
            } else {
                p.pace
            };
            let (url, tally) = (p.url.clone(), p.tally.clone());
            spawn(&mut clients, format!("{} {role:?} {no_}", p.mode), |d| {
                tokio::spawn(async move {
                    (
                        no_,
                        soak::client_loop(url, role, no_, seq0, pace, until, tally, d).await,
                    )
                })
            });
        }
        for i in 0..vanishers {
            let (port, tally) = (p.port, p.tally.clone());
            let n = p.base + i as i32;
            spawn(&mut others, format!("{} vanisher {n}", p.mode), |d| {
                tokio::spawn(soak::vanisher_loop(port, n, until, tally, d))
            });
        }
        let canary_no = if p.mode == "session" { -1 } else { -2 };
        let (url, tally) = (p.url.clone(), p.canary_tally.clone());
        spawn(&mut canaries, format!("{} canary", p.mode), |d| {
            tokio::spawn(async move {
                (
                    canary_no,
                    soak::canary_loop(url, canary_no, seq0, until, tally, d).await,
                )
            })
        });
    }
    let restart_at: Vec<Instant> = (1..=restarts)
        .map(|i| start + Duration::from_secs(secs * u64::from(i) / (u64::from(restarts) + 1)))
        .collect();
    let migrated = faults.migrations.load(Ordering::Relaxed) as u32;
    spawn(&mut others, "migrator".into(), |_| {
        tokio::spawn(migrator(
            pg.clone(),
            s.migrate_every,
            until,
            faults.clone(),
            migrated,
        ))
    });
    spawn(&mut others, "fault injector".into(), |_| {
        tokio::spawn(fault_injector(
            pg.clone(),
            s.kill_every,
            restart_at,
            until,
            faults.clone(),
            no as u64,
        ))
    });
    tokio::time::sleep_until(until.into()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for (_, (client, log)) in join_all(clients, deadline, hangs).await {
        soak::merge_logs(logs, client, log);
    }
    for (_, (client, (log, bad))) in join_all(canaries, deadline, hangs).await {
        soak::merge_logs(logs, client, log);
        canary_unexpected.extend(bad);
    }
    join_all(others, deadline, hangs).await;
}

/// Wait (at most 30 s) until neither process has a client, then a moment more for the
/// allocator to give memory back; the RSS of each process then.
async fn rss_when_idle(procs: &[Proc]) -> Vec<u64> {
    for p in procs {
        let idle = eventually(Duration::from_secs(30), || async {
            metric(p, "pgheal_client_connections", &[]).await == 0.0
        })
        .await;
        assert!(
            idle,
            "{}: clients still connected 30 s after the wave",
            p.mode
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    procs
        .iter()
        .map(|p| soak::rss_kib(p.pid).unwrap_or(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_both_modes() {
    let s = settings();
    let fds = raise_fd_limit(4 * s.clients as u64 + 1024);
    assert!(
        fds >= 2 * s.clients as u64 + 512,
        "open-file limit {fds} is too low for {} clients per process",
        s.clients
    );
    let pg = Arc::new(start_pg_with(ClusterOptions {
        max_connections: 200,
        ..Default::default()
    }));
    admin(&pg, soak::SCHEMA);
    let dir = Dir::new("soak");
    let mut procs: Vec<Proc> = ["session", "transaction"]
        .into_iter()
        .map(|m| start_binary(&pg, &dir, m, s.clients))
        .collect();
    for p in &procs {
        let url = p.url.clone();
        assert!(
            eventually(Duration::from_secs(20), || async {
                try_connect(&url).await.is_ok()
            })
            .await,
            "pgheal ({}) accepts clients",
            p.mode
        );
    }
    let t0 = Instant::now();
    let series = Arc::new(Mutex::new(RssSeries::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(soak::sample_rss(
        procs.iter().map(|p| p.pid).collect(),
        t0,
        series.clone(),
        stop.clone(),
    ));

    let faults = Arc::new(Faults::default());
    let mut logs = HashMap::new();
    let mut hangs = Vec::new();
    let mut canary_unexpected = Vec::new();
    let first = (s.secs / 5).clamp(10, 120).min(s.secs);
    wave(
        &pg,
        &procs,
        &s,
        0,
        first,
        0,
        &faults,
        &mut logs,
        &mut hangs,
        &mut canary_unexpected,
    )
    .await;
    let baseline = rss_when_idle(&procs).await;
    let second = s.secs.saturating_sub(first).max(10);
    wave(
        &pg,
        &procs,
        &s,
        1,
        second,
        s.restarts,
        &faults,
        &mut logs,
        &mut hangs,
        &mut canary_unexpected,
    )
    .await;
    let last = rss_when_idle(&procs).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;

    // The figures.
    let series = std::mem::take(&mut *series.lock().unwrap());
    let mut summary = format!(
        "soak: {} s, {} clients per process, pool {POOL}; {} migrations, {} backends terminated, {} server restarts",
        t0.elapsed().as_secs(),
        s.clients,
        faults.migrations.load(Ordering::Relaxed),
        faults.terminated.load(Ordering::Relaxed),
        faults.restarts.load(Ordering::Relaxed),
    );
    let mut heals = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        let healed = metric(p, "pgheal_heal_events_total", &["outcome=\"healed\""]).await
            + metric(p, "pgheal_heal_events_total", &["outcome=\"projected\""]).await;
        let refused = metric(p, "pgheal_heal_events_total", &["outcome=\"refused\""]).await;
        heals.push(healed);
        let t = &p.tally;
        summary.push_str(&format!(
            "\n  {}: {} write transactions, {} reads, {} sessions, {} heals ({refused} refused), \
             {} logins refused, vanished {} (batch {}, half message {}, COPY {}, in transaction {}); \
             RSS MiB first wave idle {:.1}, peak {:.1}, last idle {:.1}",
            p.mode,
            t.transactions.load(Ordering::Relaxed) + p.canary_tally.transactions.load(Ordering::Relaxed),
            t.reads.load(Ordering::Relaxed),
            t.sessions.load(Ordering::Relaxed),
            healed,
            t.logins_refused.load(Ordering::Relaxed),
            t.vanished(),
            t.vanished_batch.load(Ordering::Relaxed),
            t.vanished_half.load(Ordering::Relaxed),
            t.vanished_copy.load(Ordering::Relaxed),
            t.vanished_in_tx.load(Ordering::Relaxed),
            baseline[i] as f64 / 1024.0,
            series.peak(i) as f64 / 1024.0,
            last[i] as f64 / 1024.0,
        ));
        let errors = t.errors.lock().unwrap();
        summary.push_str(&format!(
            "\n  {} errors seen by clients: {:?}",
            p.mode,
            soak::error_lines(&errors)
        ));
        summary.push_str(&format!(
            "\n  {} canary errors: {:?}",
            p.mode,
            soak::error_lines(&p.canary_tally.errors.lock().unwrap())
        ));
    }
    summary.push_str(&format!(
        "\n  RSS (MiB, session/transaction): {}",
        series.summary(40)
    ));
    eprintln!("{summary}");

    // The checks.
    let mut failures: Vec<String> = Vec::new();
    failures.extend(hangs);
    failures.extend(canary_unexpected);
    failures.extend(faults.errors.lock().unwrap().iter().cloned());
    for p in &procs {
        failures.extend(p.tally.stalls.lock().unwrap().iter().cloned());
        failures.extend(p.canary_tally.stalls.lock().unwrap().iter().cloned());
        failures.extend(p.tally.wrong_rows.lock().unwrap().iter().cloned());
        let errors: ErrorTally = p.tally.errors.lock().unwrap().clone();
        for ((class, code), n) in &errors.counts {
            if !soak::fault_error(code) {
                let samples = errors.samples.get(&(class.clone(), code.clone()));
                failures.push(format!("{}: {n} × {class} {code}: {samples:?}", p.mode));
            }
        }
    }
    let check = admin_client(&pg).await;
    let writers: Vec<(i32, &WriteLog)> = logs.iter().map(|(c, l)| (*c, l)).collect();
    let w = check_writes(&check, "soak_ledger", &writers).await;
    eprintln!(
        "soak writes: {} acknowledged ({} confirmed), {} failed, {} uncertain ({} present)",
        w.acked, w.confirmed, w.failed, w.uncertain, w.uncertain_present
    );
    for f in w.failures() {
        failures.push(format!("soak_ledger: {f}; {:?}", w.samples));
    }
    let vanish: Vec<String> = check
        .query("SELECT kind, n::text FROM soak_vanish LIMIT 10", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    if !vanish.is_empty() {
        failures.push(format!(
            "writes of vanished clients were committed: {vanish:?}"
        ));
    }
    let settled = eventually(Duration::from_secs(30), || async {
        check
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
                 AND state IN ('idle in transaction', 'idle in transaction (aborted)', 'active')",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0) == 0)
            .unwrap_or(false)
    })
    .await;
    if !settled {
        failures.push(
            "a server connection stayed busy or in a transaction after the clients left".into(),
        );
    }
    // Not vacuous.
    for (i, p) in procs.iter().enumerate() {
        let t = &p.tally;
        if heals[i] == 0.0 {
            failures.push(format!("{}: no heal happened", p.mode));
        }
        for (what, n) in [
            ("write transactions", t.transactions.load(Ordering::Relaxed)),
            ("reads", t.reads.load(Ordering::Relaxed)),
            (
                "canary transactions",
                p.canary_tally.transactions.load(Ordering::Relaxed),
            ),
            ("vanished batches", t.vanished_batch.load(Ordering::Relaxed)),
            (
                "vanished half messages",
                t.vanished_half.load(Ordering::Relaxed),
            ),
            ("vanished COPYs", t.vanished_copy.load(Ordering::Relaxed)),
            (
                "vanished transactions",
                t.vanished_in_tx.load(Ordering::Relaxed),
            ),
        ] {
            if n == 0 {
                failures.push(format!("{}: no {what}", p.mode));
            }
        }
        let bound = (baseline[i] as f64 * RSS_SLACK) as u64 + RSS_SLACK_KIB;
        if last[i] > bound {
            failures.push(format!(
                "{}: RSS grew from {} KiB after the first wave to {} KiB after the second (bound {bound})",
                p.mode, baseline[i], last[i]
            ));
        }
    }
    if faults.terminated.load(Ordering::Relaxed) == 0 {
        failures.push("no backend was terminated".into());
    }
    if u64::from(s.restarts) != faults.restarts.load(Ordering::Relaxed) {
        failures.push("the server was not restarted as planned".into());
    }
    // Alive: the same processes, still serving.
    for p in procs.iter_mut() {
        if let Ok(Some(status)) = p.child.try_wait() {
            failures.push(format!(
                "the {} pgheal process (pid {}) exited: {status}",
                p.mode, p.pid
            ));
            continue;
        }
        let ok = tokio::time::timeout(Duration::from_secs(20), async {
            let c = try_connect(&p.url).await?;
            c.query_one("SELECT 1", &[]).await
        })
        .await;
        if !matches!(ok, Ok(Ok(_))) {
            failures.push(format!(
                "the {} pgheal does not serve after the soak: {ok:?}",
                p.mode
            ));
        }
    }
    for p in procs {
        let mut child = p.child;
        let _ = child.start_kill();
        let _ = child.wait().await;
        let log = tokio::time::timeout(Duration::from_secs(10), p.log)
            .await
            .map(|l| l.unwrap_or_default())
            .unwrap_or_default();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("forwarded a cached-plan error"))
            .take(5)
            .collect();
        if !refusals.is_empty() {
            eprintln!(
                "{} pgheal, cached-plan errors forwarded:\n{}",
                p.mode,
                refusals.join("\n")
            );
        }
        if log.contains("panicked") {
            let at = log.find("panicked").unwrap();
            failures.push(format!(
                "the {} pgheal logged a panic: {}",
                p.mode,
                &log[at.saturating_sub(500)..(at + 1500).min(log.len())]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "soak failed:\n{}\n{summary}",
        failures.join("\n")
    );
}
