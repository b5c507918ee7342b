//! The last heal events, for the admin console's `SHOW HEALS`: what a developer or operator
//! asks right after a migration ("did pgheal heal anything, and what changed?") without
//! searching the logs. A bounded ring: the newest [`CAPACITY`] events, oldest dropped.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::heal::{HealEvent, Outcome};

/// Events kept.
pub const CAPACITY: usize = 256;

/// What the client received, in words, for the log line of a heal event.
pub fn client_received(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Healed => "healed rows in the shape it prepared",
        Outcome::Projected => "rows projected onto the columns it prepared",
        Outcome::Refused => "PostgreSQL's error (pgheal refused to heal)",
        Outcome::ForwardedInTransaction => {
            "PostgreSQL's error (inside a transaction block that began in an earlier batch)"
        }
    }
}

/// The log line of one heal event: what changed (types by name: `integer → bigint`) and what
/// the client received. Heals at info, errors that reached the client at warning.
pub fn log(ev: &HealEvent, server_id: u64, server_pid: i32) {
    let received = client_received(ev.outcome);
    match ev.outcome {
        Outcome::Healed | Outcome::Projected => tracing::info!(
            outcome = ev.outcome.label(), statement = %ev.statement, sql = %ev.sql, change = %ev.detail,
            server = server_id, server_pid, "healed a stale prepared statement: {}; the client received {received}", ev.detail
        ),
        Outcome::Refused | Outcome::ForwardedInTransaction => tracing::warn!(
            outcome = ev.outcome.label(), statement = %ev.statement, sql = %ev.sql, reason = %ev.detail,
            server = server_id, server_pid, "forwarded a cached-plan error to the client: {}; the client received {received}", ev.detail
        ),
    }
}

/// One event as `SHOW HEALS` lists it.
#[derive(Debug, Clone)]
pub struct HealRecord {
    pub time: SystemTime,
    pub database: String,
    pub user: String,
    pub outcome: Outcome,
    pub statement: String,
    pub sql: String,
    pub detail: String,
    pub server_pid: i32,
}

#[derive(Debug, Default)]
pub struct HealLog {
    events: Mutex<VecDeque<HealRecord>>,
}

impl HealLog {
    pub fn push(&self, database: &str, user: &str, ev: &HealEvent, server_pid: i32) {
        let record = HealRecord {
            time: SystemTime::now(),
            database: database.to_owned(),
            user: user.to_owned(),
            outcome: ev.outcome,
            statement: ev.statement.clone(),
            sql: ev.sql.clone(),
            detail: ev.detail.clone(),
            server_pid,
        };
        if let Ok(mut q) = self.events.lock() {
            if q.len() == CAPACITY {
                q.pop_front();
            }
            q.push_back(record);
        }
    }

    /// The events kept, oldest first.
    pub fn recent(&self) -> Vec<HealRecord> {
        self.events
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_events() {
        let log = HealLog::default();
        for i in 0..CAPACITY + 3 {
            let ev = HealEvent {
                outcome: Outcome::Healed,
                statement: format!("s{i}"),
                sql: "SELECT 1".into(),
                detail: String::new(),
            };
            log.push("db", "u", &ev, 1);
        }
        let r = log.recent();
        assert_eq!(r.len(), CAPACITY);
        assert_eq!(r[0].statement, "s3");
        assert_eq!(r[CAPACITY - 1].statement, format!("s{}", CAPACITY + 2));
    }
}
