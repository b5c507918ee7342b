//! `/healthz` and `/readyz` on the metrics listener, for Docker's HEALTHCHECK (through
//! `pgheal healthcheck`), Kubernetes probes and load balancers.
//!
//! - `/healthz`: the process serves HTTP — it is alive. Always 200 while the listener runs.
//! - `/readyz`: pgheal should be sent clients. 503 with the reasons, one per line, when it is
//!   shutting down (a stop was asked for: the listeners close), when the whole process is
//!   paused (`PAUSE`, SIGUSR1, `SHUTDOWN WAIT_FOR_SERVERS`), or when a configured database is
//!   unreachable. A database counts as reachable when one of its pools has an open server
//!   connection, else when a TCP connection to its host and port opens within
//!   [`PROBE_TIMEOUT`] (reachability, not a login: probes must not fill the server's log with
//!   failed authentications). A database that is allowed to be down is named in the query
//!   string: `/readyz?allow_down=analytics,reports`; databases made from the `*` entry are
//!   not checked (pgheal does not know them in advance).

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::pool::Pools;
use crate::proxy::Stop;

/// How long `/readyz` waits for a TCP connection to a database without open connections.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/readyz` looks at.
pub struct Health {
    /// Weak: the pools hold the metrics; the health view must not keep them alive.
    pools: Weak<Pools>,
    cfg: Arc<Config>,
    stop: watch::Receiver<Option<Stop>>,
}

impl Health {
    pub fn new(
        pools: &Arc<Pools>,
        cfg: Arc<Config>,
        stop: watch::Receiver<Option<Stop>>,
    ) -> Arc<Health> {
        Arc::new(Health {
            pools: Arc::downgrade(pools),
            cfg,
            stop,
        })
    }

    /// `Ok` when ready, else why not (one reason per element).
    pub async fn ready(&self, allow_down: &BTreeSet<String>) -> Result<(), Vec<String>> {
        let mut why = Vec::new();
        if self.stop.borrow().is_some() {
            why.push("shutting down".to_owned());
        }
        let Some(pools) = self.pools.upgrade() else {
            why.push("stopped".to_owned());
            return Err(why);
        };
        if pools.controls().global().is_paused() {
            why.push("paused".to_owned());
        }
        if !why.is_empty() {
            return Err(why);
        }
        let all = pools.all();
        let mut probes = Vec::new();
        for db in self.cfg.databases.values() {
            if allow_down.contains(&db.name) {
                continue;
            }
            let connected = all
                .iter()
                .any(|p| p.key.database == db.name && !p.servers().is_empty());
            if connected {
                continue;
            }
            let (name, host, port) = (db.name.clone(), db.host.clone(), db.port);
            probes.push(async move {
                let probe = tokio::net::TcpStream::connect((host.as_str(), port));
                match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(format!(
                        "database {name} unreachable ({host}:{port}: {e})"
                    )),
                    Err(_) => Some(format!(
                        "database {name} unreachable ({host}:{port}: no answer within {PROBE_TIMEOUT:?})"
                    )),
                }
            });
        }
        // Probe every database at once, so one slow host does not add up.
        let mut set = tokio::task::JoinSet::new();
        for p in probes {
            set.spawn(p);
        }
        while let Some(r) = set.join_next().await {
            if let Ok(Some(reason)) = r {
                why.push(reason);
            }
        }
        why.sort();
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}

/// The databases named in `allow_down=a,b` of a query string (percent-encoding is not
/// decoded: database names in probes are plain).
pub fn allow_down(query: &str) -> BTreeSet<String> {
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("allow_down="))
        .flat_map(|v| v.split(','))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_down_lists_databases() {
        let s = allow_down("x=1&allow_down=a,b&allow_down=c");
        assert_eq!(s.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(allow_down("").is_empty());
    }
}
