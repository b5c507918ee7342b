//! The soak's load (issue 14, point 5): many clients through a pgheal process for a long time,
//! while the schema changes, clients vanish mid-batch and mid-COPY, and backends die.
//!
//! Why a driver of its own: the stress test of migrations (`stress_migrations`) checks healing
//! with a few dozen well-behaved clients, the network fuzz (`chaos`) malformed input beside a
//! canary. What neither shows is the long run with everything at once, at the scale of a real
//! pooler: a thousand clients per process, the server restarted under them, and the process's
//! memory over time. This file holds the pieces; `tests/it/soak.rs` starts PostgreSQL and the
//! two pgheal processes, runs them and checks the results.
//!
//! Every client operation is bounded by [`OP_LIMIT`]: an operation that exceeds it is a *stall*,
//! reported with what the client was doing. Every client task notes its current action in a
//! [`Doing`] slot, so a task that does not finish is named with it.
//!
//! Writers record a write as acknowledged only once its answer (autocommit) or its COMMIT's
//! answer arrived; a write whose transaction failed before COMMIT as failed (it must be absent);
//! a write whose outcome was lost with the connection (an error at COMMIT, or at an autocommit
//! statement, or an abandoned operation) as uncertain (present at most once). The table has no
//! unique constraint, so a write made twice shows ([`super::load::check_writes`]).
//!
//! Which errors a fault may cause, and nothing else ([`fault_error`]): `57P01` (a terminated
//! backend, or the fast shutdown of a restart), `57P03` (a login while the server starts or
//! stops), `08000`/`08001`/`08006` (pgheal's own report of a lost or unreachable server), and a
//! connection closed without an ErrorResponse. In particular never `0A000` (a cached plan the
//! migrations made stale, which pgheal heals).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Statement};

use super::load::{describe, ErrorTally, Rng, WriteLog};
use super::wire::{bind, execute, flush, parse, Wire};
use super::{try_connect, DB, PASSWORD, USER};
use pgheal::protocol::{backend, encode};

/// The longest any single client operation (login, statement, transaction) may take.
pub const OP_LIMIT: Duration = Duration::from_secs(60);

/// The SQLSTATEs a fault (a terminated backend, a server restart) may cause, besides a
/// connection closed without an ErrorResponse (`driver`).
pub const FAULT_SQLSTATES: [&str; 5] = ["57P01", "57P03", "08000", "08001", "08006"];

/// Whether `code` (a SQLSTATE, or `driver` for a lost connection) is one a fault may cause.
pub fn fault_error(code: &str) -> bool {
    code == "driver" || FAULT_SQLSTATES.contains(&code)
}

/// The schema the clients use (run as the superuser before the clients start).
pub const SCHEMA: &str = "
    CREATE TYPE soak_state AS ENUM ('new');
    CREATE TABLE soak_ledger(id bigserial, client int NOT NULL, seq int NOT NULL,
                             state soak_state NOT NULL DEFAULT 'new');
    CREATE TABLE soak_items(id int PRIMARY KEY, name text NOT NULL, state soak_state);
    INSERT INTO soak_items SELECT g, 'item ' || g, 'new' FROM generate_series(1, 100) g;
    CREATE VIEW soak_view AS SELECT id, name FROM soak_items;
    CREATE TABLE soak_accounts(id int PRIMARY KEY, owner text NOT NULL, spare int);
    INSERT INTO soak_accounts SELECT g, 'owner ' || g, g FROM generate_series(1, 100) g;
    CREATE TABLE soak_vanish(kind text, n bigint);
    ALTER TABLE soak_ledger OWNER TO app; ALTER TABLE soak_items OWNER TO app;
    ALTER VIEW soak_view OWNER TO app; ALTER TABLE soak_accounts OWNER TO app;
    ALTER TABLE soak_vanish OWNER TO app;";

/// The settings of a run, from the environment (see `tests/it/soak.rs`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub secs: u64,
    /// Clients per pgheal process.
    pub clients: usize,
    /// Pause between two migrations.
    pub migrate_every: Duration,
    /// Pause between two rounds of pg_terminate_backend.
    pub kill_every: Duration,
    /// Fast restarts of the server during the main wave.
    pub restarts: u32,
}

/// A per-task slot saying what the task is doing, for the report of a hang.
#[derive(Clone, Default)]
pub struct Doing(Arc<Mutex<String>>);

impl Doing {
    pub fn set(&self, what: impl Into<String>) {
        *self.0.lock().expect("doing lock") = what.into();
    }
    pub fn get(&self) -> String {
        self.0.lock().expect("doing lock").clone()
    }
}

/// Counters shared by every client of one pgheal process.
#[derive(Default)]
pub struct Tally {
    pub transactions: AtomicU64,
    pub reads: AtomicU64,
    pub sessions: AtomicU64,
    pub logins_refused: AtomicU64,
    pub vanished_batch: AtomicU64,
    pub vanished_half: AtomicU64,
    pub vanished_copy: AtomicU64,
    pub vanished_in_tx: AtomicU64,
    pub errors: Mutex<ErrorTally>,
    /// Operations that exceeded [`OP_LIMIT`], described.
    pub stalls: Mutex<Vec<String>>,
    /// Rows that did not match what was asked for, described.
    pub wrong_rows: Mutex<Vec<String>>,
}

impl Tally {
    pub fn vanished(&self) -> u64 {
        self.vanished_batch.load(Ordering::Relaxed)
            + self.vanished_half.load(Ordering::Relaxed)
            + self.vanished_copy.load(Ordering::Relaxed)
            + self.vanished_in_tx.load(Ordering::Relaxed)
    }

    fn error(&self, class: &str, e: &tokio_postgres::Error, who: &str) -> String {
        self.errors
            .lock()
            .expect("tally lock")
            .record(class, e, || who.to_string())
    }

    fn stall(&self, what: String) {
        let mut s = self.stalls.lock().expect("tally lock");
        if s.len() < 50 {
            s.push(what);
        }
    }

    fn wrong(&self, what: String) {
        let mut s = self.wrong_rows.lock().expect("tally lock");
        if s.len() < 50 {
            s.push(what);
        }
    }
}

/// How a client uses its connection in each pool mode: in session pooling a client holds a
/// server connection for its whole session, so sessions are short and the pause is between
/// them; in transaction pooling a client keeps its connection and pauses between operations.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Operations per login: `min..=max`.
    pub ops: (u64, u64),
    /// Pause between two operations, milliseconds `min..=max`.
    pub think_ms: (u64, u64),
    /// Pause between two sessions, milliseconds `min..=max`.
    pub rest_ms: (u64, u64),
}

impl Pace {
    pub fn session() -> Pace {
        Pace {
            ops: (3, 20),
            think_ms: (0, 0),
            rest_ms: (500, 4000),
        }
    }
    pub fn transaction() -> Pace {
        Pace {
            ops: (50, 400),
            think_ms: (200, 3000),
            rest_ms: (100, 1000),
        }
    }
}

fn between(rng: &mut Rng, (lo, hi): (u64, u64)) -> u64 {
    lo + rng.below(hi - lo + 1)
}

/// One tokio-postgres client's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Writer,
    Reader,
}

/// Run `fut` bounded by [`OP_LIMIT`]; `None` (and a stall recorded) when it took longer.
async fn bounded<T>(
    tally: &Tally,
    who: &str,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    match tokio::time::timeout(OP_LIMIT, fut).await {
        Ok(v) => Some(v),
        Err(_) => {
            tally.stall(format!("{who}: {what} took more than {OP_LIMIT:?}"));
            None
        }
    }
}

const INSERT: &str = "INSERT INTO soak_ledger(client, seq) VALUES ($1, $2) RETURNING id";
const READS: [&str; 3] = [
    "SELECT * FROM soak_items WHERE id = $1",
    "SELECT * FROM soak_view WHERE id = $1",
    "SELECT id, owner FROM soak_accounts WHERE id = $1",
];

/// A writer's or reader's connection with its prepared statements.
struct Conn {
    client: Client,
    insert: Statement,
    reads: Vec<Statement>,
}

async fn login(url: &str, role: Role) -> Result<Conn, tokio_postgres::Error> {
    let client = try_connect(url).await?;
    let insert = client.prepare(INSERT).await?;
    let mut reads = Vec::new();
    if role == Role::Reader {
        for sql in READS {
            reads.push(client.prepare(sql).await?);
        }
    }
    Ok(Conn {
        client,
        insert,
        reads,
    })
}

/// What one write operation did to the log.
enum WriteEnd {
    Ok,
    /// The connection is unusable (lost, terminated): log in again.
    Lost,
}

/// One write: an autocommit INSERT, or (always when `only_tx`) a transaction of 1–3 INSERTs;
/// the outcome of each is recorded in `log`.
#[allow(clippy::too_many_arguments)]
async fn write_op(
    c: &mut Conn,
    client_no: i32,
    seq: &mut i32,
    rng: &mut Rng,
    only_tx: bool,
    log: &mut WriteLog,
    tally: &Tally,
    who: &str,
) -> WriteEnd {
    let in_tx = only_tx || rng.below(2) == 0;
    if !in_tx {
        *seq += 1;
        let s = *seq;
        let r = bounded(
            tally,
            who,
            "an autocommit INSERT",
            c.client.query_one(&c.insert, &[&client_no, &s]),
        )
        .await;
        return match r {
            Some(Ok(row)) => {
                log.acked.insert(s, row.get(0));
                tally.transactions.fetch_add(1, Ordering::Relaxed);
                WriteEnd::Ok
            }
            Some(Err(e)) => {
                let code = tally.error("autocommit insert", &e, who);
                if fault_error(&code) {
                    log.uncertain.insert(s);
                    WriteEnd::Lost
                } else {
                    log.failed.insert(s);
                    WriteEnd::Ok
                }
            }
            None => {
                log.uncertain.insert(s);
                WriteEnd::Lost
            }
        };
    }
    let n = 1 + rng.below(3) as i32;
    let first = *seq + 1;
    *seq += n;
    let seqs: Vec<i32> = (first..=*seq).collect();
    let insert = c.insert.clone();
    let step = async {
        let tx = c.client.transaction().await.map_err(|e| (false, e))?;
        let mut ids = Vec::new();
        for s in &seqs {
            let row = tx
                .query_one(&insert, &[&client_no, s])
                .await
                .map_err(|e| (false, e))?;
            ids.push(row.get::<_, i64>(0));
        }
        tx.commit().await.map_err(|e| (true, e))?;
        Ok::<_, (bool, tokio_postgres::Error)>(ids)
    };
    match bounded(tally, who, "a write transaction", step).await {
        Some(Ok(ids)) => {
            for (s, id) in seqs.iter().zip(ids) {
                log.acked.insert(*s, id);
            }
            tally.transactions.fetch_add(1, Ordering::Relaxed);
            WriteEnd::Ok
        }
        Some(Err((at_commit, e))) => {
            let code = tally.error(
                if at_commit {
                    "transaction commit"
                } else {
                    "transaction insert"
                },
                &e,
                who,
            );
            if at_commit {
                log.uncertain.extend(&seqs);
            } else {
                log.failed.extend(&seqs);
            }
            if fault_error(&code) || c.client.is_closed() {
                WriteEnd::Lost
            } else {
                WriteEnd::Ok
            }
        }
        None => {
            log.uncertain.extend(&seqs);
            WriteEnd::Lost
        }
    }
}

/// One read with a prepared statement (stale after migrations): the row must be the one asked
/// for, with the columns the statement had when it was prepared.
async fn read_op(c: &Conn, rng: &mut Rng, tally: &Tally, who: &str) -> WriteEnd {
    let k = rng.below(READS.len() as u64) as usize;
    let id = 1 + rng.below(100) as i32;
    let r = bounded(
        tally,
        who,
        READS[k],
        c.client.query_opt(&c.reads[k], &[&id]),
    )
    .await;
    match r {
        Some(Ok(Some(row))) => {
            tally.reads.fetch_add(1, Ordering::Relaxed);
            // By name: the view's columns change order in long runs (a reader prepared after
            // that has them in the other order); rows in a shape the statement does not have
            // fail to decode here.
            let (col, want) = if k == 2 {
                ("owner", format!("owner {id}"))
            } else {
                ("name", format!("item {id}"))
            };
            let got: i32 = row.try_get("id").unwrap_or(i32::MIN);
            let text: String = row
                .try_get(col)
                .unwrap_or_else(|e| format!("undecodable: {e}"));
            if got != id || text != want || row.len() != c.reads[k].columns().len() {
                tally.wrong(format!(
                    "{who}: {} with {id} gave ({got}, {text:?}) in {} columns, the statement has {}",
                    READS[k],
                    row.len(),
                    c.reads[k].columns().len()
                ));
            }
            WriteEnd::Ok
        }
        Some(Ok(None)) => {
            tally.wrong(format!("{who}: {} with {id} found no row", READS[k]));
            WriteEnd::Ok
        }
        Some(Err(e)) => {
            let code = tally.error(&format!("read {k}"), &e, who);
            if fault_error(&code) || c.client.is_closed() {
                WriteEnd::Lost
            } else {
                WriteEnd::Ok
            }
        }
        None => WriteEnd::Lost,
    }
}

/// A writer or reader until `until`: log in, run a session's operations, leave, rest, again.
/// Returns the writes it made (empty for a reader).
#[allow(clippy::too_many_arguments)]
pub async fn client_loop(
    url: String,
    role: Role,
    client_no: i32,
    mut seq: i32,
    pace: Pace,
    until: Instant,
    tally: Arc<Tally>,
    doing: Doing,
) -> WriteLog {
    let who = format!("{role:?} {client_no}");
    let mut rng = Rng::for_client(client_no ^ seq);
    let mut log = WriteLog::default();
    // Spread the first logins over a few seconds, as clients of a restarted application do.
    tokio::time::sleep(Duration::from_millis(rng.below(3000))).await;
    while Instant::now() < until {
        doing.set("logging in");
        let conn = match bounded(&tally, &who, "login and prepare", login(&url, role)).await {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                tally.error("login", &e, &who);
                tally.logins_refused.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => None,
        };
        if let Some(mut c) = conn {
            tally.sessions.fetch_add(1, Ordering::Relaxed);
            for _ in 0..between(&mut rng, pace.ops) {
                if Instant::now() >= until {
                    break;
                }
                let end = match role {
                    Role::Writer => {
                        doing.set(format!("writing after seq {seq}"));
                        write_op(
                            &mut c, client_no, &mut seq, &mut rng, false, &mut log, &tally, &who,
                        )
                        .await
                    }
                    Role::Reader => {
                        doing.set("reading");
                        read_op(&c, &mut rng, &tally, &who).await
                    }
                };
                if matches!(end, WriteEnd::Lost) {
                    break;
                }
                let think = between(&mut rng, pace.think_ms);
                if think > 0 {
                    doing.set("thinking");
                    tokio::time::sleep(Duration::from_millis(think)).await;
                }
            }
        }
        doing.set("resting between sessions");
        tokio::time::sleep(Duration::from_millis(between(&mut rng, pace.rest_ms))).await;
    }
    doing.set("done");
    log
}

/// A client that logs in on the raw protocol, starts something and closes its socket in the
/// middle of it: a pipelined INSERT with neither Sync nor Flush, the same with its last message
/// cut in half, COPY FROM STDIN with some rows and no CopyDone, or an open transaction with an
/// INSERT. None of these writes may ever be committed (`soak_vanish` must stay empty).
pub async fn vanisher_loop(port: u16, n: i32, until: Instant, tally: Arc<Tally>, doing: Doing) {
    let who = format!("vanisher {n}");
    let mut rng = Rng::for_client(n.wrapping_add(0x5a5a));
    let mut k: i64 = 0;
    while Instant::now() < until {
        doing.set("resting");
        tokio::time::sleep(Duration::from_millis(500 + rng.below(3000))).await;
        doing.set("logging in");
        let w = match bounded(
            &tally,
            &who,
            "raw login",
            Wire::try_connect(port, USER, PASSWORD, DB),
        )
        .await
        {
            Some(Ok(w)) => w,
            Some(Err(_)) => {
                tally.logins_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            None => continue,
        };
        k += 1;
        let value = (i64::from(n) << 32) | k;
        let insert = format!("INSERT INTO soak_vanish VALUES ('batch', {value})");
        let kind = rng.below(4);
        doing.set(format!("vanishing (kind {kind})"));
        let done = bounded(&tally, &who, "a vanishing act", async {
            vanish(w, kind, &insert, value, &mut rng).await
        })
        .await;
        if done == Some(true) {
            match kind {
                0 => &tally.vanished_batch,
                1 => &tally.vanished_half,
                2 => &tally.vanished_copy,
                _ => &tally.vanished_in_tx,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
    }
    doing.set("done");
}

/// One vanishing act; false when the connection failed before the client could leave as
/// planned (a fault got there first).
async fn vanish(mut w: Wire, kind: u64, insert: &str, value: i64, rng: &mut Rng) -> bool {
    match kind {
        0 | 1 => {
            let mut frames = vec![
                parse("", insert),
                bind("", "", &[], &[]),
                execute(""),
                parse("", "SELECT pg_sleep(0.01)"),
                bind("", "", &[], &[]),
                execute(""),
            ];
            if rng.below(2) == 0 {
                frames.push(flush());
            }
            let mut bytes: Vec<u8> = frames.iter().flat_map(|f| f.bytes.to_vec()).collect();
            if kind == 1 {
                // Half of one more Parse: its header and part of its body.
                let more = parse("", insert);
                bytes.extend_from_slice(&more.bytes[..more.bytes.len() / 2]);
            }
            let mut s = w.into_stream();
            tokio::io::AsyncWriteExt::write_all(&mut s, &bytes)
                .await
                .is_ok()
        }
        2 => {
            if w.try_send(&[encode::query("COPY soak_vanish FROM STDIN")])
                .await
                .is_err()
            {
                return false;
            }
            loop {
                match w.try_frame().await {
                    Ok(f) if f.tag == backend::COPY_IN_RESPONSE => break,
                    Ok(f) if f.tag == backend::ERROR_RESPONSE => return false,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
            let rows: Vec<_> = (0..=rng.below(20))
                .map(|i| {
                    encode::raw(
                        b'd',
                        format!("copy\t{}\n", value + ((i as i64) << 20)).as_bytes(),
                    )
                })
                .collect();
            w.try_send(&rows).await.is_ok()
        }
        _ => {
            if w.try_send(&[encode::query(format!("BEGIN; {insert}"))])
                .await
                .is_err()
            {
                return false;
            }
            loop {
                match w.try_frame().await {
                    Ok(f) if f.tag == backend::READY_FOR_QUERY => {
                        return f.bytes.last() == Some(&b'T')
                    }
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        }
    }
}

/// The canary: one client per process running write transactions for the whole run; every
/// error it sees must be one a fault may cause. `tally` must be the canary's own. Returns its
/// writes and its unexpected errors.
pub async fn canary_loop(
    url: String,
    client_no: i32,
    mut seq: i32,
    until: Instant,
    tally: Arc<Tally>,
    doing: Doing,
) -> (WriteLog, Vec<String>) {
    let who = format!("canary {client_no}");
    let mut rng = Rng::for_client(client_no);
    let mut log = WriteLog::default();
    let mut unexpected = Vec::new();
    let mut conn: Option<Conn> = None;
    while Instant::now() < until {
        let c = match conn.as_mut() {
            Some(c) if !c.client.is_closed() => c,
            _ => {
                doing.set("logging in");
                match bounded(&tally, &who, "login", login(&url, Role::Writer)).await {
                    Some(Ok(c)) => conn.insert(c),
                    Some(Err(e)) => {
                        let (code, text) = describe(&e);
                        if !fault_error(&code) {
                            unexpected.push(format!("{who} login: {code} {text}"));
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    None => {
                        unexpected.push(format!("{who}: a login took more than {OP_LIMIT:?}"));
                        continue;
                    }
                }
            }
        };
        doing.set(format!("writing after seq {seq}"));
        // Only transactions: each of the canary's writes is a COMMIT it waits for.
        let end = write_op(
            c, client_no, &mut seq, &mut rng, true, &mut log, &tally, &who,
        )
        .await;
        if matches!(end, WriteEnd::Lost) {
            conn = None;
        }
    }
    // The canary's tally is its own: every error class in it must be a fault's.
    let errors = tally.errors.lock().expect("tally lock");
    for ((class, code), n) in &errors.counts {
        if !fault_error(code) {
            let samples = errors
                .samples
                .get(&(class.clone(), code.clone()))
                .cloned()
                .unwrap_or_default();
            unexpected.push(format!("{who}: {n} × {class} {code}: {samples:?}"));
        }
    }
    drop(errors);
    doing.set("done");
    (log, unexpected)
}

/// VmRSS of process `pid` in KiB, if it exists.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// RSS samples of some processes, one a second, with the moment each was taken.
#[derive(Default)]
pub struct RssSeries {
    /// (seconds since the start, KiB per process).
    pub samples: Vec<(u64, Vec<Option<u64>>)>,
}

impl RssSeries {
    /// The largest sample of process `i`.
    pub fn peak(&self, i: usize) -> u64 {
        self.samples
            .iter()
            .filter_map(|(_, v)| v[i])
            .max()
            .unwrap_or(0)
    }

    /// At most `n` samples, evenly spread, as `t=…s a/b` (MiB).
    pub fn summary(&self, n: usize) -> String {
        let step = self.samples.len().div_ceil(n.max(1)).max(1);
        self.samples
            .iter()
            .step_by(step)
            .map(|(t, v)| {
                let mib: Vec<String> = v
                    .iter()
                    .map(|k| k.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)))
                    .collect();
                format!("{t}s {}", mib.join("/"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Sample the RSS of `pids` every second until `stop` is set.
pub async fn sample_rss(
    pids: Vec<u32>,
    start: Instant,
    series: Arc<Mutex<RssSeries>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let v = pids.iter().map(|&p| rss_kib(p)).collect();
        series
            .lock()
            .expect("rss lock")
            .samples
            .push((start.elapsed().as_secs(), v));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Merge the write logs of one client (several waves) into one.
pub fn merge_logs(into: &mut HashMap<i32, WriteLog>, client: i32, log: WriteLog) {
    let e = into.entry(client).or_default();
    e.acked.extend(log.acked);
    e.failed.extend(log.failed);
    e.rolled_back.extend(log.rolled_back);
    e.uncertain.extend(log.uncertain);
}

/// Error counts of a tally as `class SQLSTATE × n`, for the summary.
pub fn error_lines(t: &ErrorTally) -> BTreeMap<String, u64> {
    t.counts
        .iter()
        .map(|((class, code), n)| (format!("{class} {code}"), *n))
        .collect()
}
