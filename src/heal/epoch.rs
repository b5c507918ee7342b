//! The schema epoch of one upstream database.
//!
//! Inside a transaction block the cached-plan error aborts the transaction, so it must be
//! prevented, not healed. pgheal numbers schema changes: the epoch of a database goes up when
//! DDL passes through pgheal and commits, when any server connection of that database reports
//! the cached-plan error, and (with `schema_watch = "listen"`) when the event trigger installed
//! by `pgheal install-schema-watch` notifies. Every statement prepared on a server connection
//! remembers the epoch it was prepared in; a row-returning statement from an older epoch is
//! re-prepared (Close + Parse + Describe, in the same pipeline) before its next Bind or
//! Describe, and projected onto the client's contract, so the error never happens.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct SchemaEpoch {
    epoch: AtomicU64,
    /// Milliseconds since [`clock_base`] of the last advance, plus one (0: never).
    changed_at: AtomicU64,
    /// Client transactions through pgheal that ran DDL and have not ended yet.
    ddl_in_flight: AtomicUsize,
    /// DDL committed through this instance that the schema watch has not told the fleet of
    /// yet (a stored permit: several commits before the watch wakes are told once).
    told_fleet: tokio::sync::Notify,
}

fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    clock_base().elapsed().as_millis() as u64 + 1
}

impl SchemaEpoch {
    pub fn current(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A schema change happened: statements prepared before now are stale.
    pub fn bump(&self, why: &'static str) -> u64 {
        self.changed_at.store(now_ms(), Ordering::Release);
        let e = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::debug!(epoch = e, why, "schema epoch advanced");
        e
    }

    /// DDL committed through this instance: the epoch advances, and the schema watch tells the
    /// other instances of the fleet (see `crate::watch`).
    pub fn ddl_committed_here(&self) -> u64 {
        let e = self.bump("DDL committed through pgheal");
        self.told_fleet.notify_one();
        e
    }

    /// Resolves once DDL has committed through this instance since the last call.
    pub async fn ddl_committed_here_since(&self) {
        self.told_fleet.notified().await
    }

    /// A client transaction ran DDL through pgheal; it holds locks until it ends, and Binds
    /// that wait for them will find their plans stale. Paired with [`Self::ddl_ended`].
    pub fn ddl_started(&self) {
        self.ddl_in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub fn ddl_ended(&self) {
        // Saturating: never wraps even if a caller pairs wrongly.
        let _ = self
            .ddl_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Whether a migration is in progress through pgheal, or the schema changed within `window`.
    pub fn changing_within(&self, window: Duration) -> bool {
        if self.ddl_in_flight.load(Ordering::Acquire) > 0 {
            return true;
        }
        let at = self.changed_at.load(Ordering::Acquire);
        at != 0 && now_ms().saturating_sub(at) <= window.as_millis() as u64
    }
}

/// Command tags of statements that change the schema.
pub fn is_ddl_tag(tag: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 5] = [
        b"CREATE ",
        b"ALTER ",
        b"DROP ",
        b"COMMENT",
        b"SECURITY LABEL",
    ];
    PREFIXES.iter().any(|p| tag.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_tags() {
        assert!(is_ddl_tag(b"ALTER TABLE\0"));
        assert!(is_ddl_tag(b"CREATE VIEW\0"));
        assert!(is_ddl_tag(b"DROP TABLE\0"));
        assert!(!is_ddl_tag(b"SELECT 1\0"));
        assert!(!is_ddl_tag(b"INSERT 0 1\0"));
        let e = SchemaEpoch::default();
        assert_eq!(e.bump("test"), 1);
        assert_eq!(e.current(), 1);
    }

    #[test]
    fn changing_window_and_ddl_in_flight() {
        let e = SchemaEpoch::default();
        assert!(!e.changing_within(Duration::from_secs(60)));
        e.ddl_started();
        assert!(e.changing_within(Duration::ZERO));
        e.ddl_ended();
        e.ddl_ended();
        assert!(!e.changing_within(Duration::ZERO));
        e.bump("test");
        assert!(e.changing_within(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!e.changing_within(Duration::from_millis(1)));
    }
}
