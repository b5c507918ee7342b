//! The log lines an operator coming from PgBouncer expects, in PgBouncer's words, each behind
//! its PgBouncer key (all on by default, as in PgBouncer; see [`crate::config::LogSettings`]):
//!
//! - `log_connections`: `login attempt: db=appdb user=app tls=no` (info) when a client has
//!   sent its startup packet, before authentication, as PgBouncer;
//! - `log_disconnections`: `closing because: client close request (age=12s)` (info) when a
//!   client session ends, with the reason (the error the session ended with);
//! - `log_pooler_errors`: `pooler error: password authentication failed for user "x"`
//!   (warning) for an error pgheal itself sends a client;
//! - `log_stats`: every `stats_period`, `stats: 10 xacts/s, 20 queries/s, 0 client parses/s,
//!   0 server parses/s, 0 binds/s, 1 client logins/s, in 800 B/s, out 2400 B/s, xact 900 us,
//!   query 300 us, wait 5 us` (info), one line per database (PgBouncer writes one for the
//!   whole process; pgheal names the database in the `db` field).
//!
//! The client's address, database and user are in the session's span (`client{peer=... db=...
//! user=...}`), where PgBouncer puts its `C-0x...: db/user@addr` prefix.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::LogSettings;
use crate::pool::stats::Totals;
use crate::pool::Pool;

/// A client sent its startup packet for `db` as `user`.
pub fn login_attempt(log: &LogSettings, db: &str, user: &str, tls: bool) {
    if log.connections {
        let tls = if tls { "yes" } else { "no" };
        tracing::info!("login attempt: db={db} user={user} tls={tls}");
    }
}

/// A client session ended, `age` after its connection opened. `error`: what it ended with
/// (`None`: the client closed it); `to_client`: whether pgheal sent the client that error.
pub fn session_end(
    log: &LogSettings,
    span: &tracing::Span,
    error: Option<&dyn std::fmt::Display>,
    to_client: bool,
    age: Duration,
) {
    if let (Some(e), true) = (error, to_client && log.pooler_errors) {
        tracing::warn!(parent: span, "pooler error: {e}");
    }
    if log.disconnections {
        let age = age.as_secs();
        match error {
            None => {
                tracing::info!(parent: span, "closing because: client close request (age={age}s)")
            }
            Some(e) => tracing::info!(parent: span, "closing because: {e} (age={age}s)"),
        }
    }
}

/// PgBouncer's `stats:` line of one database, from the averages over the last period.
pub fn stats_line(avg: &Totals) -> String {
    format!(
        "stats: {} xacts/s, {} queries/s, {} client parses/s, {} server parses/s, {} binds/s, \
         {} client logins/s, in {} B/s, out {} B/s, xact {} us, query {} us, wait {} us",
        avg.xact_count,
        avg.query_count,
        avg.client_parse_count,
        avg.server_parse_count,
        avg.bind_count,
        avg.client_login_count,
        avg.client_bytes,
        avg.server_bytes,
        avg.xact_time,
        avg.query_time,
        avg.wait_time,
    )
}

/// Every `stats_period`, right after the pools' periods were rotated: one `stats:` line per
/// database, over the period that just ended.
pub fn stats(log: &LogSettings, pools: &[Arc<Pool>]) {
    if !log.stats {
        return;
    }
    let mut by_db: BTreeMap<&str, (Totals, Totals, Duration)> = BTreeMap::new();
    for p in pools {
        // After the rotation the older snapshot starts the period that just ended and the
        // totals are where it ended.
        let (older, ago) = p.stats.older();
        let e = by_db
            .entry(p.key.database.as_str())
            .or_insert_with(|| (Totals::default(), Totals::default(), ago));
        e.0.add(&p.stats.totals());
        e.1.add(&older);
        e.2 = e.2.max(ago);
    }
    for (db, (now, older, over)) in by_db {
        let line = stats_line(&now.averages(&older, over));
        tracing::info!(db, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_line_has_pgbouncers_wording() {
        let avg = Totals {
            xact_count: 10,
            query_count: 20,
            client_bytes: 800,
            server_bytes: 2400,
            xact_time: 900,
            query_time: 300,
            wait_time: 5,
            ..Totals::default()
        };
        assert_eq!(
            stats_line(&avg),
            "stats: 10 xacts/s, 20 queries/s, 0 client parses/s, 0 server parses/s, 0 binds/s, \
             0 client logins/s, in 800 B/s, out 2400 B/s, xact 900 us, query 300 us, wait 5 us"
        );
    }
}
