//! Which host a new server connection goes to, when a database lists several
//! (`host=a,b,c`), and which hosts to leave alone for a while because connecting or logging
//! into them failed (`server_login_retry`).
//!
//! PgBouncer 1.24's rules, with one difference:
//! - `load_balance_hosts = round-robin` (the default): each new connection starts at the next
//!   host of the list; `disable`: connections stay on one host until it fails, then move on
//!   to the next one for good.
//! - A host whose connect, TLS or login failed is marked with the error and skipped until
//!   `server_login_retry` has passed. While every host is marked, new connections fail at once
//!   with PgBouncer's "server login has been failing, cached error: ..." instead of waiting.
//! - Difference: PgBouncer waits `server_login_retry` before its next attempt of the pool
//!   whatever the host; pgheal tries the next unmarked host of the list right away in the same
//!   attempt, so after a host stops, new clients get another one within
//!   `server_connect_timeout` (immediately, when the stopped host refuses connections).
//!
//! A database with a single host is not marked: every new connection tries it (pgheal's
//! behaviour before host lists, and clients get the server's own error).
//!
//! Host names are resolved at each connection (see `ServerConn::connect`), so a DNS change is
//! seen by the next connection; there is no cache of pgheal's own.
//!
//! The state is shared by every clone of a pool's [`super::server::ServerLogin`] and replaced
//! with it when a reload changes the host list.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::servers::LoadBalanceHosts;

/// What a database entry adds to its server logins: the host choice, startup parameters and
/// `connect_query`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoginExtras {
    pub choice: HostChoice,
    /// The port of each host, when they differ (else the login's `port` for all).
    pub ports: Vec<u16>,
    /// Sent in the startup packet after `user` and `database`.
    pub startup_params: Vec<(String, String)>,
    /// Run once after login; an error fails the connection.
    pub connect_query: Option<String>,
}

/// The hosts of a database and the state of the choice between them.
#[derive(Clone, Default)]
pub struct HostChoice {
    pub load_balance: LoadBalanceHosts,
    /// How long a failed host is skipped.
    pub login_retry: Duration,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Round-robin: the host the next connection starts at. Disable: the host in use.
    next: usize,
    /// Failed hosts: (index in the list, until, error message).
    down: Vec<(usize, Instant, String)>,
}

/// Every host of the list is marked failed: the latest error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllFailing(pub String);

impl std::fmt::Debug for HostChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostChoice")
            .field("load_balance", &self.load_balance)
            .field("login_retry", &self.login_retry)
            .finish_non_exhaustive()
    }
}

/// Same settings (the shared state is not compared).
impl PartialEq for HostChoice {
    fn eq(&self, other: &Self) -> bool {
        self.load_balance == other.load_balance && self.login_retry == other.login_retry
    }
}

/// The hosts of a `host` value (comma-separated).
pub fn split(host: &str) -> Vec<&str> {
    host.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect()
}

impl HostChoice {
    pub fn new(load_balance: LoadBalanceHosts, login_retry: Duration) -> HostChoice {
        HostChoice {
            load_balance,
            login_retry,
            state: Default::default(),
        }
    }

    /// The order in which a new connection tries the `n` hosts of the list (their indexes),
    /// marked hosts left out; or, when every host is marked, the latest error.
    pub fn plan(&self, n: usize, now: Instant) -> Result<Vec<usize>, AllFailing> {
        if n <= 1 {
            return Ok((0..n).collect());
        }
        let Ok(mut s) = self.state.lock() else {
            return Ok((0..n).collect());
        };
        s.down.retain(|(_, until, _)| *until > now);
        let start = s.next % n;
        if self.load_balance == LoadBalanceHosts::RoundRobin {
            s.next = (start + 1) % n;
        }
        let order: Vec<usize> = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| !s.down.iter().any(|(h, _, _)| *h == i))
            .collect();
        if order.is_empty() {
            let latest = s
                .down
                .iter()
                .max_by_key(|(_, until, _)| *until)
                .map(|(_, _, m)| m.clone())
                .unwrap_or_default();
            return Err(AllFailing(latest));
        }
        Ok(order)
    }

    /// Connecting to host `i` of `n` failed with `message`: skip it for `login_retry`; with
    /// `disable`, move on to the next host.
    pub fn failed(&self, n: usize, i: usize, message: String, now: Instant) {
        if n <= 1 {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.down.retain(|(h, _, _)| *h != i);
            s.down.push((i, now + self.login_retry, message));
            if self.load_balance == LoadBalanceHosts::Disable && s.next % n == i {
                s.next = (i + 1) % n;
            }
        }
    }

    /// A connection to host `i` of `n` logged in: it is no longer marked; with `disable`, it
    /// is the host in use.
    pub fn succeeded(&self, n: usize, i: usize) {
        if n <= 1 {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.down.retain(|(h, _, _)| *h != i);
            if self.load_balance == LoadBalanceHosts::Disable {
                s.next = i;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: usize = 3;

    #[test]
    fn round_robin_starts_at_the_next_host_each_time() {
        let c = HostChoice::new(LoadBalanceHosts::RoundRobin, Duration::from_secs(15));
        let now = Instant::now();
        assert_eq!(c.plan(HOSTS, now).unwrap(), [0, 1, 2]);
        assert_eq!(c.plan(HOSTS, now).unwrap(), [1, 2, 0]);
        assert_eq!(c.plan(HOSTS, now).unwrap(), [2, 0, 1]);
        assert_eq!(c.plan(HOSTS, now).unwrap(), [0, 1, 2]);
    }

    #[test]
    fn disable_stays_until_a_failure() {
        let c = HostChoice::new(LoadBalanceHosts::Disable, Duration::from_secs(15));
        let now = Instant::now();
        assert_eq!(c.plan(HOSTS, now).unwrap(), [0, 1, 2]);
        assert_eq!(c.plan(HOSTS, now).unwrap(), [0, 1, 2]);
        c.failed(HOSTS, 0, "refused".into(), now);
        assert_eq!(c.plan(HOSTS, now).unwrap(), [1, 2]);
        c.succeeded(HOSTS, 1);
        // Once a's retry time has passed, b stays in use: a is only the fallback after c.
        let later = now + Duration::from_secs(16);
        assert_eq!(c.plan(HOSTS, later).unwrap(), [1, 2, 0]);
    }

    #[test]
    fn failed_hosts_are_skipped_until_the_retry_time() {
        let c = HostChoice::new(LoadBalanceHosts::RoundRobin, Duration::from_secs(15));
        let now = Instant::now();
        c.failed(HOSTS, 1, "b refused".into(), now);
        assert_eq!(c.plan(HOSTS, now).unwrap(), [0, 2]);
        assert_eq!(c.plan(HOSTS, now).unwrap(), [2, 0]);
        c.failed(HOSTS, 0, "a refused".into(), now);
        c.failed(HOSTS, 2, "c refused".into(), now + Duration::from_secs(1));
        assert_eq!(
            c.plan(HOSTS, now + Duration::from_secs(2)),
            Err(AllFailing("c refused".into()))
        );
        let later = now + Duration::from_secs(15);
        assert_eq!(
            c.plan(HOSTS, later).unwrap().len(),
            2,
            "a and b are tried again"
        );
    }

    #[test]
    fn a_single_host_is_never_marked() {
        let c = HostChoice::new(LoadBalanceHosts::RoundRobin, Duration::from_secs(15));
        let now = Instant::now();
        c.failed(1, 0, "refused".into(), now);
        assert_eq!(c.plan(1, now).unwrap(), [0]);
    }

    #[test]
    fn split_trims() {
        assert_eq!(split("a, b ,c"), ["a", "b", "c"]);
        assert_eq!(split("localhost"), ["localhost"]);
    }
}
