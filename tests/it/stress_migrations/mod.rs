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
//!
//! Files: this one has the settings, the schema, the proxies and the test itself;
//! `workload.rs` the clients' statements and the rows they must get back; `client.rs` one
//! client; `migrator.rs` the migrator; `checks.rs` the checks of one pool mode; `report.rs` the
//! summary.

use crate::common;

mod checks;
mod client;
mod migrator;
mod report;
mod workload;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::load::{env_or, log_from_env, runtime, Mode};
use common::{eventually, proxy_url, start_pg_with, start_proxy, try_connect, DB, USER};
use pgheal::cluster::{ClusterOptions, TempCluster};
use pgheal::proxy::ProxyHandle;
use tokio::sync::Barrier;
use tokio_postgres::Client;

use checks::collect;
use client::Worker;
use migrator::{Migrator, MigratorStats};
use report::report;

/// Rows in `items`.
const ITEMS: i32 = 500;
/// The migrator runs at least this many migrations: 5 kinds × 6 ways, coprime, so every kind
/// has gone every way.
const MIN_MIGRATIONS: u32 = 30;
/// Bounds that turn a hang into a reported failure (never reached by a working pgheal).
const HANG: Duration = Duration::from_secs(180);
/// The view before any migration; migrations append `NULL::int AS v_<k>` columns.
const VIEW_BASE: &str = "SELECT id, label, price * 2 AS double_price";

/// The run's settings, from the environment (see above).
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
            let worker = Worker::new(i, mode, shared.clone());
            tasks.push((
                mode,
                tokio::spawn(worker.run(urls[mode as usize].clone(), start.clone())),
            ));
        }
        let migrator = Migrator::new(
            [superuser.clone(), urls[0].clone(), urls[1].clone()],
            shared.clone(),
        );
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
    let results = client_rt.block_on(async {
        [
            collect(Mode::Session, &proxies[0], &clients, &admin).await,
            collect(Mode::Transaction, &proxies[1], &clients, &admin).await,
        ]
    });
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
