//! Pieces shared by the programs that load pgheal with many tokio-postgres clients while a
//! migrator changes the schema (`tests/it/stress_migrations/`, `benches/heal_load.rs`, which
//! includes this file with `#[path]`): pool modes, runtimes, settings from the environment, a
//! small RNG, a tally of client-visible errors with samples, and the write-integrity check of a
//! table of `(client, seq)` keys that has no unique constraint, so a write made twice shows.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio_postgres::Client;

/// Samples kept per error class, and per kind of failed write check.
pub const SAMPLES: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    Session,
    Transaction,
}

impl Mode {
    /// The `--pool-mode` value.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Session => "session",
            Mode::Transaction => "transaction",
        }
    }
}

/// A multi-threaded tokio runtime with `threads` workers named `name` (pgheal and the clients
/// each get their own, as they would be processes of their own).
pub fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// pgheal's logs on stderr when `RUST_LOG` is set (e.g. `pgheal=info` shows every heal).
pub fn log_from_env() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// The value of environment variable `name`, or `default` when it is unset or blank.
/// Panics with the variable's name on a value that does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        _ => default,
    }
}

/// xorshift64*: enough randomness for picking ids and actions, reproducible from the seed.
pub struct Rng(pub u64);

impl Rng {
    /// A generator for client `n` (distinct, non-zero seeds).
    pub fn for_client(n: i32) -> Rng {
        Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1).wrapping_mul(0x1000_0001))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The SQLSTATE of an error (`driver` when no server ErrorResponse was involved: a lost
/// connection, or a row tokio-postgres refused to decode) and a one-line description.
pub fn describe(e: &tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (
            db.code().code().to_string(),
            format!(
                "{} {} (routine {:?}, detail {:?})",
                db.severity(),
                db.message(),
                db.routine(),
                db.detail()
            ),
        ),
        None => ("driver".to_string(), e.to_string()),
    }
}

/// Client-visible errors counted by (class, SQLSTATE), with the first few of each as samples.
#[derive(Debug, Default, Clone)]
pub struct ErrorTally {
    pub counts: BTreeMap<(String, String), u64>,
    pub samples: BTreeMap<(String, String), Vec<String>>,
}

impl ErrorTally {
    /// Count `e` under `class`; `context` (who, when) is only formatted for a sample.
    /// Returns the SQLSTATE.
    pub fn record(
        &mut self,
        class: &str,
        e: &tokio_postgres::Error,
        context: impl FnOnce() -> String,
    ) -> String {
        let (code, text) = describe(e);
        let key = (class.to_string(), code.clone());
        *self.counts.entry(key.clone()).or_default() += 1;
        let samples = self.samples.entry(key).or_default();
        if samples.len() < SAMPLES {
            samples.push(format!("{}, {class}: {code} {text}", context()));
        }
        code
    }

    pub fn merge(&mut self, other: &ErrorTally) {
        for (key, n) in &other.counts {
            *self.counts.entry(key.clone()).or_default() += n;
        }
        for (key, more) in &other.samples {
            let kept = self.samples.entry(key.clone()).or_default();
            let room = SAMPLES.saturating_sub(kept.len());
            kept.extend(more.iter().take(room).cloned());
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Errors whose SQLSTATE is `code` and whose class `in_class` accepts.
    pub fn count(&self, code: &str, in_class: impl Fn(&str) -> bool) -> u64 {
        self.counts
            .iter()
            .filter(|((class, c), _)| c == code && in_class(class))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every sample, class by class.
    pub fn all_samples(&self) -> impl Iterator<Item = &String> {
        self.samples.values().flatten()
    }
}

/// What one client knows about the rows it tried to write, by its sequence number.
#[derive(Debug, Default)]
pub struct WriteLog {
    /// Acknowledged: seq → the id the server returned. Must be present exactly once.
    pub acked: HashMap<i32, i64>,
    /// The statement or its COMMIT failed with an error from the server: must be absent.
    pub failed: HashSet<i32>,
    /// Written inside a transaction that the client rolled back on purpose: must be absent.
    pub rolled_back: HashSet<i32>,
    /// Outcome unknown (the connection was lost): allowed either way, at most once.
    pub uncertain: HashSet<i32>,
}

/// A table compared with what its writers were told.
#[derive(Debug, Default)]
pub struct WriteCheck {
    pub acked: u64,
    /// Acknowledged writes present exactly once with the returned id.
    pub confirmed: u64,
    /// Extra copies of a `(client, seq)`.
    pub duplicates: u64,
    /// Acknowledged writes not in the table.
    pub missing: u64,
    /// Acknowledged writes whose row has another id than the client was told.
    pub id_mismatch: u64,
    pub failed: u64,
    /// Writes the client got an error for, present in the table.
    pub failed_present: u64,
    pub rolled_back: u64,
    /// Writes of deliberately rolled-back transactions, present in the table.
    pub rolled_back_present: u64,
    pub uncertain: u64,
    pub uncertain_present: u64,
    /// Rows no writer knows of.
    pub unknown: u64,
    pub samples: Vec<String>,
}

impl WriteCheck {
    fn sample(&mut self, s: String) {
        if self.samples.len() < SAMPLES * 3 {
            self.samples.push(s);
        }
    }

    /// How many of `seqs` (writes of `client` that must be absent) are present.
    fn present_of(
        &mut self,
        present: &HashMap<(i32, i32), Vec<i64>>,
        client: i32,
        seqs: &HashSet<i32>,
        what: &str,
    ) -> u64 {
        let mut n = 0;
        for &seq in seqs {
            if present.contains_key(&(client, seq)) {
                n += 1;
                self.sample(format!(
                    "present: client {client} seq {seq}, whose write {what}"
                ));
            }
        }
        n
    }

    /// Every violated invariant, as a sentence.
    pub fn failures(&self) -> Vec<String> {
        [
            (self.duplicates, "duplicated writes"),
            (self.missing, "acknowledged writes missing"),
            (self.id_mismatch, "acknowledged writes with another id"),
            (
                self.failed_present,
                "writes present that the client got an error for",
            ),
            (
                self.rolled_back_present,
                "writes of rolled-back transactions present",
            ),
            (self.unknown, "rows present that no client wrote"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect()
    }
}

/// Compare `table` (columns `id bigint`, `client int`, `seq int`; no unique constraint) with
/// the logs of `writers` (client number, log). Only rows of those clients are looked at.
pub async fn check_writes(admin: &Client, table: &str, writers: &[(i32, &WriteLog)]) -> WriteCheck {
    let ids: Vec<i32> = writers.iter().map(|(c, _)| *c).collect();
    let mut present: HashMap<(i32, i32), Vec<i64>> = HashMap::new();
    for row in admin
        .query(
            &format!("SELECT client, seq, id FROM {table} WHERE client = ANY($1)"),
            &[&ids],
        )
        .await
        .unwrap_or_else(|e| panic!("reading {table}: {e}"))
    {
        present
            .entry((row.get(0), row.get(1)))
            .or_default()
            .push(row.get(2));
    }
    let mut r = WriteCheck::default();
    for (&(client, seq), copies) in &present {
        if copies.len() > 1 {
            r.duplicates += copies.len() as u64 - 1;
            r.sample(format!(
                "duplicate: client {client} seq {seq} present {} times (ids {copies:?})",
                copies.len()
            ));
        }
    }
    for &(client, log) in writers {
        r.acked += log.acked.len() as u64;
        r.failed += log.failed.len() as u64;
        r.rolled_back += log.rolled_back.len() as u64;
        r.uncertain += log.uncertain.len() as u64;
        for (&seq, &id) in &log.acked {
            match present.get(&(client, seq)).map(Vec::as_slice) {
                None => {
                    r.missing += 1;
                    r.sample(format!(
                        "missing: client {client} seq {seq} (acknowledged with id {id})"
                    ));
                }
                Some([got]) if *got == id => r.confirmed += 1,
                Some(got) if !got.contains(&id) => {
                    r.id_mismatch += 1;
                    r.sample(format!(
                        "id mismatch: client {client} seq {seq}: the client was told {id}, the table has {got:?}"
                    ));
                }
                Some(_) => {} // a duplicate, counted above
            }
        }
        r.failed_present += r.present_of(&present, client, &log.failed, "failed");
        r.rolled_back_present +=
            r.present_of(&present, client, &log.rolled_back, "was rolled back");
        r.uncertain_present += log
            .uncertain
            .iter()
            .filter(|&&seq| present.contains_key(&(client, seq)))
            .count() as u64;
    }
    let logs: HashMap<i32, &WriteLog> = writers.iter().copied().collect();
    for &(client, seq) in present.keys() {
        let known = logs.get(&client).is_some_and(|l| {
            l.acked.contains_key(&seq)
                || l.failed.contains(&seq)
                || l.rolled_back.contains(&seq)
                || l.uncertain.contains(&seq)
        });
        if !known {
            r.unknown += 1;
            r.sample(format!(
                "unknown: client {client} seq {seq} is in {table} but the client never sent it"
            ));
        }
    }
    r
}
