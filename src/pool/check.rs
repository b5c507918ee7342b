//! `server_check_query`: a connection that sat idle for longer than `server_check_delay` is
//! checked with the query before a client gets it, as PgBouncer does. A backend that died or a
//! network path that broke while the connection was idle is found here, and the client gets
//! another connection instead of an error on its first query.
//!
//! The socket itself is checked before every reuse anyway (`is_broken_while_idle`: a FATAL or
//! EOF the server sent while the connection was idle), which costs no round trip; the check
//! query adds a round trip and is only run past the delay, so a busy pool never runs it.
//!
//! While the query runs the connection is `tested` in `SHOW SERVERS` and counted in
//! `SHOW POOLS sv_tested`; checks and failed checks are counted per pool.

use std::time::{Duration, Instant};

use crate::config::servers::ServerSettings;

use super::server::ServerConn;

/// How long a check may take before the connection is given up: a healthy server answers an
/// empty query at once.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The query to check a connection idle since `idle_since` with, if it needs a check now.
pub fn due(s: &ServerSettings, idle_since: Instant, now: Instant) -> Option<&str> {
    let sql = s.check_query.sql()?;
    (now.saturating_duration_since(idle_since) > s.check_delay).then_some(sql)
}

/// Run the check: `Ok` when the server answered and the connection is idle, else why not.
pub async fn run(conn: &mut ServerConn, sql: &str) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, conn.query_rows(sql)).await {
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(Err(_))) => Err("the check query failed".into()),
        Ok(Ok(Ok(_))) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::servers::CheckQuery;

    #[test]
    fn checked_only_past_the_delay_and_when_on() {
        let mut s = ServerSettings {
            check_delay: Duration::from_secs(30),
            ..Default::default()
        };
        let t0 = Instant::now();
        assert_eq!(due(&s, t0, t0 + Duration::from_secs(10)), None);
        assert_eq!(due(&s, t0, t0 + Duration::from_secs(31)), Some(""));
        s.check_query = CheckQuery::Query("select 1".into());
        assert_eq!(due(&s, t0, t0 + Duration::from_secs(31)), Some("select 1"));
        s.check_query = CheckQuery::Off;
        assert_eq!(due(&s, t0, t0 + Duration::from_secs(31)), None);
    }
}
