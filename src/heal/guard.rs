//! The savepoint guard: the last line of defence inside a transaction block.
//!
//! The schema epoch prevents the cached-plan error only when pgheal knows of the schema change
//! before the Bind reaches the server. Two cases slip through: DDL made straight on the server
//! before the schema watch's NOTIFY arrives, and — the common one — a Bind that passed pgheal
//! while a migration held its table lock: the Bind waits for the lock, the migration commits,
//! and PostgreSQL then finds the plan stale and aborts the client's transaction.
//!
//! With the guard on, pgheal brackets the Bind of a row-returning named statement inside a
//! transaction block with `SAVEPOINT pgheal_guard` before and `RELEASE SAVEPOINT pgheal_guard`
//! right after (all in the same pipeline, responses swallowed). The error can only come from
//! the Bind, so once the Bind succeeded the savepoint is released and the statement runs in the
//! client's own transaction as before. On the error pgheal rolls back to the savepoint, which
//! leaves the client's transaction as it was before the Bind, re-prepares the statement and
//! sends the rest of the batch again: the client never sees the error.
//!
//! Cost: one subtransaction per guarded Bind (two extra statements executed by the server, no
//! extra round trip). A subtransaction that is released still uses a subtransaction id if it
//! wrote; PostgreSQL caches 64 of them per backend, and past that every snapshot of other
//! sessions has to look up `pg_subtrans` (the "subtransaction cache overflow" slowdown), so
//! `always` on write-heavy long transactions can hurt. `after-schema-change` guards only while
//! a migration is in progress through pgheal and for a window after any schema change.

use std::str::FromStr;

/// When the savepoint guard brackets a Bind inside a transaction block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SavepointGuard {
    /// Never: inside a transaction only the schema epoch prevents the error.
    #[default]
    Off,
    /// While DDL through pgheal is uncommitted on this database, and for
    /// `savepoint_guard_window` after the schema epoch last advanced.
    AfterSchemaChange,
    /// Every Bind of a row-returning named statement inside a transaction block.
    Always,
}

impl FromStr for SavepointGuard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(SavepointGuard::Off),
            "after-schema-change" => Ok(SavepointGuard::AfterSchemaChange),
            "always" => Ok(SavepointGuard::Always),
            _ => Err(format!(
                "expected off, after-schema-change or always, got {s:?}"
            )),
        }
    }
}
