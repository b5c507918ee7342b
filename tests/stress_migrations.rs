//! Stress test of healing under continuous migrations (issue 5, point 6).
//!
//! Why: the scenario tests show each heal once, with one client and one migration at a
//! chosen moment. Production is many clients with cached statements, in and out of
//! transactions, while a migration tool changes the schema under them — and the dangerous
//! moments are the unplanned ones: a Bind that waits for the migration's table lock and finds
//! its plan stale once the lock is granted, a lazily prepared statement in transaction pooling
//! racing the schema watch's notification, a write earlier in the same implicit transaction.
//! This test runs all of that at once for a while and checks the results on real data.
//!
//! What:
//! - One PostgreSQL cluster and two pgheal proxies in front of it at the same time: one with
//!   `--pool-mode session`, one with `--pool-mode transaction` and a small pool (4). Both with
//!   `--schema-watch listen` (the event trigger of `pgheal install-schema-watch` is installed)
//!   and `--savepoint-guard` from `STRESS_GUARD` (default `after-schema-change`).
//! - `STRESS_CLIENTS` tokio-postgres clients (default 20), half through each proxy. Each
//!   prepares six statements once (named, cached: they go stale) and then, until the end,
//!   picks at random:
//!   - a single statement outside a transaction (an implicit transaction): `SELECT *` from
//!     `items` or from the view `item_view`, `INSERT INTO ledger ... RETURNING *`, `SELECT *`
//!     of a row it wrote, `SELECT id, owner, balance FROM accounts`, or
//!     `UPDATE accounts ... RETURNING id, balance` on its own account;
//!   - a transaction that commits (`client.transaction()`): INSERT ... RETURNING *, SELECT * of
//!     what it wrote, SELECT * from the view, SELECT * from items, the UPDATE of its account,
//!     COMMIT;
//!   - a transaction that rolls back on purpose: INSERT ... RETURNING *, SELECT * of it, the
//!     UPDATE, ROLLBACK; then (outside) the SELECT * of that row must find nothing.
//! - A migrator, until the end and at least [`MIN_MIGRATIONS`] times, one statement after the
//!   other: `ALTER TABLE items ADD COLUMN`, `ALTER TABLE ledger ADD COLUMN` (the tables under
//!   `SELECT *` and `RETURNING *`: the result type changes, pgheal must heal and project),
//!   `CREATE OR REPLACE VIEW item_view` appending a column, and `ADD COLUMN` / `DROP COLUMN` of
//!   an unrelated column of `accounts`, which clients read only with explicit column lists
//!   (dropping a column that a client's contract contains is not healable by design). Each
//!   migration goes a different way, in rotation: straight to the server as the superuser (the
//!   schema watch tells pgheal), through the session proxy, through the transaction proxy (as
//!   `app`, the owner), each either as one statement or inside BEGIN ... COMMIT held open a
//!   moment (clients queue behind its lock). Every kind goes every way.
//! - Before the clients start, one schema change straight on the server, which both pgheals
//!   learn of through the watch: `after-schema-change` guards for a window after pgheal learns
//!   of a change, and a change made elsewhere is learned only when it commits, so the first one
//!   after a quiet period is not guarded (by design; `always` guards it). The migrator then
//!   keeps the window open.
//!
//! Checks, on real data:
//! - no client-visible error at all: none with SQLSTATE 0A000 (cached plan) in these healable
//!   classes, nor any other. Every error is counted by class (where, which statement,
//!   SQLSTATE) and printed with samples. With `STRESS_GUARD=off` the cached-plan errors of
//!   statements *inside* transactions are expected (a Bind waiting for the migration's lock
//!   fails when it commits: that is what the guard is for); they are reported, not asserted.
//! - every row a client receives has exactly the columns of the statement as the client
//!   prepared it (tokio-postgres's `Statement::columns()`; a DataRow with another field count
//!   is a decode error, and the DataRow's byte size is checked too) and the right values:
//!   items and the view as seeded, inserts echoing what was written, the read-back of a write
//!   returning the id that `RETURNING` gave, the account balance equal to the client's own sum.
//! - `ledger` (no unique constraint, so duplicates show): every acknowledged write present
//!   exactly once with its id; writes of deliberately rolled-back transactions absent; writes
//!   whose statement or COMMIT failed absent (counted separately); no row nobody wrote.
//!   Each account's balance is the sum of the client's committed credits.
//! - it was not vacuous: pgheal's heal counters (healed + projected) are above 0 in each
//!   mode, the migrator ran at least [`MIN_MIGRATIONS`] migrations and none failed, and each
//!   mode ran transactions and single statements.
//!
//! Environment: `STRESS_SECONDS` (default 15; the run goes on until the migrator has done
//! [`MIN_MIGRATIONS`]), `STRESS_CLIENTS` (default 20, at least 2), `STRESS_GUARD` (`off`,
//! `after-schema-change` (default), `always`), `STRESS_TX_POOL_SIZE` (default 4),
//! `STRESS_MIGRATE_PAUSE_MS` (default 200: pause between two migrations), `RUST_LOG` (pgheal's
//! log on stderr, e.g. `pgheal=info` shows every heal). The long run is
//! `scripts/stress-migrations.sh`; results in `docs/stress.md`. `--nocapture` shows the
//! summary; a failure prints it too.
//!
//! Nothing is timed: the only time limits are generous bounds that turn a hang into a failure
//! with a report instead of a stuck CI job.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::load::{
    check_writes, describe, env_or, log_from_env, runtime, ErrorTally, Mode, Rng, WriteCheck,
    WriteLog,
};
use common::{eventually, proxy_url, start_pg_with, start_proxy, try_connect, DB, USER};
use pgheal::cluster::{ClusterOptions, TempCluster};
use pgheal::heal::Outcome;
use pgheal::proxy::ProxyHandle;
use tokio::sync::Barrier;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Row, Statement};

/// Rows in `items`.
const ITEMS: i32 = 500;
/// The migrator runs at least this many migrations: 5 kinds × 6 ways, coprime, so every kind
/// has gone every way.
const MIN_MIGRATIONS: u32 = 30;
/// Columns added to one table or view at most (PostgreSQL allows 1600, dropped ones count).
const MAX_ADDED: u32 = 1000;
/// Bounds that turn a hang into a reported failure (never reached by a working pgheal).
const HANG: Duration = Duration::from_secs(180);
/// The view before any migration; migrations append `NULL::int AS v_<k>` columns.
const VIEW_BASE: &str = "SELECT id, label, price * 2 AS double_price";

struct Settings {
    seconds: f64,
    clients: usize,
    guard: String,
    tx_pool_size: usize,
    pause: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let s = Settings {
            seconds: env_or("STRESS_SECONDS", 15.0),
            clients: env_or("STRESS_CLIENTS", 20),
            guard: env_or("STRESS_GUARD", "after-schema-change".to_string()),
            tx_pool_size: env_or("STRESS_TX_POOL_SIZE", 4),
            pause: Duration::from_millis(env_or("STRESS_MIGRATE_PAUSE_MS", 200)),
        };
        assert!(s.clients >= 2, "STRESS_CLIENTS must be at least 2");
        assert!(s.seconds >= 0.0, "STRESS_SECONDS must be >= 0");
        assert!(s.tx_pool_size >= 1, "STRESS_TX_POOL_SIZE must be >= 1");
        assert!(
            ["off", "after-schema-change", "always"].contains(&s.guard.as_str()),
            "STRESS_GUARD must be off, after-schema-change or always"
        );
        s
    }

    fn session_clients(&self) -> usize {
        self.clients / 2
    }

    fn mode_of(&self, client: i32) -> Mode {
        if (client as usize) < self.session_clients() {
            Mode::Session
        } else {
            Mode::Transaction
        }
    }
}

// ---- The clients' statements ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stmt {
    Item,
    View,
    Insert,
    Mine,
    Account,
    Credit,
}

impl Stmt {
    const ALL: [Stmt; 6] = [
        Stmt::Item,
        Stmt::View,
        Stmt::Insert,
        Stmt::Mine,
        Stmt::Account,
        Stmt::Credit,
    ];

    fn sql(self) -> &'static str {
        match self {
            Stmt::Item => "SELECT * FROM items WHERE id = $1",
            Stmt::View => "SELECT * FROM item_view WHERE id = $1",
            Stmt::Insert => "INSERT INTO ledger(client, seq, note) VALUES ($1, $2, $3) RETURNING *",
            Stmt::Mine => "SELECT * FROM ledger WHERE client = $1 AND seq = $2",
            Stmt::Account => "SELECT id, owner, balance FROM accounts WHERE id = $1",
            Stmt::Credit => {
                "UPDATE accounts SET balance = balance + $2 WHERE id = $1 RETURNING id, balance"
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stmt::Item => "select items",
            Stmt::View => "select view",
            Stmt::Insert => "insert returning",
            Stmt::Mine => "select own write",
            Stmt::Account => "select account",
            Stmt::Credit => "update returning",
        }
    }

    /// The columns the statement has before any migration: its contract.
    fn contract(self) -> &'static [&'static str] {
        match self {
            Stmt::Item => &["id", "price", "label"],
            Stmt::View => &["id", "label", "double_price"],
            Stmt::Insert | Stmt::Mine => &["id", "client", "seq", "note"],
            Stmt::Account => &["id", "owner", "balance"],
            Stmt::Credit => &["id", "balance"],
        }
    }
}

/// One client's prepared statements, by [`Stmt`].
struct Prepared(Vec<Statement>);

impl Prepared {
    fn get(&self, s: Stmt) -> &Statement {
        &self.0[s as usize]
    }
}

/// An expected column value. Columns a statement has that are not listed must be NULL (they
/// were added by migrations, all `int`).
#[derive(Debug)]
enum V {
    I4(i32),
    I8(i64),
    Text(String),
    /// Any non-NULL bigint (the id `RETURNING` gives).
    AnyI8,
}

/// Whether `row` holds exactly `expected` (plus NULLs in the columns not listed), with a
/// DataRow of exactly the size those values take in binary.
fn check_row(row: &Row, expected: &[(&str, V)]) -> Result<(), String> {
    let mut size = 0;
    for (i, col) in row.columns().iter().enumerate() {
        size += 4;
        let Some((_, want)) = expected.iter().find(|(n, _)| *n == col.name()) else {
            match row.try_get::<_, Option<i32>>(i) {
                Ok(None) => continue,
                other => return Err(format!("added column {} is {other:?}", col.name())),
            }
        };
        let ok = match want {
            V::I4(x) => {
                size += 4;
                row.try_get::<_, i32>(i).map(|g| g == *x)
            }
            V::I8(x) => {
                size += 8;
                row.try_get::<_, i64>(i).map(|g| g == *x)
            }
            V::AnyI8 => {
                size += 8;
                row.try_get::<_, i64>(i).map(|_| true)
            }
            V::Text(x) => {
                size += x.len();
                row.try_get::<_, String>(i).map(|g| g == *x)
            }
        };
        if !matches!(ok, Ok(true)) {
            return Err(format!(
                "column {} should be {want:?}: {:?}",
                col.name(),
                row.try_get::<_, Option<String>>(i)
                    .map(|v| format!("{v:?}"))
                    .or_else(|_| row.try_get::<_, Option<i64>>(i).map(|v| format!("{v:?}")))
                    .or_else(|_| row.try_get::<_, Option<i32>>(i).map(|v| format!("{v:?}")))
            ));
        }
    }
    for (name, _) in expected {
        if !row.columns().iter().any(|c| c.name() == *name) {
            return Err(format!("no column {name}"));
        }
    }
    if row.raw_size_bytes() != size {
        return Err(format!(
            "DataRow of {} bytes, the statement's {} columns with these values take {size}",
            row.raw_size_bytes(),
            row.columns().len()
        ));
    }
    Ok(())
}

fn item_row(id: i32) -> Vec<(&'static str, V)> {
    vec![
        ("id", V::I4(id)),
        ("price", V::I8(i64::from(id) * 10)),
        ("label", V::Text(format!("item-{id}"))),
    ]
}

fn view_row(id: i32) -> Vec<(&'static str, V)> {
    vec![
        ("id", V::I4(id)),
        ("label", V::Text(format!("item-{id}"))),
        ("double_price", V::I8(i64::from(id) * 20)),
    ]
}

fn ledger_row(client: i32, seq: i32, id: Option<i64>) -> Vec<(&'static str, V)> {
    vec![
        ("id", id.map_or(V::AnyI8, V::I8)),
        ("client", V::I4(client)),
        ("seq", V::I4(seq)),
        ("note", V::Text(note(client, seq))),
    ]
}

fn note(client: i32, seq: i32) -> String {
    format!("client {client} write {seq}")
}

// ---- One client ----

/// State all tasks share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    t0: OnceLock<Instant>,
    migrations_started: AtomicU32,
    migrations_ended: AtomicU32,
    /// The latest migration: number, kind and way.
    last_migration: Mutex<String>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Seconds since the start and the migration in flight, for error samples.
    fn when(&self) -> String {
        let t = self.t0.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
        let started = self.migrations_started.load(Ordering::Relaxed);
        let ended = self.migrations_ended.load(Ordering::Relaxed);
        let last = self.last_migration.lock().expect("lock").clone();
        match (started, started > ended) {
            (0, _) => format!("at {t:.2}s before any migration"),
            (_, true) => format!("at {t:.2}s during migration {last}"),
            (_, false) => format!("at {t:.2}s after migration {last}"),
        }
    }
}

/// What one client did and saw.
#[derive(Debug, Default)]
struct ClientStats {
    committed: u64,
    rolled_back: u64,
    failed_tx: u64,
    /// Statements run successfully inside explicit transactions and outside them.
    in_tx: u64,
    outside: u64,
    errors: ErrorTally,
    bad_rows: u64,
    bad_samples: Vec<String>,
    writes: WriteLog,
    /// The balance of the client's account: the sum of its committed credits.
    balance: i64,
    /// False once a credit's outcome is unknown (lost connection).
    balance_known: bool,
    reprepared: u64,
}

/// A statement that failed; `db`: with an error from the server (else the connection was lost
/// or a row could not be decoded).
struct Failed {
    db: bool,
}

struct Worker {
    id: i32,
    mode: Mode,
    shared: Arc<Shared>,
    rng: Rng,
    seq: i32,
    stats: ClientStats,
    /// Statements to prepare again (after a cached-plan error, as a retrying driver would).
    reprepare: BTreeSet<Stmt>,
    /// The latest acknowledged write (seq, id), read back by single statements.
    last_acked: Option<(i32, i64)>,
}

impl Worker {
    fn context(&self) -> String {
        format!(
            "client {} ({}) {}",
            self.id,
            self.mode.name(),
            self.shared.when()
        )
    }

    fn error(&mut self, class: &str, e: &tokio_postgres::Error) -> Failed {
        self.error_after(class, e, None)
    }

    /// [`Self::error`] of a statement that was sent `took` before (shown in samples: a long
    /// one waited for a migration's lock).
    fn error_after(
        &mut self,
        class: &str,
        e: &tokio_postgres::Error,
        took: Option<Duration>,
    ) -> Failed {
        let mut context = self.context();
        if let Some(took) = took {
            let _ = write!(context, ", the statement took {} ms", took.as_millis());
        }
        self.stats.errors.record(class, e, || context);
        Failed {
            db: e.as_db_error().is_some(),
        }
    }

    fn bad(&mut self, what: String) {
        self.stats.bad_rows += 1;
        if self.stats.bad_samples.len() < 5 {
            let context = self.context();
            self.stats.bad_samples.push(format!("{context}: {what}"));
        }
    }

    /// Run `which` on `c` (the client, or a transaction) and check its rows: one row with
    /// `expected`, or none when `expected` is None. A wrong row is counted and the statement
    /// still counts as done.
    async fn step<C: GenericClient + Sync>(
        &mut self,
        c: &C,
        p: &Prepared,
        which: Stmt,
        in_tx: bool,
        params: &[&(dyn ToSql + Sync)],
        expected: Option<&[(&str, V)]>,
    ) -> Result<Option<Row>, Failed> {
        let class = format!(
            "{} {}",
            if in_tx { "in transaction," } else { "outside," },
            which.name()
        );
        let sent = Instant::now();
        let rows = match c.query(p.get(which), params).await {
            Ok(rows) => rows,
            Err(e) => {
                let f = self.error_after(&class, &e, Some(sent.elapsed()));
                if describe(&e).0 == "0A000" {
                    self.reprepare.insert(which);
                }
                return Err(f);
            }
        };
        if in_tx {
            self.stats.in_tx += 1;
        } else {
            self.stats.outside += 1;
        }
        match (expected, rows.as_slice()) {
            (None, []) => Ok(None),
            (Some(want), [row]) => {
                if let Err(what) = check_row(row, want) {
                    self.bad(format!("{class}: {what}"));
                }
                Ok(Some(rows.into_iter().next().expect("one row")))
            }
            (_, rows) => {
                self.bad(format!(
                    "{class}: {} rows, expected {}",
                    rows.len(),
                    usize::from(expected.is_some())
                ));
                Ok(rows.first().cloned())
            }
        }
    }

    fn random_item(&mut self) -> i32 {
        self.rng.below(ITEMS as u64) as i32 + 1
    }

    /// One statement outside a transaction.
    async fn single(&mut self, c: &Client, p: &Prepared) {
        let me = self.id;
        match Stmt::ALL[self.rng.below(6) as usize] {
            Stmt::Item => {
                let id = self.random_item();
                let _ = self
                    .step(c, p, Stmt::Item, false, &[&id], Some(&item_row(id)))
                    .await;
            }
            Stmt::View => {
                let id = self.random_item();
                let _ = self
                    .step(c, p, Stmt::View, false, &[&id], Some(&view_row(id)))
                    .await;
            }
            Stmt::Insert => {
                self.seq += 1;
                let seq = self.seq;
                let expected = ledger_row(me, seq, None);
                let r = self
                    .step(
                        c,
                        p,
                        Stmt::Insert,
                        false,
                        &[&me, &seq, &note(me, seq)],
                        Some(&expected),
                    )
                    .await;
                match r {
                    Ok(row) => self.acknowledged(seq, row.as_ref()),
                    Err(Failed { db: true }) => {
                        self.stats.writes.failed.insert(seq);
                    }
                    Err(Failed { db: false }) => {
                        self.stats.writes.uncertain.insert(seq);
                    }
                }
            }
            Stmt::Mine => {
                // Read back the latest acknowledged write, if any.
                let Some((seq, id)) = self.last_acked else {
                    return;
                };
                let _ = self
                    .step(
                        c,
                        p,
                        Stmt::Mine,
                        false,
                        &[&me, &seq],
                        Some(&ledger_row(me, seq, Some(id))),
                    )
                    .await;
            }
            Stmt::Account => {
                let mut expected =
                    vec![("id", V::I4(me)), ("owner", V::Text(format!("owner-{me}")))];
                if self.stats.balance_known {
                    expected.push(("balance", V::I8(self.stats.balance)));
                } else {
                    expected.push(("balance", V::AnyI8));
                }
                let _ = self
                    .step(c, p, Stmt::Account, false, &[&me], Some(&expected))
                    .await;
            }
            Stmt::Credit => {
                let amount = self.rng.below(9) as i64 + 1;
                let r = self.credit(c, p, false, amount).await;
                match r {
                    Ok(()) => self.stats.balance += amount,
                    Err(Failed { db: true }) => {}
                    Err(Failed { db: false }) => self.stats.balance_known = false,
                }
            }
        }
    }

    /// `UPDATE accounts ... RETURNING id, balance` of the client's own account.
    async fn credit<C: GenericClient + Sync>(
        &mut self,
        c: &C,
        p: &Prepared,
        in_tx: bool,
        amount: i64,
    ) -> Result<(), Failed> {
        let me = self.id;
        let balance = if self.stats.balance_known {
            V::I8(self.stats.balance + amount)
        } else {
            V::AnyI8
        };
        self.step(
            c,
            p,
            Stmt::Credit,
            in_tx,
            &[&me, &amount],
            Some(&[("id", V::I4(me)), ("balance", balance)]),
        )
        .await
        .map(|_| ())
    }

    fn ack(&mut self, seq: i32, id: i64) {
        self.stats.writes.acked.insert(seq, id);
        self.last_acked = Some((seq, id));
    }

    /// Record an acknowledged insert and the id it returned.
    fn acknowledged(&mut self, seq: i32, row: Option<&Row>) {
        match row.map(|r| r.try_get::<_, i64>("id")) {
            Some(Ok(id)) => {
                self.ack(seq, id);
            }
            // Counted as a bad row already; the write may be there: at most once.
            _ => {
                self.stats.writes.uncertain.insert(seq);
            }
        }
    }

    /// The statements of a transaction after BEGIN. Returns the id the insert returned.
    async fn transaction_body(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        p: &Prepared,
        seq: i32,
        amount: i64,
        commit: bool,
    ) -> Result<Option<i64>, Failed> {
        let me = self.id;
        let row = self
            .step(
                tx,
                p,
                Stmt::Insert,
                true,
                &[&me, &seq, &note(me, seq)],
                Some(&ledger_row(me, seq, None)),
            )
            .await?;
        let id = row.and_then(|r| r.try_get::<_, i64>("id").ok());
        self.step(
            tx,
            p,
            Stmt::Mine,
            true,
            &[&me, &seq],
            Some(&ledger_row(me, seq, id)),
        )
        .await?;
        if commit {
            let v = self.random_item();
            self.step(tx, p, Stmt::View, true, &[&v], Some(&view_row(v)))
                .await?;
            let i = self.random_item();
            self.step(tx, p, Stmt::Item, true, &[&i], Some(&item_row(i)))
                .await?;
        }
        self.credit(tx, p, true, amount).await?;
        Ok(id)
    }

    /// A transaction that commits (`commit`) or rolls back on purpose.
    async fn transaction(&mut self, c: &mut Client, p: &Prepared, commit: bool) {
        self.seq += 1;
        let seq = self.seq;
        let amount = self.rng.below(9) as i64 + 1;
        let tx = match c.transaction().await {
            Ok(tx) => tx,
            Err(e) => {
                self.error("begin", &e);
                self.stats.failed_tx += 1;
                return;
            }
        };
        let body = self.transaction_body(&tx, p, seq, amount, commit).await;
        let id = match body {
            Ok(id) => id,
            Err(_) => {
                // Nothing of the transaction commits: the write must be absent.
                if let Err(e) = tx.rollback().await {
                    self.error("rollback after an error", &e);
                }
                self.stats.writes.failed.insert(seq);
                self.stats.failed_tx += 1;
                return;
            }
        };
        if !commit {
            match tx.rollback().await {
                Ok(()) => self.stats.rolled_back += 1,
                Err(e) => {
                    self.error("rollback", &e);
                    self.stats.failed_tx += 1;
                }
            }
            // Rolled back either way (a lost connection rolls back too).
            self.stats.writes.rolled_back.insert(seq);
            if !c.is_closed() {
                let me = self.id;
                let _ = self
                    .step(&*c, p, Stmt::Mine, false, &[&me, &seq], None)
                    .await;
            }
            return;
        }
        match tx.commit().await {
            Ok(()) => {
                self.stats.committed += 1;
                self.stats.balance += amount;
                match id {
                    Some(id) => {
                        self.ack(seq, id);
                    }
                    None => {
                        self.stats.writes.uncertain.insert(seq);
                    }
                }
            }
            Err(e) => {
                let f = self.error("commit", &e);
                self.stats.failed_tx += 1;
                if f.db {
                    self.stats.writes.failed.insert(seq);
                } else {
                    self.stats.writes.uncertain.insert(seq);
                    self.stats.balance_known = false;
                }
            }
        }
    }

    async fn connect(&mut self, url: &str) -> Option<(Client, Prepared)> {
        let c = match try_connect(url).await {
            Ok(c) => c,
            Err(e) => {
                self.error("connect", &e);
                return None;
            }
        };
        let mut statements = Vec::new();
        for s in Stmt::ALL {
            match c.prepare(s.sql()).await {
                Ok(st) => statements.push(st),
                Err(e) => {
                    self.error("prepare", &e);
                    return None;
                }
            }
        }
        Some((c, Prepared(statements)))
    }

    async fn run(mut self, url: String, start: Arc<Barrier>) -> ClientStats {
        let mut conn = self.connect(&url).await;
        if let Some((_, p)) = &conn {
            for s in Stmt::ALL {
                let got: Vec<&str> = p.get(s).columns().iter().map(|c| c.name()).collect();
                if got != s.contract() {
                    self.bad(format!(
                        "{} prepared with columns {got:?}, expected {:?}",
                        s.name(),
                        s.contract()
                    ));
                }
            }
        }
        start.wait().await;
        while !self.shared.stopping() {
            let Some((c, p)) = conn.as_mut() else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                conn = self.connect(&url).await;
                continue;
            };
            match self.rng.below(100) {
                0..45 => self.single(c, p).await,
                45..85 => self.transaction(c, p, true).await,
                _ => self.transaction(c, p, false).await,
            }
            if c.is_closed() {
                conn = None;
                continue;
            }
            while let Some(s) = self.reprepare.pop_first() {
                match c.prepare(s.sql()).await {
                    Ok(st) => {
                        p.0[s as usize] = st;
                        self.stats.reprepared += 1;
                    }
                    Err(e) => {
                        self.error("prepare", &e);
                    }
                }
            }
        }
        self.stats
    }
}

// ---- The migrator ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AddItemsColumn,
    AddLedgerColumn,
    ReplaceView,
    AddUnrelated,
    DropUnrelated,
}

const KINDS: [Kind; 5] = [
    Kind::AddItemsColumn,
    Kind::AddLedgerColumn,
    Kind::ReplaceView,
    Kind::AddUnrelated,
    Kind::DropUnrelated,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AddItemsColumn => "ADD COLUMN items (SELECT *)",
            Kind::AddLedgerColumn => "ADD COLUMN ledger (RETURNING *, SELECT *)",
            Kind::ReplaceView => "CREATE OR REPLACE VIEW item_view (+1 column)",
            Kind::AddUnrelated => "ADD COLUMN accounts (unrelated)",
            Kind::DropUnrelated => "DROP COLUMN accounts (unrelated)",
        }
    }
}

/// Where a migration is sent, and whether inside BEGIN ... COMMIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Straight,
    SessionProxy,
    TransactionProxy,
}

const WAYS: [(Route, bool); 6] = [
    (Route::Straight, false),
    (Route::SessionProxy, false),
    (Route::TransactionProxy, false),
    (Route::Straight, true),
    (Route::SessionProxy, true),
    (Route::TransactionProxy, true),
];

fn way_name((route, wrapped): (Route, bool)) -> String {
    let r = match route {
        Route::Straight => "straight (superuser)",
        Route::SessionProxy => "via session pgheal",
        Route::TransactionProxy => "via transaction pgheal",
    };
    if wrapped {
        format!("{r}, in BEGIN..COMMIT")
    } else {
        r.to_string()
    }
}

#[derive(Debug, Default)]
struct MigratorStats {
    /// Successful migrations by kind and way.
    done: [[u32; 6]; 5],
    skipped: u32,
    errors: Vec<String>,
    /// Columns added per kind (the next suffix).
    added: [u32; 5],
}

impl MigratorStats {
    fn total(&self) -> u32 {
        self.done.iter().flatten().sum()
    }
}

struct Migrator {
    urls: [String; 3],
    conns: [Option<Client>; 3],
    shared: Arc<Shared>,
    stats: MigratorStats,
}

impl Migrator {
    fn sql(&mut self, kind: Kind) -> Option<String> {
        let k = match kind {
            Kind::DropUnrelated => self.stats.added[Kind::AddUnrelated as usize],
            _ => self.stats.added[kind as usize] + 1,
        };
        if k > MAX_ADDED {
            return None;
        }
        Some(match kind {
            Kind::AddItemsColumn => format!("ALTER TABLE items ADD COLUMN a_{k} int"),
            Kind::AddLedgerColumn => format!("ALTER TABLE ledger ADD COLUMN l_{k} int"),
            Kind::ReplaceView => {
                let extra: String = (1..=k).map(|i| format!(", NULL::int AS v_{i}")).collect();
                format!("CREATE OR REPLACE VIEW item_view AS {VIEW_BASE}{extra} FROM items")
            }
            Kind::AddUnrelated => format!("ALTER TABLE accounts ADD COLUMN x_{k} int"),
            Kind::DropUnrelated => format!("ALTER TABLE accounts DROP COLUMN IF EXISTS x_{k}"),
        })
    }

    async fn client(&mut self, route: Route) -> Result<&Client, tokio_postgres::Error> {
        let slot = &mut self.conns[route as usize];
        if slot.as_ref().is_none_or(Client::is_closed) {
            let c = try_connect(&self.urls[route as usize]).await?;
            // A stuck migration becomes an error, not a hang.
            c.batch_execute("SET lock_timeout = '60s'").await?;
            *slot = Some(c);
        }
        Ok(slot.as_ref().expect("connected"))
    }

    async fn migrate(&mut self, sql: &str, route: Route, wrapped: bool) -> Result<(), String> {
        let c = self
            .client(route)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if !wrapped {
            return c.batch_execute(sql).await.map_err(|e| e.to_string());
        }
        c.batch_execute("BEGIN").await.map_err(|e| e.to_string())?;
        let r = c.batch_execute(sql).await;
        if let Err(e) = r {
            let _ = c.batch_execute("ROLLBACK").await;
            return Err(e.to_string());
        }
        // Hold the lock a moment, as a migration with more steps would: clients queue behind it.
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.batch_execute("COMMIT").await.map_err(|e| e.to_string())
    }

    async fn run(mut self, pause: Duration, start: Arc<Barrier>) -> MigratorStats {
        start.wait().await;
        let mut n = 0usize;
        while !self.shared.stopping() {
            let wake = Instant::now() + pause;
            while Instant::now() < wake && !self.shared.stopping() {
                tokio::time::sleep(Duration::from_millis(10).min(pause)).await;
            }
            if self.shared.stopping() {
                break;
            }
            let (kind, way) = (KINDS[n % KINDS.len()], n % WAYS.len());
            n += 1;
            let Some(sql) = self.sql(kind) else {
                self.stats.skipped += 1;
                continue;
            };
            let number = self
                .shared
                .migrations_started
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            *self.shared.last_migration.lock().expect("lock") =
                format!("#{number} ({}, {})", kind.name(), way_name(WAYS[way]));
            let (route, wrapped) = WAYS[way];
            let r = self.migrate(&sql, route, wrapped).await;
            self.shared.migrations_ended.fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(()) => {
                    self.stats.done[kind as usize][way] += 1;
                    if kind != Kind::DropUnrelated {
                        self.stats.added[kind as usize] += 1;
                    }
                }
                Err(e) => self.stats.errors.push(format!(
                    "migration #{number} {} {}: {sql:.120}: {e}",
                    kind.name(),
                    way_name(WAYS[way])
                )),
            }
        }
        self.stats
    }
}

// ---- The run ----

fn schema_sql(clients: usize) -> String {
    format!(
        "CREATE TABLE items(id int PRIMARY KEY, price bigint NOT NULL, label text NOT NULL);
         INSERT INTO items SELECT g, g * 10, 'item-' || g FROM generate_series(1, {ITEMS}) g;
         CREATE VIEW item_view AS {VIEW_BASE} FROM items;
         CREATE TABLE ledger(id bigserial, client int NOT NULL, seq int NOT NULL, note text NOT NULL);
         CREATE INDEX ledger_client_seq ON ledger(client, seq);
         CREATE TABLE accounts(id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL);
         INSERT INTO accounts SELECT g, 'owner-' || g, 0 FROM generate_series(0, {}) g;
         ALTER TABLE items OWNER TO {USER};
         ALTER VIEW item_view OWNER TO {USER};
         ALTER TABLE ledger OWNER TO {USER};
         ALTER TABLE accounts OWNER TO {USER};
         VACUUM ANALYZE;",
        clients - 1
    )
}

/// Everything about one pool mode.
#[derive(Debug, Default)]
struct ModeResult {
    clients: usize,
    committed: u64,
    rolled_back: u64,
    failed_tx: u64,
    in_tx: u64,
    outside: u64,
    reprepared: u64,
    errors: ErrorTally,
    bad_rows: u64,
    bad_samples: Vec<String>,
    healed: u64,
    projected: u64,
    refused: u64,
    forwarded_in_tx: u64,
    /// Binds bracketed by the savepoint guard.
    guarded: u64,
    writes: WriteCheck,
    balances_checked: usize,
    balance_samples: Vec<String>,
    balance_mismatches: usize,
}

impl ModeResult {
    fn in_tx_cached_plan(&self) -> u64 {
        self.errors
            .count("0A000", |class| class.starts_with("in transaction"))
    }

    fn cached_plan(&self) -> u64 {
        self.errors.count("0A000", |_| true)
    }

    /// Every violated invariant, as a sentence (`guard_off`: in-transaction cached-plan errors
    /// are expected).
    fn failures(&self, mode: Mode, guard_off: bool) -> Vec<String> {
        let m = mode.name();
        let mut f = Vec::new();
        let tolerated = if guard_off {
            self.in_tx_cached_plan()
        } else {
            0
        };
        if self.cached_plan() > tolerated {
            f.push(format!(
                "{m}: {} client-visible 0A000 errors{}",
                self.cached_plan() - tolerated,
                if guard_off {
                    " outside transactions"
                } else {
                    ""
                }
            ));
        }
        let other = self.errors.total() - self.cached_plan();
        if other > 0 {
            f.push(format!("{m}: {other} other client-visible errors"));
        }
        if self.bad_rows > 0 {
            f.push(format!(
                "{m}: {} rows not in their contract shape or with wrong values",
                self.bad_rows
            ));
        }
        f.extend(
            self.writes
                .failures()
                .into_iter()
                .map(|w| format!("{m}: ledger: {w}")),
        );
        if self.balance_mismatches > 0 {
            f.push(format!(
                "{m}: {} account balances differ from the committed credits",
                self.balance_mismatches
            ));
        }
        if self.refused > 0 {
            f.push(format!(
                "{m}: pgheal refused {} heals (contract not kept) in healable classes",
                self.refused
            ));
        }
        if self.healed + self.projected == 0 {
            f.push(format!("{m}: no heal happened: the test proved nothing"));
        }
        if self.committed == 0 || self.outside == 0 || self.rolled_back == 0 {
            f.push(format!(
                "{m}: a workload did not run (committed {}, rolled back {}, statements outside {})",
                self.committed, self.rolled_back, self.outside
            ));
        }
        f
    }
}

async fn start_one(pg: &TempCluster, s: &Settings, mode: Mode) -> ProxyHandle {
    let pool = match mode {
        Mode::Session => s.session_clients() + 2,
        Mode::Transaction => s.tx_pool_size,
    };
    let guard = s.guard.clone();
    start_proxy(pg, move |a| {
        a.pool_mode = Some(mode.name().into());
        a.pool_size = Some(pool);
        a.schema_watch = Some("listen".into());
        a.savepoint_guard = Some(guard);
    })
    .await
}

/// Count of connections that pgheal's schema watches have LISTENing.
async fn watches_listening(admin: &Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'pgheal schema watch' AND query LIKE 'LISTEN %'",
            &[],
        )
        .await
        .map_or(0, |r| r.get(0))
}

/// Columns (live, dropped) of a relation.
async fn columns(admin: &Client, rel: &str) -> (i64, i64) {
    let r = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE NOT attisdropped), count(*) FILTER (WHERE attisdropped)
             FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0",
            &[&rel],
        )
        .await
        .expect("pg_attribute");
    (r.get(0), r.get(1))
}

#[test]
fn clients_in_both_pool_modes_survive_continuous_migrations() {
    log_from_env();
    let s = Settings::from_env();
    let pg = start_pg_with(ClusterOptions {
        max_connections: (s.clients as u32 + 40).max(100),
        ..Default::default()
    });
    common::admin(&pg, &schema_sql(s.clients));
    let proxy_rt = runtime("pgheal", 2);
    let client_rt = runtime("stress-client", 2);
    let superuser = pg.superuser_url(DB);
    client_rt
        .block_on(pgheal::watch::install(&superuser))
        .expect("install the schema watch");
    // pgheal on runtimes of its own, as it would be in a process of its own.
    let proxies = [
        proxy_rt.block_on(start_one(&pg, &s, Mode::Session)),
        proxy_rt.block_on(start_one(&pg, &s, Mode::Transaction)),
    ];
    let urls = [proxy_url(&proxies[0]), proxy_url(&proxies[1])];
    let admin = client_rt.block_on(async {
        let admin = try_connect(&superuser).await.expect("superuser connects");
        let admin_ref = &admin;
        let listening = eventually(
            HANG,
            || async move { watches_listening(admin_ref).await >= 2 },
        )
        .await;
        assert!(listening, "both pgheal schema watches LISTEN");
        // `after-schema-change` guards while DDL through that pgheal is uncommitted and for a
        // window after the epoch last advanced; DDL made straight on the server (or through
        // the other pgheal) is known only once it commits, so the first such migration after
        // a quiet period is not guarded, by design. One schema change before the start opens
        // the window, as a migration run does in production; the migrator keeps it open.
        let before = proxies.each_ref().map(|p| p.schema_epoch(DB));
        admin
            .batch_execute("CREATE TABLE stress_warmup(); DROP TABLE stress_warmup;")
            .await
            .expect("warm-up DDL");
        let proxies_ref = &proxies;
        let learned = eventually(HANG, || async move {
            proxies_ref
                .iter()
                .zip(before)
                .all(|(p, b)| p.schema_epoch(DB) > b)
        })
        .await;
        assert!(learned, "both pgheal learn of the warm-up DDL");
        admin
    });

    let shared = Arc::new(Shared::default());
    let start = Arc::new(Barrier::new(s.clients + 2));
    let (clients, migrator, stuck, elapsed) = client_rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..s.clients as i32 {
            let mode = s.mode_of(i);
            let worker = Worker {
                id: i,
                mode,
                shared: shared.clone(),
                rng: Rng::for_client(i),
                seq: 0,
                stats: ClientStats {
                    balance_known: true,
                    ..Default::default()
                },
                reprepare: BTreeSet::new(),
                last_acked: None,
            };
            tasks.push((
                mode,
                tokio::spawn(worker.run(urls[mode as usize].clone(), start.clone())),
            ));
        }
        let migrator = Migrator {
            urls: [superuser.clone(), urls[0].clone(), urls[1].clone()],
            conns: [None, None, None],
            shared: shared.clone(),
            stats: MigratorStats::default(),
        };
        let migrator = tokio::spawn(migrator.run(s.pause, start.clone()));
        start.wait().await;
        let began = Instant::now();
        let _ = shared.t0.set(began);
        tokio::time::sleep(Duration::from_secs_f64(s.seconds)).await;
        // Run on until every kind of migration has gone every way (bounded: a stuck migrator
        // is reported below).
        let sh = &shared;
        let enough = eventually(HANG, || async move {
            sh.migrations_ended.load(Ordering::Relaxed) >= MIN_MIGRATIONS
        })
        .await;
        shared.stop.store(true, Ordering::Relaxed);
        let mut clients = Vec::new();
        let mut stuck = Vec::new();
        for (i, (mode, task)) in tasks.into_iter().enumerate() {
            match tokio::time::timeout(HANG, task).await {
                Ok(stats) => clients.push((i as i32, mode, stats.expect("client task"))),
                Err(_) => stuck.push(format!("client {i} ({}) did not finish", mode.name())),
            }
        }
        let elapsed = began.elapsed().as_secs_f64();
        let migrator = match tokio::time::timeout(HANG, migrator).await {
            Ok(m) => m.expect("migrator task"),
            Err(_) => {
                stuck.push("the migrator did not finish".into());
                MigratorStats::default()
            }
        };
        if !enough {
            stuck.push(format!(
                "the migrator ended only {} migrations",
                shared.migrations_ended.load(Ordering::Relaxed)
            ));
        }
        (clients, migrator, stuck, elapsed)
    });

    // Collect per mode, and check the tables.
    let mut results = [ModeResult::default(), ModeResult::default()];
    for (mode, proxy) in [Mode::Session, Mode::Transaction].into_iter().zip(&proxies) {
        let r = &mut results[mode as usize];
        r.healed = proxy.metrics.heal_count(Outcome::Healed);
        r.projected = proxy.metrics.heal_count(Outcome::Projected);
        r.refused = proxy.metrics.heal_count(Outcome::Refused);
        r.forwarded_in_tx = proxy.metrics.heal_count(Outcome::ForwardedInTransaction);
        r.guarded = proxy.metrics.savepoint_guards.get();
        let mine: Vec<&(i32, Mode, ClientStats)> =
            clients.iter().filter(|(_, m, _)| *m == mode).collect();
        r.clients = mine.len();
        for (_, _, c) in &mine {
            r.committed += c.committed;
            r.rolled_back += c.rolled_back;
            r.failed_tx += c.failed_tx;
            r.in_tx += c.in_tx;
            r.outside += c.outside;
            r.reprepared += c.reprepared;
            r.errors.merge(&c.errors);
            r.bad_rows += c.bad_rows;
            r.bad_samples.extend(c.bad_samples.iter().cloned());
        }
        let writers: Vec<(i32, &WriteLog)> = mine.iter().map(|(i, _, c)| (*i, &c.writes)).collect();
        r.writes = client_rt.block_on(check_writes(&admin, "ledger", &writers));
        for (i, _, c) in &mine {
            if !c.balance_known {
                continue;
            }
            let balance: i64 = client_rt
                .block_on(admin.query_one("SELECT balance FROM accounts WHERE id = $1", &[i]))
                .expect("balance")
                .get(0);
            r.balances_checked += 1;
            if balance != c.balance {
                r.balance_mismatches += 1;
                r.balance_samples.push(format!(
                    "client {i}: balance {balance}, committed credits sum to {}",
                    c.balance
                ));
            }
        }
    }
    let (items_ok, shapes) = client_rt.block_on(async {
        let items: i64 = admin
            .query_one(
                "SELECT count(*) FROM items WHERE price = id * 10 AND label = 'item-' || id",
                &[],
            )
            .await
            .expect("items")
            .get(0);
        let mut shapes = Vec::new();
        for rel in ["items", "ledger", "item_view", "accounts"] {
            shapes.push((rel, columns(&admin, rel).await));
        }
        (items == i64::from(ITEMS), shapes)
    });

    let report = report(&s, &results, &migrator, elapsed, &shapes);
    println!("{report}");

    // Teardown: clients are gone (their tasks ended); stop both proxies, then the cluster.
    drop(clients);
    drop(admin);
    for p in proxies {
        proxy_rt.block_on(async {
            let _ = tokio::time::timeout(HANG, p.shutdown()).await;
        });
    }
    drop(client_rt);
    drop(proxy_rt);
    drop(pg);

    let guard_off = s.guard == "off";
    let mut failures: Vec<String> = stuck;
    for mode in [Mode::Session, Mode::Transaction] {
        failures.extend(results[mode as usize].failures(mode, guard_off));
    }
    if !items_ok {
        failures.push("items changed".into());
    }
    if migrator.total() < MIN_MIGRATIONS {
        failures.push(format!(
            "only {} migrations succeeded (at least {MIN_MIGRATIONS} expected)",
            migrator.total()
        ));
    }
    if !migrator.errors.is_empty() {
        failures.push(format!("{} migrations failed", migrator.errors.len()));
    }
    assert!(
        failures.is_empty(),
        "stress_migrations failed (the summary is in the test's stdout above):\n  {}",
        failures.join("\n  ")
    );
}

fn report(
    s: &Settings,
    results: &[ModeResult; 2],
    m: &MigratorStats,
    elapsed: f64,
    shapes: &[(&str, (i64, i64))],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "stress_migrations: {} clients ({} session, {} transaction on a pool of {}), {elapsed:.1} s, \
         savepoint guard {}, schema watch on, a migration every {} ms + its run time",
        s.clients,
        s.session_clients(),
        s.clients - s.session_clients(),
        s.tx_pool_size,
        s.guard,
        s.pause.as_millis()
    );
    let modes = [Mode::Session, Mode::Transaction];
    let _ = writeln!(out);
    out += &table(
        &[
            "mode",
            "clients",
            "tx committed",
            "tx rolled back",
            "tx failed",
            "stmts in tx",
            "stmts outside",
            "healed",
            "projected",
            "refused",
            "fwd in tx",
            "guarded Binds",
            "0A000 in tx",
            "0A000 outside",
            "other errors",
            "bad rows",
        ],
        modes.iter().zip(results).map(|(mode, r)| {
            vec![
                mode.name().to_string(),
                r.clients.to_string(),
                r.committed.to_string(),
                r.rolled_back.to_string(),
                r.failed_tx.to_string(),
                r.in_tx.to_string(),
                r.outside.to_string(),
                r.healed.to_string(),
                r.projected.to_string(),
                r.refused.to_string(),
                r.forwarded_in_tx.to_string(),
                r.guarded.to_string(),
                r.in_tx_cached_plan().to_string(),
                (r.cached_plan() - r.in_tx_cached_plan()).to_string(),
                (r.errors.total() - r.cached_plan()).to_string(),
                r.bad_rows.to_string(),
            ]
        }),
    );
    let _ = writeln!(out);
    out += &table(
        &[
            "ledger",
            "acknowledged",
            "present once",
            "duplicates",
            "missing",
            "id mismatch",
            "failed (present)",
            "rolled back (present)",
            "uncertain (present)",
            "unknown rows",
            "balances ok",
        ],
        modes.iter().zip(results).map(|(mode, r)| {
            let w = &r.writes;
            vec![
                mode.name().to_string(),
                w.acked.to_string(),
                w.confirmed.to_string(),
                w.duplicates.to_string(),
                w.missing.to_string(),
                w.id_mismatch.to_string(),
                format!("{} ({})", w.failed, w.failed_present),
                format!("{} ({})", w.rolled_back, w.rolled_back_present),
                format!("{} ({})", w.uncertain, w.uncertain_present),
                w.unknown.to_string(),
                format!(
                    "{}/{}",
                    r.balances_checked - r.balance_mismatches,
                    r.balances_checked
                ),
            ]
        }),
    );
    if s.guard == "off" {
        let _ = writeln!(
            out,
            "savepoint guard off: the 0A000 errors inside transactions are expected (a Bind that \
             waited for a migration's lock fails when it commits) and not asserted"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "migrations: {} succeeded, {} failed, {} skipped (column limit)",
        m.total(),
        m.errors.len(),
        m.skipped
    );
    let ways: Vec<String> = WAYS.iter().map(|w| way_name(*w)).collect();
    let mut header = vec!["kind"];
    header.extend(ways.iter().map(String::as_str));
    header.push("total");
    out += &table(
        &header,
        KINDS.iter().map(|kind| {
            let row = &m.done[*kind as usize];
            let mut cells = vec![kind.name().to_string()];
            cells.extend(row.iter().map(u32::to_string));
            cells.push(row.iter().sum::<u32>().to_string());
            cells
        }),
    );
    let shape: Vec<String> = shapes
        .iter()
        .map(|(rel, (live, dropped))| format!("{rel} {live} columns (+{dropped} dropped)"))
        .collect();
    let _ = writeln!(out, "final shapes: {}", shape.join(", "));
    for (mode, r) in modes.iter().zip(results) {
        if r.errors.total() > 0 {
            let _ = writeln!(out);
            let _ = writeln!(out, "{} client errors by class:", mode.name());
            for ((class, code), n) in &r.errors.counts {
                let _ = writeln!(out, "  {class} {code}: {n}");
            }
        }
        if r.reprepared > 0 {
            let _ = writeln!(
                out,
                "{}: statements prepared again by clients after a cached-plan error: {}",
                mode.name(),
                r.reprepared
            );
        }
        for line in r
            .errors
            .all_samples()
            .chain(&r.bad_samples)
            .chain(&r.writes.samples)
            .chain(&r.balance_samples)
        {
            let _ = writeln!(out, "    {line}");
        }
    }
    for e in &m.errors {
        let _ = writeln!(out, "  migrator: {e}");
    }
    out
}

/// A Markdown table: the first column left-aligned, the others right-aligned, padded so the
/// table also reads as plain text.
fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: Vec<String>| {
        let cells: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| match i {
                0 => format!("{c:<w$}", w = widths[i]),
                _ => format!("{c:>w$}", w = widths[i]),
            })
            .collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| match i {
            0 => "-".repeat(w + 2),
            _ => format!("{}:", "-".repeat(w + 1)),
        })
        .collect();
    out += &format!("|{}|\n", rule.join("|"));
    for r in rows {
        out += &line(r);
    }
    out
}
