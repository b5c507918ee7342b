//! The last heal events, for the admin console's `SHOW HEALS`: what a developer or operator
//! asks right after a migration ("did pgheal heal anything, and what changed?") without
//! searching the logs. A bounded ring: the newest [`CAPACITY`] events, oldest dropped.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::heal::{HealEvent, Outcome};

/// Events kept.
pub const CAPACITY: usize = 256;

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
