//! TCP keepalive and `TCP_USER_TIMEOUT` on client and server sockets (PgBouncer's
//! `tcp_keepalive`, `tcp_keepidle`, `tcp_keepintvl`, `tcp_keepcnt`, `tcp_user_timeout`).
//!
//! Why: a peer that vanishes without a FIN or RST (a host that lost power, a NAT or firewall
//! that dropped the flow, a network partition) leaves a socket that looks open for ever. A
//! client waiting for a query's answer would hang, and a server connection held for a dead
//! client would be lost to the pool. Keepalive probes find the dead peer while the connection
//! is quiet; `TCP_USER_TIMEOUT` bounds how long sent data may stay unacknowledged (and, on
//! Linux, also how long keepalive probes may go unanswered).
//!
//! Semantics, as PgBouncer 1.25: keepalive is on by default with the operating system's
//! timings; 0 for `tcp_keepidle`, `tcp_keepintvl`, `tcp_keepcnt` or `tcp_user_timeout` keeps the
//! OS default. `tcp_keepidle` and `tcp_keepintvl` are seconds, `tcp_user_timeout` milliseconds.
//! The values apply to sockets opened after a reload; server connections are replaced as they
//! come back when a reload changes them (the pool's login changed).

use std::time::Duration;

use super::ConfigError;

/// What pgheal sets on each TCP socket it accepts or opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpKeepalive {
    /// `tcp_keepalive`: SO_KEEPALIVE on or off.
    pub enabled: bool,
    /// `tcp_keepidle`: quiet time before the first probe (None: the OS default).
    pub idle: Option<Duration>,
    /// `tcp_keepintvl`: time between probes (None: the OS default).
    pub interval: Option<Duration>,
    /// `tcp_keepcnt`: unanswered probes before the connection is dropped (None: the OS default).
    pub count: Option<u32>,
    /// `tcp_user_timeout` (None: the OS default).
    pub user_timeout: Option<Duration>,
}

impl Default for TcpKeepalive {
    fn default() -> Self {
        TcpKeepalive {
            enabled: true,
            idle: None,
            interval: None,
            count: None,
            user_timeout: None,
        }
    }
}

/// The raw values of the five keys (None: not given).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepaliveKeys {
    pub tcp_keepalive: Option<bool>,
    pub tcp_keepidle: Option<u64>,
    pub tcp_keepintvl: Option<u64>,
    pub tcp_keepcnt: Option<u64>,
    pub tcp_user_timeout: Option<u64>,
}

/// Linux's limits (`MAX_TCP_KEEPIDLE`, `MAX_TCP_KEEPINTVL`, `MAX_TCP_KEEPCNT`; the user
/// timeout is a C int of milliseconds): a larger value would make every `setsockopt` fail, so it
/// is refused at load time with the key's name instead.
const MAX_IDLE_SECS: u64 = 32_767;
const MAX_INTVL_SECS: u64 = 32_767;
const MAX_COUNT: u64 = 127;
const MAX_USER_TIMEOUT_MS: u64 = i32::MAX as u64;

impl TcpKeepalive {
    /// Check the keys and resolve the defaults.
    pub fn from_keys(k: KeepaliveKeys) -> Result<TcpKeepalive, ConfigError> {
        let checked = |key: &str, v: Option<u64>, max: u64| match v {
            Some(n) if n > max => Err(ConfigError::new(key, format!("must be at most {max}"))),
            Some(0) | None => Ok(None),
            Some(n) => Ok(Some(n)),
        };
        Ok(TcpKeepalive {
            enabled: k.tcp_keepalive.unwrap_or(true),
            idle: checked("tcp_keepidle", k.tcp_keepidle, MAX_IDLE_SECS)?.map(Duration::from_secs),
            interval: checked("tcp_keepintvl", k.tcp_keepintvl, MAX_INTVL_SECS)?
                .map(Duration::from_secs),
            count: checked("tcp_keepcnt", k.tcp_keepcnt, MAX_COUNT)?.map(|n| n as u32),
            user_timeout: checked("tcp_user_timeout", k.tcp_user_timeout, MAX_USER_TIMEOUT_MS)?
                .map(Duration::from_millis),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pgbouncers() {
        let k = TcpKeepalive::from_keys(KeepaliveKeys::default()).unwrap();
        assert_eq!(k, TcpKeepalive::default());
        assert!(k.enabled);
    }

    #[test]
    fn zero_keeps_the_os_default_and_units_are_pgbouncers() {
        let k = TcpKeepalive::from_keys(KeepaliveKeys {
            tcp_keepalive: Some(true),
            tcp_keepidle: Some(30),
            tcp_keepintvl: Some(0),
            tcp_keepcnt: Some(4),
            tcp_user_timeout: Some(2500),
        })
        .unwrap();
        assert_eq!(k.idle, Some(Duration::from_secs(30)));
        assert_eq!(k.interval, None);
        assert_eq!(k.count, Some(4));
        assert_eq!(k.user_timeout, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn values_the_kernel_cannot_take_are_errors() {
        let e = TcpKeepalive::from_keys(KeepaliveKeys {
            tcp_keepcnt: Some(128),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("tcp_keepcnt"), "{e}");
        assert!(e.to_string().contains("at most 127"), "{e}");
    }
}
