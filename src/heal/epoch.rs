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

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct SchemaEpoch(AtomicU64);

impl SchemaEpoch {
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// A schema change happened: statements prepared before now are stale.
    pub fn bump(&self, why: &'static str) -> u64 {
        let e = self.0.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::debug!(epoch = e, why, "schema epoch advanced");
        e
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
}
