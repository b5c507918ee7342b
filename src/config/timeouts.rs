//! The session-side timeouts of PgBouncer 1.25 (`client_idle_timeout`, `query_timeout`,
//! `idle_transaction_timeout`, `transaction_timeout`, `query_wait_notify`,
//! `cancel_wait_timeout`), with PgBouncer's defaults: all off (0) except `query_wait_notify`
//! (5 s) and `cancel_wait_timeout` (10 s).
//!
//! Values are seconds, fractions allowed, except `query_wait_notify`, which PgBouncer reads as
//! an integer (`CF_INT`) and compares in whole seconds. `None` is PgBouncer's 0: off. How the
//! session enforces them is in [`crate::session::timeouts`]; all of them change on RELOAD and
//! the console's `SET` (a session reads them again at the start of its next transaction).

use std::time::Duration;

use super::ConfigError;

/// The timeouts of a client session, `None` = off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `client_idle_timeout`: a client idle outside a transaction longer than this is closed
    /// (`FATAL 08P01 client_idle_timeout`).
    pub client_idle_timeout: Option<Duration>,
    /// `query_timeout`: a query running (or waiting for a server) longer than this closes the
    /// client and its server connection (`FATAL 08P01 query timeout`).
    pub query_timeout: Option<Duration>,
    /// `idle_transaction_timeout`: a transaction left idle by its client longer than this
    /// (`FATAL 08P01 idle transaction timeout`).
    pub idle_transaction_timeout: Option<Duration>,
    /// `transaction_timeout`: a transaction open longer than this
    /// (`FATAL 08P01 transaction timeout`).
    pub transaction_timeout: Option<Duration>,
    /// `query_wait_notify`: a client waiting this long for a server connection is sent one
    /// NOTICE (whole seconds, PgBouncer's `CF_INT`).
    pub query_wait_notify: Option<Duration>,
    /// `cancel_wait_timeout`: how long forwarding a cancel request (connect and send) may take.
    pub cancel_wait_timeout: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_idle_timeout: None,
            query_timeout: None,
            idle_transaction_timeout: None,
            transaction_timeout: None,
            query_wait_notify: Some(Duration::from_secs(5)),
            cancel_wait_timeout: Some(Duration::from_secs(10)),
        }
    }
}

/// Per-user timeouts (pgbouncer.ini `[users]`, TOML `[user_settings.NAME]`): a value set
/// wins over the global one, as in PgBouncer (where a user's 0 means "the global value").
/// `client_idle_timeout` is the client's login user's; the others are the server user's (the
/// database's `user=`, else the client's), as PgBouncer reads them from the server connection's
/// login user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserTimeouts {
    pub client_idle_timeout: Option<Duration>,
    pub query_timeout: Option<Duration>,
    pub idle_transaction_timeout: Option<Duration>,
    pub transaction_timeout: Option<Duration>,
}

impl UserTimeouts {
    /// From seconds (`None` or 0: not set). `user` names the entry in errors.
    pub fn build(
        user: &str,
        client_idle: Option<f64>,
        query: Option<f64>,
        idle_transaction: Option<f64>,
        transaction: Option<f64>,
    ) -> Result<UserTimeouts, ConfigError> {
        let key = |k: &str| format!("user_settings.{user}.{k}");
        Ok(UserTimeouts {
            client_idle_timeout: secs(&key("client_idle_timeout"), client_idle, 0.0)?,
            query_timeout: secs(&key("query_timeout"), query, 0.0)?,
            idle_transaction_timeout: secs(
                &key("idle_transaction_timeout"),
                idle_transaction,
                0.0,
            )?,
            transaction_timeout: secs(&key("transaction_timeout"), transaction, 0.0)?,
        })
    }
}

/// The timeouts of a session of `client_user` whose pool logs in as `server_user`: the global
/// ones, with the users' own where they set one.
pub fn for_session(cfg: &super::Config, client_user: &str, server_user: &str) -> Timeouts {
    let mut t = cfg.timeouts;
    let own = |u: &str| cfg.user_settings.get(u).map(|s| s.timeouts);
    if let Some(d) = own(client_user).and_then(|u| u.client_idle_timeout) {
        t.client_idle_timeout = Some(d);
    }
    if let Some(u) = own(server_user) {
        t.query_timeout = u.query_timeout.or(t.query_timeout);
        t.idle_transaction_timeout = u.idle_transaction_timeout.or(t.idle_transaction_timeout);
        t.transaction_timeout = u.transaction_timeout.or(t.transaction_timeout);
    }
    t
}

/// The raw values as the TOML file or pgbouncer.ini gave them (seconds; `None` = not set).
#[derive(Debug, Default, Clone, Copy)]
pub struct RawTimeouts {
    pub client_idle_timeout: Option<f64>,
    pub query_timeout: Option<f64>,
    pub idle_transaction_timeout: Option<f64>,
    pub transaction_timeout: Option<f64>,
    pub query_wait_notify: Option<f64>,
    pub cancel_wait_timeout: Option<f64>,
}

/// Seconds → `None` for 0 (off), with PgBouncer's default when not set. Values beyond a year
/// are capped there (tokio's timer range; PgBouncer's clock has no such limit, and a year is
/// "never" for a session).
fn secs(key: &str, v: Option<f64>, default: f64) -> Result<Option<Duration>, ConfigError> {
    let v = v.unwrap_or(default);
    if !(v.is_finite() && v >= 0.0) {
        return Err(ConfigError::new(key, "must be a number of seconds ≥ 0"));
    }
    if v == 0.0 {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs_f64(v.min(YEAR))))
}

const YEAR: f64 = 365.0 * 24.0 * 3600.0;

impl Timeouts {
    /// Validate the raw values.
    pub fn build(raw: &RawTimeouts) -> Result<Timeouts, ConfigError> {
        let notify = match raw.query_wait_notify {
            Some(v) if v.fract() != 0.0 => {
                return Err(ConfigError::new(
                    "query_wait_notify",
                    "must be a whole number of seconds",
                ))
            }
            v => secs("query_wait_notify", v, 5.0)?,
        };
        Ok(Timeouts {
            client_idle_timeout: secs("client_idle_timeout", raw.client_idle_timeout, 0.0)?,
            query_timeout: secs("query_timeout", raw.query_timeout, 0.0)?,
            idle_transaction_timeout: secs(
                "idle_transaction_timeout",
                raw.idle_transaction_timeout,
                0.0,
            )?,
            transaction_timeout: secs("transaction_timeout", raw.transaction_timeout, 0.0)?,
            query_wait_notify: notify,
            cancel_wait_timeout: secs("cancel_wait_timeout", raw.cancel_wait_timeout, 10.0)?,
        })
    }

    /// Whether a session has anything to watch while it relays (the relay loop keeps no timer
    /// when it has not).
    pub fn watches_relay(&self) -> bool {
        self.client_idle_timeout.is_some()
            || self.query_timeout.is_some()
            || self.idle_transaction_timeout.is_some()
            || self.transaction_timeout.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pgbouncers() {
        let t = Timeouts::build(&RawTimeouts::default()).unwrap();
        assert_eq!(t, Timeouts::default());
        assert!(!t.watches_relay());
        assert_eq!(t.query_wait_notify, Some(Duration::from_secs(5)));
        assert_eq!(t.cancel_wait_timeout, Some(Duration::from_secs(10)));
    }

    #[test]
    fn zero_is_off_and_fractions_are_allowed() {
        let t = Timeouts::build(&RawTimeouts {
            query_timeout: Some(0.5),
            cancel_wait_timeout: Some(0.0),
            query_wait_notify: Some(0.0),
            ..RawTimeouts::default()
        })
        .unwrap();
        assert_eq!(t.query_timeout, Some(Duration::from_millis(500)));
        assert_eq!(t.cancel_wait_timeout, None);
        assert_eq!(t.query_wait_notify, None);
        assert!(t.watches_relay());
    }

    #[test]
    fn bad_values_are_refused() {
        for raw in [
            RawTimeouts {
                client_idle_timeout: Some(-1.0),
                ..RawTimeouts::default()
            },
            RawTimeouts {
                transaction_timeout: Some(f64::NAN),
                ..RawTimeouts::default()
            },
            RawTimeouts {
                query_wait_notify: Some(1.5),
                ..RawTimeouts::default()
            },
        ] {
            assert!(Timeouts::build(&raw).is_err(), "{raw:?}");
        }
    }
}
