//! The relay: server-side half. Each backend message is matched, by order, to the pending entry
//! it answers, transformed if its statement is projected, and forwarded, held or swallowed.

use bytes::Bytes;

use crate::protocol::backend::{self, decode_row_description, ErrorFields, TxStatus};
use crate::protocol::Frame;

use super::event::{truncate_sql, HealEvent, Outcome};
use super::outbox::Outbox;
use super::pending::{Action, Expect, Pending};
use super::recognize::is_cached_plan_error;
use super::relay::{Relay, RelayError};
use super::repair::{HealTarget, Phase};
use super::window::Held;

impl Relay {
    /// A backend message from the server.
    pub fn on_server(&mut self, frame: Frame, out: &mut Outbox) -> Result<(), RelayError> {
        if backend::is_async(frame.tag) {
            // Notices caused by pgheal's own repair commands are not the client's business.
            if frame.tag != backend::NOTICE_RESPONSE || matches!(self.phase, Phase::Relaying) {
                out.to_client.push(frame.bytes);
            }
            return Ok(());
        }
        if !matches!(self.phase, Phase::Relaying) {
            return self.repair_step(frame, out);
        }
        self.route(frame, out)
    }

    fn route(&mut self, frame: Frame, out: &mut Outbox) -> Result<(), RelayError> {
        let Some(head) = self.pending.front() else {
            // Nothing expected (e.g. a FATAL error before the server closes): pass it on.
            out.to_client.push(frame.bytes);
            return Ok(());
        };
        if frame.tag == backend::ERROR_RESPONSE {
            return self.on_error(frame, out);
        }
        let tag = frame.tag;
        let (done, stmt) = match (&head.expect, tag) {
            (Expect::ParseComplete, backend::PARSE_COMPLETE) => (true, None),
            (Expect::BindComplete { .. }, backend::BIND_COMPLETE) => (true, None),
            (Expect::CloseComplete, backend::CLOSE_COMPLETE) => (true, None),
            (Expect::StatementDescription { .. }, backend::PARAMETER_DESCRIPTION) => (false, None),
            (
                Expect::StatementDescription { stmt, .. },
                backend::ROW_DESCRIPTION | backend::NO_DATA,
            ) => (true, *stmt),
            (Expect::PortalDescription { stmt }, backend::ROW_DESCRIPTION) => (true, *stmt),
            (Expect::PortalDescription { .. }, backend::NO_DATA) => (true, None),
            (Expect::ExecuteResult { stmt }, backend::DATA_ROW) => (false, *stmt),
            (
                Expect::ExecuteResult { .. },
                backend::COMMAND_COMPLETE | backend::EMPTY_QUERY | backend::PORTAL_SUSPENDED,
            ) => (true, None),
            (Expect::ExecuteResult { .. }, _) => (false, None), // COPY sub-protocol
            (
                Expect::Sync | Expect::Query { .. } | Expect::FunctionCall,
                backend::READY_FOR_QUERY,
            ) => (true, None),
            (Expect::Query { .. } | Expect::FunctionCall, _) => (false, None),
            (expect, _) => {
                tracing::warn!(?expect, tag = %char::from(tag), "unexpected server message; forwarding");
                out.to_client.push(frame.bytes);
                return Ok(());
            }
        };
        let head = if done {
            self.pop_pending().expect("head exists")
        } else {
            self.pending.front().cloned().expect("head exists")
        };
        // A statement description is recorded whoever asked for it (pgheal's own Describe
        // after a Parse is swallowed, but it is what establishes the contract).
        let described = match (tag, &head.expect, stmt) {
            (
                backend::ROW_DESCRIPTION | backend::NO_DATA,
                Expect::StatementDescription { .. },
                Some(id),
            ) => {
                let fields = if tag == backend::NO_DATA {
                    Vec::new()
                } else {
                    decode_row_description(&frame).map_err(RelayError::Server)?
                };
                self.stmts.described(id, fields);
                Some(id)
            }
            _ => None,
        };
        if self.consume_suppressed(&head, done) {
            return self.after_response(&head, &frame, out);
        }
        match (tag, &head.expect) {
            (backend::ROW_DESCRIPTION | backend::NO_DATA, Expect::StatementDescription { .. }) => {
                let rewritten = described.and_then(|id| self.contract_description(id, &frame));
                let bytes = rewritten.unwrap_or_else(|| frame.bytes.clone());
                self.emit(head.idx, tag, bytes, true, out);
            }
            (backend::ROW_DESCRIPTION, Expect::PortalDescription { .. }) => {
                let bytes = match stmt
                    .and_then(|id| self.stmts.get(id))
                    .filter(|s| s.rewrites())
                {
                    Some(_) => stmt
                        .and_then(|id| self.contract_description(id, &frame))
                        .unwrap_or_else(|| frame.bytes.clone()),
                    None => frame.bytes.clone(),
                };
                self.emit(head.idx, tag, bytes, true, out);
            }
            (backend::DATA_ROW, _) => {
                let projection = stmt
                    .and_then(|id| self.stmts.get(id))
                    .map(|s| s.projection.clone())
                    .filter(|p| !p.is_identity());
                match projection {
                    None => self.emit(head.idx, tag, frame.bytes.clone(), true, out),
                    Some(p) => {
                        let mut parts = Vec::with_capacity(4);
                        let mut scratch = std::mem::take(&mut self.scratch);
                        let r = p.project_row(&frame, &mut scratch, &mut parts);
                        self.scratch = scratch;
                        r.map_err(RelayError::Server)?;
                        for (i, part) in parts.into_iter().enumerate() {
                            self.emit(head.idx, tag, part, i == 0, out);
                        }
                    }
                }
            }
            _ => {
                if head.action != Action::Swallow {
                    self.emit(head.idx, tag, frame.bytes.clone(), true, out);
                }
            }
        }
        self.after_response(&head, &frame, out)
    }

    /// A RowDescription in the contract's terms, when the server's differs from it.
    fn contract_description(&self, id: crate::statements::StmtId, frame: &Frame) -> Option<Bytes> {
        let s = self.stmts.get(id)?;
        if !s.rewrites() {
            return None;
        }
        let contract = s.contract.as_ref()?;
        let server = decode_row_description(frame).ok()?;
        Some(s.projection.describe(contract, &server).bytes)
    }

    /// Handle swallowed and suppressed responses. Returns true when the message is consumed.
    fn consume_suppressed(&mut self, head: &Pending, done: bool) -> bool {
        match head.action {
            Action::Swallow => true,
            Action::Suppress(n) if n > 0 => {
                let next = Action::Suppress(n - 1);
                if !done {
                    if let Some(front) = self.pending.front_mut() {
                        front.action = next;
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Book-keeping after a response: confirmations release held output; ReadyForQuery ends
    /// the window.
    fn after_response(
        &mut self,
        head: &Pending,
        frame: &Frame,
        out: &mut Outbox,
    ) -> Result<(), RelayError> {
        if self.risky_in_flight == 0 && !self.window.held.is_empty() {
            self.flush_held(out);
        }
        if frame.tag == backend::READY_FOR_QUERY {
            let status = backend::decode_ready_for_query(frame).map_err(RelayError::Server)?;
            self.status = status;
            if self.pending.is_empty() {
                self.window.reset(status);
            }
            let _ = head;
            self.drain_deferred(out)?;
        }
        Ok(())
    }

    /// Send a response to the client now, or hold it while a risky message is unconfirmed.
    pub(crate) fn emit(
        &mut self,
        idx: Option<u32>,
        tag: u8,
        bytes: Bytes,
        counts: bool,
        out: &mut Outbox,
    ) {
        if self.risky_in_flight > 0 && !self.window.overflowed {
            self.window.held_bytes += bytes.len();
            self.window.held.push(Held {
                idx,
                tag,
                counts,
                bytes,
            });
            if self.window.held_bytes > self.cfg.holdback_bytes {
                self.window.overflowed = true;
                self.flush_held(out);
            }
            return;
        }
        // Output held for earlier messages goes first.
        if !self.window.held.is_empty() {
            self.flush_held(out);
        }
        if counts {
            self.window.forwarded(idx, tag);
        }
        out.to_client.push(bytes);
    }

    pub(crate) fn flush_held(&mut self, out: &mut Outbox) {
        let held = std::mem::take(&mut self.window.held);
        self.window.held_bytes = 0;
        for h in &held {
            if h.counts {
                self.window.forwarded(h.idx, h.tag);
            }
        }
        out.to_client.extend(held.into_iter().map(|h| h.bytes));
    }

    /// An ErrorResponse: start a heal, or forward it and skip what the server skips.
    fn on_error(&mut self, frame: Frame, out: &mut Outbox) -> Result<(), RelayError> {
        let head = self.pending.front().cloned().expect("head exists");
        if let Ok(fields) = ErrorFields::decode(&frame) {
            if is_cached_plan_error(&fields) {
                tracing::debug!(?head, start = ?self.window.start, irrevocable = self.window.irrevocable, no_heal = self.window.no_heal, heals = self.window.heals, entries = self.window.entries.len(), "cached-plan error");
                if let Some(target) = self.heal_target(&head) {
                    if head.is_risky()
                        && self.cfg.enabled
                        && self.window.replayable(self.cfg.max_heals)
                    {
                        return self.start_heal(target, frame, out);
                    }
                }
                if !self.window.no_heal {
                    self.report_unhealed(&head, out);
                }
            }
        }
        let ends_at_ready = matches!(head.expect, Expect::Query { .. } | Expect::FunctionCall);
        if !ends_at_ready {
            self.pop_pending();
            // The server skips every message up to Sync.
            while self.pending.front().is_some_and(|p| !p.is_sync_point()) {
                self.pop_pending();
            }
        }
        if self.risky_in_flight == 0 {
            self.flush_held(out);
        }
        match head.action {
            Action::Swallow => {}
            Action::Suppress(n) if n > 0 => {}
            _ => self.emit(head.idx, frame.tag, frame.bytes, true, out),
        }
        Ok(())
    }

    /// What a cached-plan error on `head` would heal.
    fn heal_target(&self, head: &Pending) -> Option<HealTarget> {
        match &head.expect {
            Expect::BindComplete { stmt: Some(id), .. }
            | Expect::StatementDescription { stmt: Some(id), .. } => {
                Some(HealTarget::Statement(*id))
            }
            Expect::Query { .. } => {
                let idx = head.idx? as usize;
                let frame = &self.window.entries.get(idx)?.frame;
                let sql = crate::protocol::frontend::decode_query(frame).ok()?;
                let names = self.sql_prepared.executed_by(sql);
                (!names.is_empty()).then_some(HealTarget::Sql(names))
            }
            _ => None,
        }
    }

    fn report_unhealed(&self, head: &Pending, out: &mut Outbox) {
        let outcome = if self.window.start != TxStatus::Idle {
            Outcome::ForwardedInTransaction
        } else {
            Outcome::Refused
        };
        let (statement, sql) = match &head.expect {
            Expect::BindComplete { stmt: Some(id), .. }
            | Expect::StatementDescription { stmt: Some(id), .. } => self
                .stmts
                .get(*id)
                .map(|s| (s.name.clone(), truncate_sql(&s.sql)))
                .unwrap_or_default(),
            _ => Default::default(),
        };
        let detail = if outcome == Outcome::ForwardedInTransaction {
            "inside a transaction block that began in an earlier batch".to_owned()
        } else {
            "the batch cannot be replayed (results already sent, COPY, or limits)".to_owned()
        };
        out.events.push(HealEvent {
            outcome,
            statement,
            sql,
            detail,
        });
    }
}
