//! The checks of one pool mode: [`collect`] gathers pgheal's heal counters and its clients'
//! stats and checks the ledger and the account balances on the server; [`ModeResult::failures`]
//! lists every invariant the mode violated.

use pgheal::heal::Outcome;
use pgheal::proxy::ProxyHandle;
use tokio_postgres::Client;

use crate::common::load::{check_writes, ErrorTally, Mode, WriteCheck, WriteLog};
use crate::stress_migrations::client::ClientStats;

/// Everything about one pool mode.
#[derive(Debug, Default)]
pub struct ModeResult {
    pub clients: usize,
    pub committed: u64,
    pub rolled_back: u64,
    pub failed_tx: u64,
    pub in_tx: u64,
    pub outside: u64,
    pub reprepared: u64,
    pub errors: ErrorTally,
    pub bad_rows: u64,
    pub bad_samples: Vec<String>,
    pub healed: u64,
    pub projected: u64,
    pub refused: u64,
    pub forwarded_in_tx: u64,
    /// Binds bracketed by the savepoint guard.
    pub guarded: u64,
    pub writes: WriteCheck,
    pub balances_checked: usize,
    pub balance_samples: Vec<String>,
    pub balance_mismatches: usize,
}

impl ModeResult {
    pub fn in_tx_cached_plan(&self) -> u64 {
        self.errors
            .count("0A000", |class| class.starts_with("in transaction"))
    }

    pub fn cached_plan(&self) -> u64 {
        self.errors.count("0A000", |_| true)
    }

    /// Every violated invariant, as a sentence (`guard_off`: in-transaction cached-plan errors
    /// are expected).
    pub fn failures(&self, mode: Mode, guard_off: bool) -> Vec<String> {
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

/// Everything about `mode`: the heal counters of its pgheal (`proxy`), the stats of its
/// clients (`clients` holds those of both modes), and the ledger and the account balances
/// checked through `admin`.
pub async fn collect(
    mode: Mode,
    proxy: &ProxyHandle,
    clients: &[(i32, Mode, ClientStats)],
    admin: &Client,
) -> ModeResult {
    let mut r = ModeResult {
        healed: proxy.metrics.heal_count(Outcome::Healed),
        projected: proxy.metrics.heal_count(Outcome::Projected),
        refused: proxy.metrics.heal_count(Outcome::Refused),
        forwarded_in_tx: proxy.metrics.heal_count(Outcome::ForwardedInTransaction),
        guarded: proxy.metrics.savepoint_guards.get(),
        ..Default::default()
    };
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
    r.writes = check_writes(admin, "ledger", &writers).await;
    for (i, _, c) in &mine {
        if !c.balance_known {
            continue;
        }
        let balance: i64 = admin
            .query_one("SELECT balance FROM accounts WHERE id = $1", &[i])
            .await
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
    r
}
