//! The migrator: one migration after the other until the run stops (and at least
//! [`MIN_MIGRATIONS`](crate::stress_migrations::MIN_MIGRATIONS)), each [`Kind`] in rotation, each going one of
//! the [`WAYS`] in rotation: straight to the server or through either pgheal, as one
//! statement or inside BEGIN ... COMMIT held open a moment. [`MigratorStats`] counts them by
//! kind and way.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;
use tokio_postgres::Client;

use crate::common::try_connect;
use crate::stress_migrations::{Shared, VIEW_BASE};

/// Columns added to one table or view at most (PostgreSQL allows 1600, dropped ones count).
const MAX_ADDED: u32 = 1000;

/// What a migration changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    AddItemsColumn,
    AddLedgerColumn,
    ReplaceView,
    AddUnrelated,
    DropUnrelated,
}

pub const KINDS: [Kind; 5] = [
    Kind::AddItemsColumn,
    Kind::AddLedgerColumn,
    Kind::ReplaceView,
    Kind::AddUnrelated,
    Kind::DropUnrelated,
];

impl Kind {
    pub fn name(self) -> &'static str {
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
pub enum Route {
    Straight,
    SessionProxy,
    TransactionProxy,
}

pub const WAYS: [(Route, bool); 6] = [
    (Route::Straight, false),
    (Route::SessionProxy, false),
    (Route::TransactionProxy, false),
    (Route::Straight, true),
    (Route::SessionProxy, true),
    (Route::TransactionProxy, true),
];

pub fn way_name((route, wrapped): (Route, bool)) -> String {
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

/// What the migrator did.
#[derive(Debug, Default)]
pub struct MigratorStats {
    /// Successful migrations by kind and way.
    pub done: [[u32; 6]; 5],
    pub skipped: u32,
    pub errors: Vec<String>,
    /// Columns added per kind (the next suffix).
    added: [u32; 5],
}

impl MigratorStats {
    pub fn total(&self) -> u32 {
        self.done.iter().flatten().sum()
    }
}

pub struct Migrator {
    urls: [String; 3],
    conns: [Option<Client>; 3],
    shared: Arc<Shared>,
    stats: MigratorStats,
}

impl Migrator {
    /// A migrator that connects to `urls` by [`Route`]: the server as the superuser, the
    /// session pgheal, the transaction pgheal.
    pub fn new(urls: [String; 3], shared: Arc<Shared>) -> Migrator {
        Migrator {
            urls,
            conns: [None, None, None],
            shared,
            stats: MigratorStats::default(),
        }
    }

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

    pub async fn run(mut self, pause: Duration, start: Arc<Barrier>) -> MigratorStats {
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
