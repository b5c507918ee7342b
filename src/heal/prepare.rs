//! Preparing statements on a server connection on a client's behalf: before first use on a
//! connection (transaction pooling), and again after a schema change (the schema epoch), with
//! the client's messages held until the new shape is known, so result formats and rows fit the
//! contract and a broken contract fails the Bind before anything runs.

use crate::protocol::frontend::{self, Target};
use crate::protocol::{encode, Frame};
use crate::statements::{ServerPrepared, Shaping, StmtId};

use super::outbox::Outbox;
use super::pending::{Action, Expect, Pending, PortalShaping};
use super::relay::{Naming, Relay};

impl Relay {
    /// Prepare statement `id` on this server connection (Parse + Describe, responses swallowed),
    /// closing an evicted statement first.
    pub(crate) fn prepare_on_server(
        &mut self,
        id: StmtId,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) {
        self.prepare_on_server_for(id, false, srv, out)
    }

    /// As [`Self::prepare_on_server`]; `client_parse`: it stands for the client's own Parse,
    /// whose failure must remove the client's statement too. Errors reach the client either way.
    pub(crate) fn prepare_on_server_for(
        &mut self,
        id: StmtId,
        client_parse: bool,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) {
        let Some(s) = self.stmts.get(id) else { return };
        let (name, sql, types) = (s.server_name.clone(), s.sql.clone(), s.param_types.clone());
        if let Some(evicted) = srv.prepared(name.clone(), self.epoch.current()) {
            out.to_server
                .push(encode::close(Target::Statement(&evicted)).bytes);
            self.internal(Expect::CloseComplete {
                closes: None,
                shape: None,
            });
        }
        // Close first (closing a missing statement is no error): an earlier Close or Parse of
        // this name may have been skipped by the server after an error, so what the server
        // holds can differ from the record, and a Parse of an existing name fails with 42P05.
        out.to_server
            .push(encode::close(Target::Statement(&name)).bytes);
        self.internal(Expect::CloseComplete {
            closes: None,
            shape: None,
        });
        out.to_server.push(encode::parse(&name, &sql, &types).bytes);
        self.push_pending(Pending {
            expect: Expect::ServerParse {
                server_name: name.clone(),
                stmt: Some(id),
                client_parse,
            },
            idx: None,
            action: Action::SwallowOk,
        });
        out.to_server
            .push(encode::describe(Target::Statement(&name)).bytes);
        self.internal(Expect::StatementDescription {
            stmt: Some(id),
            server_name: Some(name),
            risky: false,
            params: None,
            unblocks: false,
        });
    }

    /// A Bind or Describe 'S' of a row-returning statement whose shape on this connection must be
    /// learned first: prepared before the current schema epoch (`stale`), or not prepared here
    /// and not known to the pool in the current epoch with the client's contract.
    ///
    /// Also a connection whose record cannot keep the contract in the current epoch: a schema
    /// change pgheal did not see (made straight on the server) leaves each connection with the
    /// shape it last described, and a contract learned on another connection after the change
    /// is newer than that record. The record is stale, not the contract: the statement is
    /// prepared here again (as PostgreSQL would re-plan it), once per batch, and only a shape
    /// the server still reports after that refuses the Bind.
    pub(crate) fn needs_shape_first(
        &mut self,
        frame: &Frame,
        srv: &ServerPrepared,
    ) -> Option<(StmtId, bool)> {
        let name = match frame.tag {
            frontend::BIND => frontend::bind_statement(frame).ok()?,
            frontend::DESCRIBE => match frontend::decode_describe(frame).ok()? {
                Target::Statement(n) => n,
                Target::Portal(_) => return None,
            },
            _ => return None,
        };
        if name.is_empty() || !self.cfg.enabled {
            return None;
        }
        let id = self.stmts.id(name)?;
        let just_learned = self.reprepared.is_some_and(|(done, _)| done == id);
        let s = self.stmts.get(id)?;
        if s.contract.is_none() && self.pooled() {
            if self.describing(&s.server_name) {
                // Prepared in this pipeline (the client's Parse): its description is on its
                // way and arrives before any answer to this message. Preparing it again would
                // cost a round trip and count a heal that never was.
                return None;
            }
            // Parsed from the pool's cache: learn the real shape here before first use.
            return Some((id, srv.contains(&s.server_name)));
        }
        if !s.returns_rows() {
            return None;
        }
        let epoch = self.epoch.current();
        match srv.get(&s.server_name) {
            Some(here) if here.epoch < epoch => Some((id, true)),
            Some(here) => {
                let kept = match (&here.shape, self.stmts.get_mut(id)) {
                    (Some(shape), Some(s)) => s.shaping_for(shape).is_ok(),
                    _ => true,
                };
                (!kept && !just_learned).then_some((id, true))
            }
            None => {
                let Naming::Pooled { names, .. } = &self.naming else {
                    // Session pooling: the client's statement is missing from its own server
                    // connection only after the server skipped its Parse (an error earlier in
                    // that batch). Learn its shape before the Bind: prepared lazily, a shape
                    // that broke the contract would only show once the answers flowed.
                    return Some((id, false));
                };
                let known = names.described(&s.server_name).is_some_and(|d| {
                    d.epoch == epoch && s.contract.as_ref().is_some_and(|c| **c == *d.shape)
                });
                (!known).then_some((id, false))
            }
        }
    }

    /// Whether a Describe of server statement `name` is awaiting its answer.
    fn describing(&self, name: &[u8]) -> bool {
        self.pending.iter().any(|p| {
            matches!(&p.expect, Expect::StatementDescription { server_name: Some(n), .. } if **n == *name)
        })
    }

    /// Close (when `stale`) and prepare statement `id` on this connection, then Flush and hold
    /// the client's messages until its description arrives.
    pub(crate) fn prepare_and_wait(
        &mut self,
        id: StmtId,
        stale: bool,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) {
        let Some(name) = self.stmts.get(id).map(|s| s.server_name.clone()) else {
            return;
        };
        self.reprepared = Some((id, stale));
        if stale {
            srv.closed(&name);
        }
        self.prepare_on_server(id, srv, out);
        // The Parse stands in for the client's message: its error is the client's.
        for p in self.pending.iter_mut().rev() {
            match &mut p.expect {
                Expect::StatementDescription { unblocks, .. } => *unblocks = true,
                Expect::ServerParse { .. } => break,
                _ => {}
            }
        }
        out.to_server.push(encode::raw(frontend::FLUSH, &[]).bytes);
        self.awaiting_shape += 1;
    }

    /// Fail a Bind with PostgreSQL's own cached-plan error (fields as the server sends them, so
    /// drivers recognise it). A Parse that cannot succeed goes in its place, so the server skips
    /// to Sync and rolls back exactly as it would have.
    pub(crate) fn refuse_bind(
        &mut self,
        id: StmtId,
        why: &str,
        idx: Option<u32>,
        action: Action,
        out: &mut Outbox,
    ) {
        self.fail_bind(idx, action, out);
        let (statement, sql) = self.statement_label(id);
        out.events.push(super::HealEvent {
            outcome: super::Outcome::Refused,
            statement,
            sql,
            detail: format!("contract cannot be kept: {why}"),
        });
    }

    /// Send a Parse bound to fail in a Bind's place and answer the client with the cached-plan
    /// error, counting nothing.
    pub(crate) fn fail_bind(&mut self, idx: Option<u32>, action: Action, out: &mut Outbox) {
        let err = super::recognize::cached_plan_error();
        out.to_server
            .push(encode::parse("", "pgheal: contract cannot be kept", &[]).bytes);
        self.push_pending(Pending {
            expect: Expect::FailWith(err),
            idx,
            action,
        });
    }

    /// A statement re-prepared before use (schema epoch) is a heal too: log and count it.
    pub(crate) fn report_proactive(
        &self,
        id: StmtId,
        stale: bool,
        shaping: &PortalShaping,
        out: &mut Outbox,
    ) {
        let projected = matches!(shaping, PortalShaping::Known(_, Shaping::Project { projection, .. }) if !projection.is_identity());
        if !stale && !projected {
            // A first prepare on this connection that needed nothing: not a heal.
            return;
        }
        let (statement, sql) = self.statement_label(id);
        out.events.push(super::HealEvent {
            outcome: if projected {
                super::Outcome::Projected
            } else {
                super::Outcome::Healed
            },
            statement,
            sql,
            detail: "re-prepared before use after a schema change (no error reached the client)"
                .into(),
        });
    }
}
