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

use crate::config::live::LiveConfig;
use crate::pool::Pools;
use crate::proxy::Stop;

/// How long `/readyz` waits for a TCP connection to a database without open connections.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/readyz` looks at.
pub struct Health {
    /// Weak: the pools hold the metrics; the health view must not keep them alive.
    pools: Weak<Pools>,
    /// The configuration in force (a reload adds and removes databases).
    config: Arc<LiveConfig>,
    stop: watch::Receiver<Option<Stop>>,
}

impl Health {
    pub fn new(
        pools: &Arc<Pools>,
        config: Arc<LiveConfig>,
        stop: watch::Receiver<Option<Stop>>,
    ) -> Arc<Health> {
        Arc::new(Health {
            pools: Arc::downgrade(pools),
            config,
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
        let cfg = self.config.current();
        for db in cfg.databases.values() {
            if allow_down.contains(&db.name) {
                continue;
            }
            let connected = all
                .iter()
                .any(|p| p.key.database == db.name && !p.servers().is_empty());
            if connected {
                continue;
            }
            // A host list (`host=a,b`) is reachable when one of its hosts is.
            let targets: Vec<(String, u16)> = crate::pool::hosts::split(&db.host)
                .into_iter()
                .enumerate()
                .map(|(i, h)| {
                    (
                        h.to_owned(),
                        db.connect.ports.get(i).copied().unwrap_or(db.port),
                    )
                })
                .collect();
            let name = db.name.clone();
            probes.push(async move {
                let mut failures = Vec::new();
                for (host, port) in targets {
                    let probe = tokio::net::TcpStream::connect((host.as_str(), port));
                    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                        Ok(Ok(_)) => return None,
                        Ok(Err(e)) => failures.push(format!("{host}:{port}: {e}")),
                        Err(_) => failures
                            .push(format!("{host}:{port}: no answer within {PROBE_TIMEOUT:?}")),
                    }
                }
                Some(format!(
                    "database {name} unreachable ({})",
                    failures.join("; ")
                ))
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

/// The address to probe for a listen address: an unspecified one (`0.0.0.0`, `[::]`) is
/// probed on the loopback address of its family; a name is resolved.
pub fn probe_addr(listen: &str) -> std::io::Result<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
    let mut a = listen.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{listen} has no address"),
        )
    })?;
    if a.ip().is_unspecified() {
        a.set_ip(match a.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(a)
}

/// `pgheal healthcheck`: GET `path` on `addr`, within `timeout`. `Ok(body)` for a 200,
/// `Err(why)` for any other status or a failed request.
pub async fn probe(
    addr: std::net::SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        // The answers are small; cap what is read all the same.
        (&mut s).take(1 << 20).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = match tokio::time::timeout(timeout, request).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(e)) => return Err(format!("{addr}: {e}")),
        Err(_) => return Err(format!("{addr}: no answer within {timeout:?}")),
    };
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(body.to_owned())
    } else {
        let first = head.lines().next().unwrap_or("no answer");
        Err(format!("{path}: {first}\n{body}").trim_end().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        assert_eq!(
            probe_addr("0.0.0.0:9187").unwrap(),
            "127.0.0.1:9187".parse().unwrap()
        );
        assert_eq!(
            probe_addr("[::]:9187").unwrap(),
            "[::1]:9187".parse().unwrap()
        );
        assert_eq!(
            probe_addr("10.1.2.3:9").unwrap(),
            "10.1.2.3:9".parse().unwrap()
        );
    }

    #[test]
    fn allow_down_lists_databases() {
        let s = allow_down("x=1&allow_down=a,b&allow_down=c");
        assert_eq!(s.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(allow_down("").is_empty());
    }
}
