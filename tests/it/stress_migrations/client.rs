//! One client: a [`Worker`] connects through its pool mode's pgheal, prepares the
//! [`Stmt`]s once and, until the run stops, picks at random a single statement, a transaction
//! that commits or one that rolls back on purpose. It checks every row it receives, records
//! its writes for the ledger check and counts what it did and every error it saw
//! ([`ClientStats`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Row};

use crate::common::load::{describe, ErrorTally, Mode, Rng, WriteLog};
use crate::common::try_connect;
use crate::stress_migrations::workload::{
    check_row, item_row, ledger_row, note, view_row, Prepared, Stmt, V,
};
use crate::stress_migrations::{Shared, ITEMS};

/// What one client did and saw.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub committed: u64,
    pub rolled_back: u64,
    pub failed_tx: u64,
    /// Statements run successfully inside explicit transactions and outside them.
    pub in_tx: u64,
    pub outside: u64,
    pub errors: ErrorTally,
    pub bad_rows: u64,
    pub bad_samples: Vec<String>,
    pub writes: WriteLog,
    /// The balance of the client's account: the sum of its committed credits.
    pub balance: i64,
    /// False once a credit's outcome is unknown (lost connection).
    pub balance_known: bool,
    pub reprepared: u64,
}

/// A statement that failed; `db`: with an error from the server (else the connection was lost
/// or a row could not be decoded).
struct Failed {
    db: bool,
}

pub struct Worker {
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
    /// Client `id`, not connected yet; its account's balance (0) is known.
    pub fn new(id: i32, mode: Mode, shared: Arc<Shared>) -> Worker {
        Worker {
            id,
            mode,
            shared,
            rng: Rng::for_client(id),
            seq: 0,
            stats: ClientStats {
                balance_known: true,
                ..Default::default()
            },
            reprepare: BTreeSet::new(),
            last_acked: None,
        }
    }

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

    pub async fn run(mut self, url: String, start: Arc<Barrier>) -> ClientStats {
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
