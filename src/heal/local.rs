//! Answers pgheal gives itself in transaction pooling: a Parse, Describe 'S', Close, Flush or
//! Sync that needs no server connection, and `DEALLOCATE`/`DISCARD ALL` acting on the client's
//! own statements.

use std::sync::Arc;

use crate::protocol::backend::TxStatus;
use crate::protocol::frontend::{self, Parse, Target};
use crate::protocol::{encode, Frame};
use crate::statements::sql_prepare::{management_command, Management};

use super::outbox::Outbox;
use super::relay::{Naming, Relay, RelayError};
use super::repair::Phase;

impl Relay {
    /// Transaction pooling, with no server connection attached: answer what needs no server.
    /// A Parse of a statement text the pool already knows, a Describe 'S' of it, a Close, a
    /// Flush and a Sync are answered from the pool's statement cache, so preparing never waits
    /// for a server connection (a client that prepares synchronously while another of its
    /// connections holds a pooled server connection in a transaction would otherwise wait on
    /// itself). Returns false for anything that needs the server.
    pub fn try_local(&mut self, frame: &Frame, out: &mut Outbox) -> Result<bool, RelayError> {
        let Naming::Pooled { names, search_path } = &self.naming else {
            return Ok(false);
        };
        if !self.pending.is_empty()
            || !self.deferred.is_empty()
            || !matches!(self.phase, Phase::Relaying)
        {
            return Ok(false);
        }
        match frame.tag {
            frontend::PARSE => {
                let p = Parse::decode(frame).map_err(RelayError::Client)?;
                if p.name.is_empty() || self.stmts.id(p.name).is_some() {
                    return Ok(false);
                }
                let sql: Arc<[u8]> = p.query.into();
                let types: Arc<[u32]> = p.param_types.clone().into();
                let Some(name) = names.existing(&sql, &types, search_path.as_ref()) else {
                    return Ok(false);
                };
                let Some(d) = names.described(&name) else {
                    return Ok(false);
                };
                // The contract is not taken from the cache: a migration pgheal has not seen may
                // have changed the shape. It is set by a real Describe at first use.
                let _ = d;
                self.stmts.parsed(p.name, sql, types, name);
                out.to_client.push(encode::parse_complete().bytes);
            }
            frontend::DESCRIBE => {
                let Ok(Target::Statement(n)) = frontend::decode_describe(frame) else {
                    return Ok(false);
                };
                let Some(s) = self.stmts.by_name(n) else {
                    return Ok(false);
                };
                let Some(d) = names.described(&s.server_name) else {
                    return Ok(false);
                };
                if !s
                    .contract
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(c, &d.shape))
                {
                    return Ok(false);
                }
                out.to_client.push(d.params.bytes.clone());
                out.to_client.push(d.rows.bytes.clone());
            }
            frontend::CLOSE => {
                let Ok(Target::Statement(n)) = frontend::decode_close(frame) else {
                    return Ok(false);
                };
                if !n.is_empty() {
                    self.stmts.close(n);
                }
                out.to_client.push(encode::close_complete().bytes);
            }
            frontend::FLUSH => {}
            frontend::SYNC => {
                out.to_client
                    .push(encode::ready_for_query(self.status).bytes);
                self.note_ready(self.status);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `DEALLOCATE name`, `DEALLOCATE ALL` and `DISCARD ALL` alone in a query act on the client's
    /// own statements in transaction pooling and are answered locally: returns the command tag.
    /// Forwarded instead (so PostgreSQL answers exactly) when the name is unknown, in a failed
    /// transaction, and for `DISCARD ALL` inside a transaction block (25001). The SQL is read
    /// as [`crate::statements::sql_prepare`] reads it (bytes in the client's encoding).
    pub(crate) fn local_statement_command(&self, sql: &[u8]) -> Option<&'static str> {
        // A cheap test first: this runs for every simple query (comments may come first).
        if !matches!(
            sql.trim_ascii_start().first(),
            Some(b'd' | b'D' | b'-' | b'/')
        ) {
            return None;
        }
        let status = self.status;
        match management_command(sql)? {
            Management::DiscardAll if status == TxStatus::Idle => Some("DISCARD ALL"),
            Management::DeallocateAll if status != TxStatus::Failed => Some("DEALLOCATE ALL"),
            Management::Deallocate(name)
                if status != TxStatus::Failed && self.stmts.id(&name).is_some() =>
            {
                Some("DEALLOCATE")
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heal::RelayConfig;

    #[test]
    fn local_commands() {
        let mut r = Relay::new(RelayConfig::default(), Naming::Session);
        for name in [&b"p1"[..], b"P2", b"caf\xe9"] {
            r.stmts
                .parsed(name, b"SELECT 1"[..].into(), Vec::new().into(), name.into());
        }
        assert_eq!(
            r.local_statement_command(b"DISCARD ALL;"),
            Some("DISCARD ALL")
        );
        assert_eq!(
            r.local_statement_command(b"deallocate prepare all"),
            Some("DEALLOCATE ALL")
        );
        assert_eq!(
            r.local_statement_command(b"DEALLOCATE p1"),
            Some("DEALLOCATE")
        );
        assert_eq!(
            r.local_statement_command(b"DEALLOCATE \"P2\""),
            Some("DEALLOCATE")
        );
        assert_eq!(r.local_statement_command(b"DEALLOCATE P2"), None);
        assert_eq!(
            r.local_statement_command(b"DEALLOCATE caf\xe9"),
            Some("DEALLOCATE")
        );
        assert_eq!(r.local_statement_command(b"DEALLOCATE nosuch"), None);
        assert_eq!(r.local_statement_command(b"DEALLOCATE p1; SELECT 1"), None);
        assert_eq!(r.local_statement_command(b"SELECT 1"), None);
        r.status = TxStatus::InTransaction;
        assert_eq!(r.local_statement_command(b"DISCARD ALL"), None);
        assert_eq!(
            r.local_statement_command(b"DEALLOCATE p1"),
            Some("DEALLOCATE")
        );
    }
}
