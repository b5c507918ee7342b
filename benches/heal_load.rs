//! Healing under load: N tokio-postgres clients with cached prepared statements run through
//! pgheal while a migrator adds a column to both tables every few seconds, straight on the
//! server. Each mode runs twice, without and with migrations, and the program prints the
//! throughput, the client-visible errors (which must be 0), pgheal's heal counters and the
//! write-integrity checks (every acknowledged write present exactly once, nothing written that
//! the client was told failed), then exits non-zero if an invariant failed.
//!
//! `cargo bench --bench heal_load` runs the full benchmark. Environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `HEAL_LOAD_CLIENTS` | 16 | client connections |
//! | `HEAL_LOAD_SECONDS` | 20 | seconds per run |
//! | `HEAL_LOAD_MIGRATE_EVERY_MS` | 2000 | pause between two migrations |
//! | `HEAL_LOAD_MODES` | `session,transaction` | pool modes to run |
//! | `HEAL_LOAD_TX_POOL_SIZE` | 4 | server connections in transaction mode (session mode: one per client) |
//! | `HEAL_LOAD_BASELINE` | 1 | 0 skips the runs without migrations |
//! | `HEAL_LOAD_ROUNDS` | 1 | rounds; each round runs every mode without and with migrations (which goes first alternates), so drift of a busy machine hits both alike; the summary gives medians |
//! | `HEAL_LOAD_WARMUP_SECONDS` | 5 (smoke: 0) | an untimed run per mode first (a fresh cluster runs at half speed for its first seconds) |
//! | `HEAL_LOAD_NO_HEAL` | 0 | 1 runs pgheal with `--no-heal` (a plain pooler): shows that the checks catch the errors |
//! | `RUST_LOG` | unset | pgheal's log filter (e.g. `pgheal=info` shows every heal) |
//!
//! Without `--bench` in argv (`cargo test --all-targets` runs bench targets as tests) it does a
//! smoke run instead: 2 clients, 3 seconds, transaction mode, a migration every 500 ms, no
//! baseline; the same invariants are checked, so it doubles as a stress test.
//!
//! The workload, per client, alternating:
//! - `SELECT * FROM orders WHERE id = $1` on a random existing id: exactly one row, in the shape
//!   the client prepared (its contract: `id int, total bigint, note text`), checked both by
//!   tokio-postgres (it rejects a DataRow whose field count differs from the statement's) and
//!   here from the raw DataRow size, and with the values the row was created with;
//! - `INSERT INTO events(client, seq) VALUES ($1, $2) RETURNING *`: one row in the contract shape
//!   echoing `client` and `seq`; the acknowledged `(client, seq) → id` is recorded.
//!
//! Every statement is its own implicit transaction (Bind/Execute/Sync), and "transactions" in
//! the table counts both kinds. The migrator runs `ALTER TABLE orders ADD COLUMN c_<k> int` and
//! `ALTER TABLE events ADD COLUMN e_<k> int` as the superuser on a direct connection, so pgheal
//! does not see the DDL: every cached statement goes stale behind its back.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgheal::cluster::TempCluster;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::config::validate::build;
use pgheal::heal::Outcome;
use tokio::sync::Barrier;
use tokio_postgres::{Client, NoTls, Row, Statement};

#[path = "../tests/it/common/load.rs"]
mod load;
use load::{check_writes, env_or, runtime, ErrorTally, Mode, Rng, WriteCheck, WriteLog, SAMPLES};

const USER: &str = "app";
const PASSWORD: &str = "secret";
const DB: &str = "appdb";
/// Rows in `orders`.
const ORDERS: i32 = 1000;
const SELECT_SQL: &str = "SELECT * FROM orders WHERE id = $1";
const INSERT_SQL: &str = "INSERT INTO events(client, seq) VALUES ($1, $2) RETURNING *";

#[derive(Debug, Clone)]
struct Settings {
    smoke: bool,
    clients: usize,
    seconds: f64,
    migrate_every: Duration,
    modes: Vec<Mode>,
    tx_pool_size: usize,
    baseline: bool,
    no_heal: bool,
    rounds: usize,
    warmup: f64,
}

impl Settings {
    fn from_env() -> Settings {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let (clients, seconds, every_ms, modes, baseline) = if smoke {
            (2, 3.0, 500, "transaction", false)
        } else {
            (16, 20.0, 2000, "session,transaction", true)
        };
        let modes: String = env_or("HEAL_LOAD_MODES", modes.to_string());
        let modes = modes
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| match m {
                "session" => Mode::Session,
                "transaction" => Mode::Transaction,
                other => panic!("HEAL_LOAD_MODES: unknown pool mode {other:?}"),
            })
            .collect::<Vec<_>>();
        assert!(!modes.is_empty(), "HEAL_LOAD_MODES names no mode");
        let s = Settings {
            smoke,
            clients: env_or("HEAL_LOAD_CLIENTS", clients),
            seconds: env_or("HEAL_LOAD_SECONDS", seconds),
            migrate_every: Duration::from_millis(env_or("HEAL_LOAD_MIGRATE_EVERY_MS", every_ms)),
            modes,
            tx_pool_size: env_or("HEAL_LOAD_TX_POOL_SIZE", 4),
            baseline: env_or("HEAL_LOAD_BASELINE", u8::from(baseline)) != 0,
            no_heal: env_or("HEAL_LOAD_NO_HEAL", 0u8) != 0,
            rounds: env_or("HEAL_LOAD_ROUNDS", 1),
            warmup: env_or("HEAL_LOAD_WARMUP_SECONDS", if smoke { 0.0 } else { 5.0 }),
        };
        assert!(s.clients >= 1, "HEAL_LOAD_CLIENTS must be at least 1");
        assert!(
            s.seconds > 0.0 && s.seconds.is_finite(),
            "HEAL_LOAD_SECONDS must be > 0"
        );
        assert!(s.tx_pool_size >= 1, "HEAL_LOAD_TX_POOL_SIZE must be >= 1");
        assert!(s.rounds >= 1, "HEAL_LOAD_ROUNDS must be >= 1");
        s
    }

    fn pool_size(&self, mode: Mode) -> usize {
        match mode {
            Mode::Session => self.clients,
            Mode::Transaction => self.tx_pool_size,
        }
    }
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientStats {
    reads: u64,
    writes: u64,
    /// Microseconds of every completed statement.
    latencies_us: Vec<u32>,
    /// Errors by (statement, SQLSTATE or "driver").
    errors: ErrorTally,
    /// Rows whose raw DataRow does not have the shape of the statement's contract.
    bad_shapes: u64,
    /// Rows with the right shape but wrong values (or a wrong number of rows).
    bad_values: u64,
    bad_samples: Vec<String>,
    /// seq → id returned by `RETURNING *`; writes that failed or whose outcome is unknown.
    log: WriteLog,
}

impl ClientStats {
    fn error(&mut self, client: i32, stmt: &str, e: &tokio_postgres::Error, t: f64) {
        self.errors
            .record(stmt, e, || format!("client {client} at {t:.3}s"));
    }

    fn bad(&mut self, shape: bool, what: String) {
        if shape {
            self.bad_shapes += 1;
        } else {
            self.bad_values += 1;
        }
        if self.bad_samples.len() < SAMPLES {
            self.bad_samples.push(what);
        }
    }
}

/// Everything measured in one run.
#[derive(Debug, Default)]
struct RunResult {
    mode: &'static str,
    round: usize,
    /// Median, 99th percentile and maximum statement latency, ms.
    latency_ms: (f64, f64, f64),
    with_migrations: bool,
    migrations: u32,
    migrator_errors: Vec<String>,
    elapsed: f64,
    reads: u64,
    writes: u64,
    errors: ErrorTally,
    bad_shapes: u64,
    bad_values: u64,
    bad_samples: Vec<String>,
    healed: u64,
    projected: u64,
    refused: u64,
    forwarded_in_tx: u64,
    /// `events` compared with what the clients were told.
    writes_check: WriteCheck,
    orders_intact: bool,
}

impl RunResult {
    fn transactions(&self) -> u64 {
        self.reads + self.writes
    }

    fn tps(&self) -> f64 {
        self.transactions() as f64 / self.elapsed.max(1e-9)
    }

    fn client_errors(&self) -> u64 {
        self.errors.total()
    }

    fn cached_plan_errors(&self) -> u64 {
        self.errors.count("0A000", |_| true)
    }

    /// Every invariant that failed, as a sentence.
    fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let label = format!(
            "{} {} {}",
            self.mode,
            match self.round {
                0 => "warm-up".to_string(),
                n => format!("round {n}"),
            },
            if self.with_migrations {
                "with migrations"
            } else {
                "baseline"
            }
        );
        if self.cached_plan_errors() > 0 {
            f.push(format!(
                "{label}: {} client-visible 0A000 cached-plan errors",
                self.cached_plan_errors()
            ));
        }
        if self.client_errors() > self.cached_plan_errors() {
            f.push(format!(
                "{label}: {} other client-visible errors",
                self.client_errors() - self.cached_plan_errors()
            ));
        }
        for (n, what) in [
            (self.bad_shapes, "rows not in the contract shape"),
            (self.bad_values, "rows with wrong values"),
        ] {
            if n > 0 {
                f.push(format!("{label}: {n} {what}"));
            }
        }
        for w in self.writes_check.failures() {
            f.push(format!("{label}: {w}"));
        }
        if !self.orders_intact {
            f.push(format!("{label}: orders table changed"));
        }
        if self.with_migrations && self.migrations == 0 {
            f.push(format!("{label}: no migration ran (run too short?)"));
        }
        if !self.migrator_errors.is_empty() {
            f.push(format!(
                "{label}: {} migrations failed",
                self.migrator_errors.len()
            ));
        }
        f
    }
}

/// Connect tokio-postgres and drive its connection on the current runtime.
async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn micros(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u128::from(u32::MAX)) as u32
}

/// The size of a DataRow body after its field count: 4 bytes of length per field plus the
/// binary values. `tail_nulls` columns beyond the three of the contract are NULL (added by the
/// migrations; only present if a client re-prepared after an error).
fn orders_row_size(note: &str, tail_nulls: usize) -> usize {
    (4 + 4) + (4 + 8) + (4 + note.len()) + 4 * tail_nulls
}

fn events_row_size(tail_nulls: usize) -> usize {
    (4 + 8) + (4 + 4) + (4 + 4) + 4 * tail_nulls
}

struct Prepared {
    select: Statement,
    insert: Statement,
}

async fn prepare(c: &Client) -> Result<Prepared, (&'static str, tokio_postgres::Error)> {
    let select = c
        .prepare(SELECT_SQL)
        .await
        .map_err(|e| ("prepare select", e))?;
    let insert = c
        .prepare(INSERT_SQL)
        .await
        .map_err(|e| ("prepare insert", e))?;
    Ok(Prepared { select, insert })
}

fn names(s: &Statement) -> Vec<&str> {
    s.columns().iter().map(|c| c.name()).collect()
}

fn check_read(stats: &mut ClientStats, client: i32, st: &Statement, key: i32, rows: &[Row]) {
    if rows.len() != 1 {
        stats.bad(
            false,
            format!(
                "client {client}: select id={key} returned {} rows",
                rows.len()
            ),
        );
        return;
    }
    let row = &rows[0];
    let expected_note = format!("note-{key}");
    let width = st.columns().len();
    let size = orders_row_size(&expected_note, width.saturating_sub(3));
    if row.len() != width || row.raw_size_bytes() != size {
        stats.bad(
            true,
            format!(
                "client {client}: select id={key}: DataRow of {} bytes, contract {:?} needs {size}",
                row.raw_size_bytes(),
                names(st)
            ),
        );
        return;
    }
    let got = (
        row.try_get::<_, i32>("id"),
        row.try_get::<_, i64>("total"),
        row.try_get::<_, String>("note"),
    );
    match got {
        (Ok(id), Ok(total), Ok(note))
            if id == key && total == i64::from(key) * 10 && note == expected_note => {}
        other => stats.bad(
            false,
            format!("client {client}: select id={key} returned {other:?}"),
        ),
    }
}

fn check_write(
    stats: &mut ClientStats,
    client: i32,
    st: &Statement,
    seq: i32,
    rows: &[Row],
) -> Option<i64> {
    if rows.len() != 1 {
        stats.bad(
            false,
            format!(
                "client {client}: insert seq={seq} returned {} rows",
                rows.len()
            ),
        );
        return None;
    }
    let row = &rows[0];
    let width = st.columns().len();
    let size = events_row_size(width.saturating_sub(3));
    if row.len() != width || row.raw_size_bytes() != size {
        stats.bad(
            true,
            format!(
                "client {client}: insert seq={seq}: DataRow of {} bytes, contract {:?} needs {size}",
                row.raw_size_bytes(),
                names(st)
            ),
        );
        // The server did acknowledge the write; keep it for the integrity check.
        return row.try_get::<_, i64>("id").ok();
    }
    let got = (
        row.try_get::<_, i64>("id"),
        row.try_get::<_, i32>("client"),
        row.try_get::<_, i32>("seq"),
    );
    match got {
        (Ok(id), Ok(c), Ok(s)) if c == client && s == seq => Some(id),
        other => {
            stats.bad(
                false,
                format!("client {client}: insert seq={seq} returned {other:?}"),
            );
            other.0.ok()
        }
    }
}

/// One client: connect and prepare, wait for the start, then alternate read and write until
/// `stop`. After an error the client re-prepares (as a retrying driver would) and goes on, so
/// one failure does not hide the next ones.
async fn run_client(
    client: i32,
    url: String,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
    t0: Arc<std::sync::OnceLock<Instant>>,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let elapsed = |t0: &std::sync::OnceLock<Instant>| {
        t0.get().map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0)
    };
    let mut conn: Option<(Client, Prepared)> = None;
    let setup = async {
        let c = connect(&url).await.map_err(|e| ("connect", e))?;
        let p = prepare(&c).await?;
        Ok::<_, (&str, tokio_postgres::Error)>((c, p))
    };
    match setup.await {
        Ok((c, p)) => {
            assert_eq!(names(&p.select), ["id", "total", "note"], "orders contract");
            assert_eq!(names(&p.insert), ["id", "client", "seq"], "events contract");
            conn = Some((c, p));
        }
        Err((what, e)) => stats.error(client, what, &e, 0.0),
    }
    start.wait().await;
    let mut rng = Rng::for_client(client);
    let mut seq: i32 = 0;
    let mut write_next = false;
    while !stop.load(Ordering::Relaxed) {
        let Some((c, p)) = conn.as_ref() else {
            // Lost the connection: reconnect and prepare again.
            let t = elapsed(&t0);
            match connect(&url).await {
                Ok(c) => match prepare(&c).await {
                    Ok(p) => conn = Some((c, p)),
                    Err((what, e)) => stats.error(client, what, &e, t),
                },
                Err(e) => stats.error(client, "connect", &e, t),
            }
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        // The statement that failed, to prepare again (as a retrying driver would).
        let mut reprepare: Option<bool> = None; // Some(true): the insert
        if write_next {
            seq += 1;
            let sent = Instant::now();
            match c.query(&p.insert, &[&client, &seq]).await {
                Ok(rows) => {
                    stats.latencies_us.push(micros(sent));
                    stats.writes += 1;
                    if let Some(id) = check_write(&mut stats, client, &p.insert, seq, &rows) {
                        stats.log.acked.insert(seq, id);
                    }
                }
                Err(e) => {
                    stats.error(client, "insert", &e, elapsed(&t0));
                    if e.as_db_error().is_some() {
                        stats.log.failed.insert(seq);
                    } else {
                        stats.log.uncertain.insert(seq);
                    }
                    reprepare = Some(true);
                }
            }
        } else {
            let key = (rng.next() % ORDERS as u64) as i32 + 1;
            let sent = Instant::now();
            match c.query(&p.select, &[&key]).await {
                Ok(rows) => {
                    stats.latencies_us.push(micros(sent));
                    stats.reads += 1;
                    check_read(&mut stats, client, &p.select, key, &rows);
                }
                Err(e) => {
                    stats.error(client, "select", &e, elapsed(&t0));
                    reprepare = Some(false);
                }
            }
        }
        write_next = !write_next;
        if let Some(insert) = reprepare {
            if c.is_closed() {
                conn = None;
                continue;
            }
            let (what, sql) = if insert {
                ("prepare insert", INSERT_SQL)
            } else {
                ("prepare select", SELECT_SQL)
            };
            match c.prepare(sql).await {
                Ok(fresh) => {
                    let p = &mut conn.as_mut().expect("connected").1;
                    if insert {
                        p.insert = fresh;
                    } else {
                        p.select = fresh;
                    }
                }
                Err(e) => {
                    stats.error(client, what, &e, elapsed(&t0));
                    conn = None;
                }
            }
        }
    }
    stats
}

/// Adds a column to both tables every `every` until `stop`; returns how many rounds completed
/// and the errors.
async fn run_migrator(
    url: String,
    every: Duration,
    first_column: u32,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> (u32, Vec<String>) {
    let admin = connect(&url).await.expect("migrator connects directly");
    admin
        .batch_execute("SET lock_timeout = '10s'")
        .await
        .expect("set lock_timeout");
    start.wait().await;
    let mut done = 0;
    let mut errors = Vec::new();
    let mut k = first_column;
    loop {
        // Sleep in small steps so the run ends on time.
        let wake = Instant::now() + every;
        while Instant::now() < wake && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20).min(every)).await;
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut ok = true;
        for sql in [
            format!("ALTER TABLE orders ADD COLUMN c_{k} int"),
            format!("ALTER TABLE events ADD COLUMN e_{k} int"),
        ] {
            if let Err(e) = admin.batch_execute(&sql).await {
                errors.push(format!("{sql}: {e}"));
                ok = false;
            }
        }
        k += 1;
        if ok {
            done += 1;
        }
    }
    (done, errors)
}

/// Fresh tables owned by the app user (so every run starts from the same shape).
async fn reset_tables(admin: &Client) {
    admin
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS orders, events;
             CREATE TABLE orders(id int PRIMARY KEY, total bigint NOT NULL, note text NOT NULL);
             INSERT INTO orders SELECT g, g * 10, 'note-' || g FROM generate_series(1, {ORDERS}) g;
             CREATE TABLE events(id bigserial PRIMARY KEY, client int NOT NULL, seq int NOT NULL);
             ALTER TABLE orders OWNER TO {USER};
             ALTER TABLE events OWNER TO {USER};"
        ))
        .await
        .expect("create tables");
    admin
        .batch_execute("VACUUM ANALYZE orders")
        .await
        .expect("vacuum");
    admin.batch_execute("CHECKPOINT").await.expect("checkpoint");
}

/// After a run: compare the tables with what the clients were told.
async fn check_tables(admin: &Client, clients: &[ClientStats], r: &mut RunResult) {
    let writers: Vec<(i32, &WriteLog)> = clients
        .iter()
        .enumerate()
        .map(|(i, st)| (i as i32, &st.log))
        .collect();
    r.writes_check = check_writes(admin, "events", &writers).await;
    let orders = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE total = id * 10 AND note = 'note-' || id) FROM orders",
            &[],
        )
        .await
        .expect("orders check");
    let (n, good): (i64, i64) = (orders.get(0), orders.get(1));
    r.orders_intact = n == i64::from(ORDERS) && good == n;
}

struct Env {
    pg: TempCluster,
    proxy_rt: tokio::runtime::Runtime,
    client_rt: tokio::runtime::Runtime,
    /// Column suffix for the next migration (unique across runs for readable logs).
    next_column: u32,
}

impl Env {
    fn run(&mut self, s: &Settings, round: usize, mode: Mode, with_migrations: bool) -> RunResult {
        let admin_url = self.pg.superuser_url(DB);
        let admin = self.client_rt.block_on(async {
            let a = connect(&admin_url).await.expect("superuser connects");
            reset_tables(&a).await;
            a
        });

        let args = RunArgs {
            listen: Some("127.0.0.1:0".into()),
            upstream: Some(self.pg.url(USER, PASSWORD, DB)),
            pool_mode: Some(mode.name().into()),
            pool_size: Some(s.pool_size(mode)),
            no_heal: s.no_heal,
            ..Default::default()
        };
        let cfg = build(FileConfig::default(), &args).expect("valid pgheal config");
        // pgheal gets its own runtime (its own threads), as it would as its own process.
        let proxy = self
            .proxy_rt
            .block_on(pgheal::proxy::start(cfg))
            .expect("start pgheal");
        let addr: SocketAddr = proxy.addr;
        let url = format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DB}",
            addr.port()
        );
        let metrics = proxy.metrics.clone();

        let stop = Arc::new(AtomicBool::new(false));
        let parties = s.clients + 1 + usize::from(with_migrations);
        let start = Arc::new(Barrier::new(parties));
        let t0 = Arc::new(std::sync::OnceLock::new());
        let first_column = self.next_column;
        let (clients, migrated, elapsed) = self.client_rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..s.clients {
                tasks.push(tokio::spawn(run_client(
                    i as i32,
                    url.clone(),
                    start.clone(),
                    stop.clone(),
                    t0.clone(),
                )));
            }
            let migrator = with_migrations.then(|| {
                tokio::spawn(run_migrator(
                    admin_url.clone(),
                    s.migrate_every,
                    first_column,
                    start.clone(),
                    stop.clone(),
                ))
            });
            start.wait().await;
            let began = Instant::now();
            let _ = t0.set(began);
            tokio::time::sleep(Duration::from_secs_f64(s.seconds)).await;
            stop.store(true, Ordering::Relaxed);
            let mut clients = Vec::new();
            for t in tasks {
                clients.push(t.await.expect("client task"));
            }
            let elapsed = began.elapsed().as_secs_f64();
            let migrated = match migrator {
                Some(m) => m.await.expect("migrator task"),
                None => (0, Vec::new()),
            };
            (clients, migrated, elapsed)
        });
        self.next_column += migrated.0 + migrated.1.len() as u32;

        let mut r = RunResult {
            mode: mode.name(),
            round,
            with_migrations,
            migrations: migrated.0,
            migrator_errors: migrated.1,
            elapsed,
            healed: metrics.heal_count(Outcome::Healed),
            projected: metrics.heal_count(Outcome::Projected),
            refused: metrics.heal_count(Outcome::Refused),
            forwarded_in_tx: metrics.heal_count(Outcome::ForwardedInTransaction),
            ..Default::default()
        };
        let mut latencies: Vec<u32> = clients
            .iter()
            .flat_map(|c| c.latencies_us.iter().copied())
            .collect();
        latencies.sort_unstable();
        let pick = |q: f64| -> f64 {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q).round().max(0.0) as usize)
                .map_or(0.0, |&us| f64::from(us) / 1000.0)
        };
        r.latency_ms = (pick(0.5), pick(0.99), pick(1.0));
        for st in &clients {
            r.reads += st.reads;
            r.writes += st.writes;
            r.errors.merge(&st.errors);
            r.bad_shapes += st.bad_shapes;
            r.bad_values += st.bad_values;
            r.bad_samples.extend(st.bad_samples.iter().cloned());
        }
        self.client_rt
            .block_on(check_tables(&admin, &clients, &mut r));
        drop(clients);
        drop(admin);
        // Let the client connections close, then stop pgheal.
        self.proxy_rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(10), proxy.shutdown()).await;
        });
        r
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn print_report(s: &Settings, results: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "heal_load: {} clients, {} s per run ({} s warm-up per mode), {} round(s), a migration (ADD COLUMN on orders and events) every {} ms; \
         session pool = {} server connections, transaction pool = {}{}",
        s.clients,
        s.seconds,
        s.warmup,
        s.rounds,
        s.migrate_every.as_millis(),
        s.clients,
        s.tx_pool_size,
        if s.no_heal {
            "; pgheal --no-heal (healing OFF)"
        } else {
            ""
        }
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| mode        | round | migrations | transactions |     TPS | client errors | healed+projected | refused | duplicates | missing | TPS ratio |"
    );
    let _ = writeln!(
        out,
        "|-------------|------:|-----------:|-------------:|--------:|--------------:|-----------------:|--------:|-----------:|--------:|----------:|"
    );
    for r in results {
        let ratio = if r.with_migrations {
            results
                .iter()
                .find(|b| b.mode == r.mode && b.round == r.round && !b.with_migrations)
                .map(|b| format!("{:.3}", r.tps() / b.tps().max(1e-9)))
                .unwrap_or_else(|| "n/a".into())
        } else {
            "1.000".into()
        };
        let _ = writeln!(
            out,
            "| {:<11} | {:>5} | {:>10} | {:>12} | {:>7.0} | {:>13} | {:>16} | {:>7} | {:>10} | {:>7} | {:>9} |",
            r.mode,
            r.round,
            if r.with_migrations {
                r.migrations.to_string()
            } else {
                "none".into()
            },
            r.transactions(),
            r.tps(),
            r.client_errors(),
            r.healed + r.projected,
            r.refused,
            r.writes_check.duplicates,
            r.writes_check.missing,
            ratio
        );
    }
    if s.rounds > 1 {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| mode        | median TPS baseline | median TPS migrations | ratio of medians | median of per-round ratios |"
        );
        let _ = writeln!(
            out,
            "|-------------|--------------------:|----------------------:|-----------------:|---------------------------:|"
        );
        for &mode in &s.modes {
            let tps = |m: bool| {
                median(
                    results
                        .iter()
                        .filter(|r| r.mode == mode.name() && r.with_migrations == m)
                        .map(RunResult::tps)
                        .collect(),
                )
            };
            let ratios = results
                .iter()
                .filter(|r| r.mode == mode.name() && r.with_migrations)
                .filter_map(|r| {
                    results
                        .iter()
                        .find(|b| b.mode == r.mode && b.round == r.round && !b.with_migrations)
                        .map(|b| r.tps() / b.tps().max(1e-9))
                })
                .collect();
            let (base, mig) = (tps(false), tps(true));
            let _ = writeln!(
                out,
                "| {:<11} | {:>19.0} | {:>21.0} | {:>16.3} | {:>26.3} |",
                mode.name(),
                base,
                mig,
                mig / base,
                median(ratios)
            );
        }
    }
    let _ = writeln!(out);
    for r in results {
        let _ = writeln!(
            out,
            "{} round {} {}: {:.2} s, {} reads, {} writes ({} acknowledged), latency ms p50 {:.3} p99 {:.3} max {:.1}; \
             heals: healed {}, projected {}, refused {}, forwarded_in_transaction {}; \
             bad shapes {}, bad values {}, id mismatches {}, phantom writes {}, orders intact {}",
            r.mode,
            r.round,
            if r.with_migrations { "with migrations" } else { "baseline" },
            r.elapsed,
            r.reads,
            r.writes,
            r.writes_check.acked,
            r.latency_ms.0,
            r.latency_ms.1,
            r.latency_ms.2,
            r.healed,
            r.projected,
            r.refused,
            r.forwarded_in_tx,
            r.bad_shapes,
            r.bad_values,
            r.writes_check.id_mismatch,
            r.writes_check.failed_present + r.writes_check.unknown,
            r.orders_intact
        );
        for ((stmt, code), n) in &r.errors.counts {
            let _ = writeln!(out, "  client errors: {stmt} {code}: {n}");
        }
        for line in r
            .errors
            .all_samples()
            .chain(&r.bad_samples)
            .chain(&r.writes_check.samples)
            .chain(&r.migrator_errors)
        {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

fn main() {
    load::log_from_env();
    let s = Settings::from_env();
    if s.smoke {
        println!(
            "heal_load: smoke run (the full benchmark runs under `cargo bench --bench heal_load`)"
        );
    }
    let pg = pgheal::cluster::TempCluster::start_with(pgheal::cluster::ClusterOptions {
        max_connections: (s.clients + 20).max(100) as u32,
        ..Default::default()
    })
    .expect("start PostgreSQL (are the server binaries installed?)");
    pg.create_user(USER, PASSWORD).expect("create user");
    pg.create_database(DB, USER).expect("create database");
    let version = pg.psql(DB, "SHOW server_version").unwrap_or_default();

    let mut env = Env {
        pg,
        proxy_rt: runtime("pgheal", 2),
        client_rt: runtime("heal-load-client", 2),
        next_column: 1,
    };
    // The first seconds of load on a fresh cluster and pgheal run at about half the speed of
    // later ones (measured: 11k vs 21-23k TPS): warm up every mode first, untimed, unreported
    // (its invariants are still checked).
    let mut warmups = Vec::new();
    if s.warmup > 0.0 {
        let timed = Settings {
            seconds: s.warmup,
            ..s.clone()
        };
        for &mode in &s.modes {
            warmups.push(env.run(&timed, 0, mode, false));
        }
    }
    let mut results = Vec::new();
    for round in 1..=s.rounds {
        for &mode in &s.modes {
            // Alternate which run goes first, so an order effect cancels over rounds.
            let order: &[bool] = match (s.baseline, round % 2 == 1) {
                (false, _) => &[true],
                (true, true) => &[false, true],
                (true, false) => &[true, false],
            };
            for &with_migrations in order {
                results.push(env.run(&s, round, mode, with_migrations));
            }
        }
    }
    // Table order: by round, mode, baseline first.
    results.sort_by_key(|r| {
        (
            r.round,
            s.modes.iter().position(|m| m.name() == r.mode),
            r.with_migrations,
        )
    });
    let report = print_report(&s, &results);
    print!("{report}");
    println!(
        "PostgreSQL {version}, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let failures: Vec<String> = warmups
        .iter()
        .chain(&results)
        .flat_map(RunResult::failures)
        .collect();
    if failures.is_empty() {
        println!("heal_load: all invariants held");
    } else {
        for f in &failures {
            println!("FAIL: {f}");
        }
        std::process::exit(1);
    }
}
