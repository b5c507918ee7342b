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

use crate::protocol::backend::TxStatus;
use crate::protocol::frontend::{self, Target};
use crate::protocol::{encode, Frame};
use crate::statements::ServerPrepared;

use super::outbox::Outbox;
use super::pending::{Action, Expect, Pending, PortalShaping};
use super::relay::Relay;

/// The savepoint pgheal sets.
pub const SAVEPOINT: &str = "pgheal_guard";
/// pgheal's statements (prepared once per server connection) and portal for it.
const SAVEPOINT_STMT: &[u8] = b"pgheal_guard_savepoint";
const RELEASE_STMT: &[u8] = b"pgheal_guard_release";
const PORTAL: &[u8] = b"pgheal_guard";

/// Which end of the bracket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bracket {
    Savepoint,
    Release,
}

/// Undo a guarded Bind's effect on the transaction and drop the savepoint: sent as one simple
/// query after the error, before the statement is replayed.
pub(crate) fn rollback_to_and_release() -> Frame {
    encode::query(format!(
        "ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}"
    ))
}

/// Roll back to the savepoint (keeping it) so the repair runs in a clean transaction.
pub(crate) fn rollback_to() -> Frame {
    encode::query(format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}"))
}

/// Whether SQL may end the transaction block (so a later statement of the batch runs outside
/// it, where SAVEPOINT is an error). Conservative: any ROLLBACK counts.
///
/// The SQL is bytes in the client's encoding. The first word ends at the first byte that cannot
/// be part of an identifier (bytes ≥ 0x80 can, as in PostgreSQL's lexer), so a multibyte
/// character, even one whose second byte is an ASCII letter (SJIS, BIG5, GBK, UHC, GB18030),
/// never makes a keyword out of a longer word.
pub(crate) fn may_end_block(sql: &[u8]) -> bool {
    let s = skip_comments(sql);
    let end = s
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80))
        .unwrap_or(s.len());
    let word = &s[..end];
    [&b"COMMIT"[..], b"END", b"ROLLBACK", b"ABORT", b"PREPARE"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

fn skip_comments(mut s: &[u8]) -> &[u8] {
    loop {
        s = s.trim_ascii_start();
        if let Some(rest) = s.strip_prefix(b"--") {
            s = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(&[][..], |i| &rest[i + 1..]);
        } else if let Some(rest) = s.strip_prefix(b"/*") {
            s = rest
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(&[][..], |i| &rest[i + 2..]);
        } else {
            return s;
        }
    }
}

impl Relay {
    /// Whether the guard is on for this database now.
    fn guard_on(&self) -> bool {
        match self.cfg.savepoint_guard {
            SavepointGuard::Off => false,
            SavepointGuard::Always => true,
            SavepointGuard::AfterSchemaChange => {
                self.epoch.changing_within(self.cfg.savepoint_guard_window)
            }
        }
    }

    /// Whether this client message (not a replay) is a Bind to guard: a row-returning named
    /// statement, in a batch that began inside a healthy transaction block and has not ended it.
    pub(crate) fn wants_guard(&self, frame: &Frame) -> bool {
        if frame.tag != frontend::BIND
            || !self.cfg.enabled
            || self.window.start != TxStatus::InTransaction
            || self.window.ends_block
            || (self.window.savepoint && self.window.irrevocable)
            || self.input != super::relay::ServerInput::Normal
            || !self.guard_on()
        {
            return false;
        }
        let Ok(name) = frontend::bind_statement(frame) else {
            return false;
        };
        !name.is_empty()
            && self
                .stmts
                .id(name)
                .and_then(|id| self.stmts.get(id))
                .is_some_and(|s| s.returns_rows())
    }

    /// Send one end of the bracket: `SAVEPOINT` before the guarded Bind or `RELEASE` right after
    /// it, through pgheal's own prepared statements and portal. Success is swallowed; an error
    /// (a cancel, say) is forwarded, since the client's own message would have met it.
    pub(crate) fn push_bracket(
        &mut self,
        which: Bracket,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) {
        if !srv.contains(SAVEPOINT_STMT) || !srv.contains(RELEASE_STMT) {
            for (name, sql) in [
                (SAVEPOINT_STMT, format!("SAVEPOINT {SAVEPOINT}")),
                (RELEASE_STMT, format!("RELEASE SAVEPOINT {SAVEPOINT}")),
            ] {
                out.to_server
                    .push(encode::close(Target::Statement(name)).bytes);
                self.guard_internal(Expect::CloseComplete {
                    closes: None,
                    shape: None,
                });
                out.to_server.push(encode::parse(name, &sql, &[]).bytes);
                srv.prepared_pinned(name.into(), self.epoch.current());
                self.guard_internal(Expect::ServerParse {
                    server_name: name.into(),
                    stmt: None,
                    client_parse: false,
                });
            }
        }
        let stmt = match which {
            Bracket::Savepoint => SAVEPOINT_STMT,
            Bracket::Release => RELEASE_STMT,
        };
        out.to_server
            .push(encode::bind_no_params(PORTAL, stmt).bytes);
        self.guard_internal(Expect::BindComplete {
            stmt: None,
            risky: false,
            lazy: false,
            guarded: false,
        });
        out.to_server.push(encode::execute(PORTAL, 0).bytes);
        self.guard_internal(Expect::ExecuteResult {
            shaping: PortalShaping::Plain,
        });
        out.to_server
            .push(encode::close(Target::Portal(PORTAL)).bytes);
        self.guard_internal(Expect::CloseComplete {
            closes: None,
            shape: None,
        });
        if which == Bracket::Savepoint {
            out.guards += 1;
        }
    }

    fn guard_internal(&mut self, expect: Expect) {
        self.push_pending(Pending {
            expect,
            idx: None,
            action: Action::SwallowOk,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ending_statements() {
        assert!(may_end_block(b"COMMIT"));
        assert!(may_end_block(b"  end;"));
        assert!(may_end_block(b"-- done\nrollback"));
        assert!(may_end_block(b"/* x */ ROLLBACK TO SAVEPOINT a"));
        assert!(may_end_block(b"PREPARE TRANSACTION 'x'"));
        assert!(!may_end_block(b"SELECT 1"));
        assert!(!may_end_block(b"INSERT INTO commits VALUES (1)"));
        assert!(!may_end_block(b"SAVEPOINT a"));
        assert!(!may_end_block(b"ending"));
        assert!(!may_end_block(b"end_of_it"));
        // Not UTF-8: LATIN9 in a comment, a longer word with an SJIS character in it.
        assert!(may_end_block(b"/* caf\xe9 */ COMMIT"));
        assert!(!may_end_block(b"commit\x8aA"));
    }

    #[test]
    fn modes_parse() {
        assert_eq!("always".parse(), Ok(SavepointGuard::Always));
        assert_eq!(
            "after-schema-change".parse(),
            Ok(SavepointGuard::AfterSchemaChange)
        );
        assert!("sometimes".parse::<SavepointGuard>().is_err());
    }
}
