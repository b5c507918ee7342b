//! The relay: server-side half. Each backend message is matched, by order, to the pending entry
//! it answers, shaped for the client if its statement is projected, and forwarded, held or
//! swallowed.

use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::backend::{self, decode_row_description, ErrorFields, Field, TxStatus};
use crate::protocol::{encode, sqlstate, Frame};
use crate::statements::{Described, ServerPrepared, Shaping, StmtId};

use super::epoch::is_ddl_tag;
use super::event::{HealEvent, Outcome};
use super::outbox::Outbox;
use super::pending::{Action, Expect, Pending, PortalShaping};
use super::recognize::is_cached_plan_error;
use super::relay::{Naming, Relay, RelayError, ServerInput};
use super::repair::{HealTarget, Phase};
use super::window::{replay_safe, Held};

impl Relay {
    /// A backend message from the server.
    pub fn on_server(
        &mut self,
        frame: Frame,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Result<(), RelayError> {
        if backend::is_async(frame.tag) {
            // Notices caused by pgheal's own repair commands are not the client's business.
            if frame.tag != backend::NOTICE_RESPONSE || matches!(self.phase, Phase::Relaying) {
                out.to_client.push(frame.bytes);
            }
            return Ok(());
        }
        if matches!(self.phase, Phase::Relaying) {
            self.route(frame, srv, out)?;
        } else {
            self.repair_step(frame, srv, out)?;
        }
        self.emit_locals(srv, out);
        if self.deferred.is_empty() {
            return Ok(());
        }
        self.drain_deferred(srv, out)
    }

    fn route(
        &mut self,
        frame: Frame,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Result<(), RelayError> {
        self.emit_locals(srv, out);
        if self.pending.is_empty() {
            // Nothing expected (e.g. a FATAL error before the server closes): pass it on.
            out.to_client.push(frame.bytes);
            return Ok(());
        }
        if frame.tag == backend::ERROR_RESPONSE {
            return self.on_error(frame, srv, out);
        }
        self.resolve_head(srv, out);
        let tag = frame.tag;
        let Some(head) = self.pending.front() else {
            return Ok(());
        };
        let done = match (&head.expect, tag) {
            (Expect::ParseComplete | Expect::ServerParse { .. }, backend::PARSE_COMPLETE) => true,
            (Expect::BindComplete { .. }, backend::BIND_COMPLETE) => true,
            (Expect::CloseComplete { .. }, backend::CLOSE_COMPLETE) => true,
            (Expect::StatementDescription { .. }, backend::PARAMETER_DESCRIPTION) => false,
            (Expect::StatementDescription { .. }, backend::ROW_DESCRIPTION | backend::NO_DATA) => {
                true
            }
            (Expect::PortalDescription { .. }, backend::ROW_DESCRIPTION | backend::NO_DATA) => true,
            (Expect::ExecuteResult { .. }, backend::DATA_ROW) => false,
            (
                Expect::ExecuteResult { .. },
                backend::COMMAND_COMPLETE | backend::EMPTY_QUERY | backend::PORTAL_SUSPENDED,
            ) => true,
            (Expect::ExecuteResult { .. }, _) => false, // COPY sub-protocol
            (
                Expect::Sync | Expect::Query { .. } | Expect::FunctionCall,
                backend::READY_FOR_QUERY,
            ) => true,
            (Expect::Query { .. } | Expect::FunctionCall, _) => false,
            (Expect::FailWith(_), _) => true,
            (expect, _) => {
                tracing::warn!(parent: &self.span, ?expect, tag = %char::from(tag), "unexpected server message; forwarding");
                out.to_client.push(frame.bytes);
                return Ok(());
            }
        };
        if tag == backend::PARAMETER_DESCRIPTION {
            if let Some(Pending {
                expect: Expect::StatementDescription { params, .. },
                ..
            }) = self.pending.front_mut()
            {
                *params = Some(frame.clone());
            }
        }
        // ReadyForQuery is decoded before its bytes move on to the client.
        let ready = if tag == backend::READY_FOR_QUERY {
            Some(backend::decode_ready_for_query(&frame).map_err(RelayError::Server)?)
        } else {
            None
        };
        // The head is taken out of the queue while its response is handled (not cloned: a
        // projection would be cloned with it for every row); one that expects more responses
        // goes back to the front, with the risky count untouched, before the book-keeping.
        let Some(mut head) = self.pending.pop_front() else {
            return Ok(());
        };
        if done && head.is_risky() {
            self.risky_in_flight -= 1;
        }
        let r = self.respond(frame, &mut head, done, srv, out);
        if !done {
            self.pending.push_front(head);
        }
        r?;
        self.after_response(ready, out);
        Ok(())
    }

    /// Handle one response to `head` (out of the queue meanwhile).
    fn respond(
        &mut self,
        frame: Frame,
        head: &mut Pending,
        done: bool,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Result<(), RelayError> {
        let tag = frame.tag;
        if let Expect::CloseComplete {
            closes: Some(id),
            shape,
        } = &head.expect
        {
            let id = *id;
            self.resolve_before_close(id, shape.as_ref(), srv, out);
            self.stmts.remove_id(id);
        }
        // A statement description is recorded whoever asked for it: pgheal's own Describe after
        // a Parse is swallowed, but it establishes the contract and the server-side shape.
        let mut described: Option<(StmtId, Arc<[Field]>)> = None;
        if let (
            backend::ROW_DESCRIPTION | backend::NO_DATA,
            Expect::StatementDescription {
                stmt, server_name, ..
            },
        ) = (tag, &head.expect)
        {
            let mut shape: Arc<[Field]> = if tag == backend::NO_DATA {
                Vec::new().into()
            } else {
                decode_row_description(&frame)
                    .map_err(RelayError::Server)?
                    .into()
            };
            if let Some(n) = server_name {
                shape = self.shared_shape(n, shape);
                srv.described(n, shape.clone());
                if let (
                    Naming::Pooled { names, .. },
                    Expect::StatementDescription {
                        params: Some(p), ..
                    },
                ) = (&self.naming, &head.expect)
                {
                    names.describe(
                        n,
                        // Copies: kept in the pool's registry for as long as the text, they
                        // must not keep the server connection's read buffer they came in.
                        Described {
                            params: p.detached(),
                            rows: frame.detached(),
                            shape: shape.clone(),
                            epoch: self.epoch.current(),
                        },
                    );
                }
            }
            if let Some(id) = stmt {
                if self.stmts.described(*id, &shape) {
                    self.record_contract(*id);
                }
                described = Some((*id, shape));
            }
        }
        if let Expect::StatementDescription { unblocks: true, .. } = head.expect {
            if done {
                self.awaiting_shape = self.awaiting_shape.saturating_sub(1);
            }
        }
        if tag == backend::COMMAND_COMPLETE && is_ddl_tag(frame.body()) {
            if self.pooled() {
                // Pool-wide statements on this connection may depend on what changed: later
                // uses in this transaction prepare them afresh, as the client's own Parse would.
                srv.forget_unpinned();
            }
            match head.expect {
                Expect::Query { temp: true, .. } => {}
                Expect::Query { .. } | Expect::ExecuteResult { .. } if !self.ddl_pending => {
                    // Its locks are held until the transaction ends: Binds that wait for them
                    // will find their plans stale (the savepoint guard watches for this).
                    self.ddl_pending = true;
                    self.epoch.ddl_started();
                }
                _ => {}
            }
        }
        if consume_suppressed(head, done) {
            return Ok(());
        }
        match (tag, &head.expect) {
            (backend::ROW_DESCRIPTION, Expect::StatementDescription { stmt: None, .. })
            | (
                backend::ROW_DESCRIPTION,
                Expect::PortalDescription {
                    shaping: PortalShaping::Untracked,
                },
            ) => {
                // No contract to project a replay's rows onto (finding 9 of docs/fuzzing.md).
                self.emit_answer(head.idx, false, frame.bytes, true, out);
            }
            (backend::ROW_DESCRIPTION, Expect::StatementDescription { .. }) => {
                let bytes = described
                    .and_then(|(id, shape)| self.contract_description(id, &shape, &frame))
                    .unwrap_or_else(|| frame.bytes.clone());
                self.emit(head.idx, tag, bytes, true, out);
            }
            (
                backend::ROW_DESCRIPTION,
                Expect::PortalDescription {
                    shaping:
                        PortalShaping::Known(
                            _,
                            Shaping::Project {
                                projection,
                                contract,
                            },
                        ),
                },
            ) => {
                // The contract travels with the portal: the client may have closed the
                // statement since the Bind (found by the engine property test).
                let bytes = match decode_row_description(&frame) {
                    Ok(server) => projection.describe(contract, &server).bytes,
                    Err(_) => frame.bytes.clone(),
                };
                self.emit(head.idx, tag, bytes, true, out);
            }
            (
                backend::ROW_DESCRIPTION,
                Expect::PortalDescription {
                    shaping: PortalShaping::Adopt(id, shape),
                },
            ) => {
                self.stmts.adopt_shape(*id, shape.clone());
                self.emit(head.idx, tag, frame.bytes, true, out);
            }
            (
                backend::DATA_ROW,
                Expect::ExecuteResult {
                    shaping: PortalShaping::Known(_, Shaping::Project { projection, .. }),
                },
            ) if !projection.is_identity() => {
                let mut parts = Vec::with_capacity(4);
                let mut scratch = std::mem::take(&mut self.scratch);
                let r = projection.project_row(&frame, &mut scratch, &mut parts);
                self.scratch = scratch;
                r.map_err(RelayError::Server)?;
                for (i, part) in parts.into_iter().enumerate() {
                    self.emit(head.idx, tag, part, i == 0, out);
                }
            }
            (
                backend::DATA_ROW | backend::ROW_DESCRIPTION,
                Expect::ExecuteResult {
                    shaping: PortalShaping::Broken,
                },
            )
            | (
                backend::ROW_DESCRIPTION,
                Expect::PortalDescription {
                    shaping: PortalShaping::Broken,
                },
            ) => {}
            (
                backend::COMMAND_COMPLETE,
                Expect::ExecuteResult {
                    shaping: PortalShaping::Broken,
                },
            ) => {
                let err = super::recognize::cached_plan_error();
                self.emit(head.idx, err.tag, err.bytes, true, out);
            }
            (backend::COPY_IN_RESPONSE, Expect::ExecuteResult { .. }) => {
                // The server now ignores Sync until CopyDone/CopyFail: a Sync the client sent
                // after this Execute will not be answered, and does not end the window.
                self.input = ServerInput::CopyIn;
                self.pending.retain(|p| !matches!(p.expect, Expect::Sync));
                self.window.sync_sent = false;
                self.emit(head.idx, tag, frame.bytes, true, out);
            }
            (backend::COPY_IN_RESPONSE, Expect::Query { .. }) => {
                // COPY FROM STDIN of a simple query: the query's ReadyForQuery comes after
                // CopyDone/CopyFail, and a Sync sent meanwhile is ignored.
                self.input = ServerInput::CopyIn;
                self.pending.retain(|p| !matches!(p.expect, Expect::Sync));
                self.emit(head.idx, tag, frame.bytes, true, out);
            }
            _ => self.emit(head.idx, tag, frame.bytes, true, out),
        }
        Ok(())
    }

    /// Book-keeping after a response: confirmations release held output; ReadyForQuery ends
    /// the window.
    fn after_response(&mut self, ready: Option<TxStatus>, out: &mut Outbox) {
        if self.risky_in_flight == 0 && !self.window.held.is_empty() {
            self.flush_held(out);
        }
        if let Some(status) = ready {
            self.note_ready(status);
        }
    }

    /// A ReadyForQuery reached the client (from the server or answered locally).
    pub(crate) fn note_ready(&mut self, status: TxStatus) {
        self.status = status;
        // A statement prepared again before use is "just learned" for its batch only: the next
        // batch may run on a connection whose record is stale again.
        self.reprepared = None;
        match status {
            TxStatus::Idle if self.ddl_pending => {
                self.ddl_pending = false;
                self.epoch.ddl_committed_here();
                self.epoch.ddl_ended();
            }
            TxStatus::Failed if self.ddl_pending => {
                self.ddl_pending = false;
                self.epoch.ddl_ended();
            }
            _ => {}
        }
        if self.pending.is_empty() {
            self.at_ready = true;
            self.window.reset(status);
        }
    }

    /// Send local answers that have reached the head of the queue.
    #[inline]
    pub(crate) fn emit_locals(&mut self, srv: &ServerPrepared, out: &mut Outbox) {
        // Checked inline: called twice per server message, and a local answer is rarely there.
        if matches!(
            self.pending.front(),
            Some(Pending {
                expect: Expect::Local(_) | Expect::LocalClose(_) | Expect::LocalParse(_),
                ..
            })
        ) {
            self.emit_local_answers(srv, out);
        }
    }

    fn emit_local_answers(&mut self, srv: &ServerPrepared, out: &mut Outbox) {
        while let Some(Pending {
            expect: Expect::Local(_) | Expect::LocalClose(_) | Expect::LocalParse(_),
            ..
        }) = self.pending.front()
        {
            let (f, idx, action) = match self.pop_pending() {
                Some(Pending {
                    expect: Expect::Local(f),
                    idx,
                    action,
                }) => (f, idx, action),
                Some(Pending {
                    expect: Expect::LocalClose(id),
                    idx,
                    action,
                }) => {
                    self.resolve_before_close(id, None, srv, out);
                    self.stmts.remove_id(id);
                    (encode::close_complete(), idx, action)
                }
                Some(Pending {
                    expect: Expect::LocalParse(_),
                    idx,
                    action,
                }) => (encode::parse_complete(), idx, action),
                _ => break,
            };
            if matches!(action, Action::Forward | Action::Suppress(0)) {
                self.emit(idx, f.tag, f.bytes.clone(), true, out);
            }
            if f.tag == backend::READY_FOR_QUERY {
                if let Ok(status) = backend::decode_ready_for_query(&f) {
                    self.note_ready(status);
                }
            }
        }
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
        self.emit_answer(idx, replay_safe(tag), bytes, counts, out)
    }

    /// As [`Self::emit`]; `replayable`: a replay would reproduce the answer identically.
    pub(crate) fn emit_answer(
        &mut self,
        idx: Option<u32>,
        replayable: bool,
        bytes: Bytes,
        counts: bool,
        out: &mut Outbox,
    ) {
        if self.risky_in_flight > 0 && !self.window.overflowed {
            self.window.held_bytes += bytes.len();
            self.window.held.push(Held {
                idx,
                replayable,
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
            self.window.forwarded(idx, replayable);
        }
        out.to_client.push(bytes);
    }

    pub(crate) fn flush_held(&mut self, out: &mut Outbox) {
        let held = std::mem::take(&mut self.window.held);
        self.window.held_bytes = 0;
        for h in &held {
            if h.counts {
                self.window.forwarded(h.idx, h.replayable);
            }
        }
        out.to_client.extend(held.into_iter().map(|h| h.bytes));
    }

    /// What the server skipped after an error (every message up to Sync) did not happen: a
    /// Parse created no statement, a Close closed none. Undone last first: a Close skipped
    /// before a Parse of the same name gets its statement back only once that Parse is undone
    /// (found by the engine property test).
    pub(crate) fn undo_skipped(&mut self, skipped: Vec<Expect>, srv: &mut ServerPrepared) {
        for expect in skipped.into_iter().rev() {
            match expect {
                Expect::ServerParse {
                    server_name,
                    stmt,
                    client_parse,
                } => {
                    srv.closed(&server_name);
                    if let (true, Some(id)) = (client_parse, stmt) {
                        self.stmts.remove_id(id);
                    }
                }
                // A skipped Close closes nothing: the client's statement stays.
                Expect::CloseComplete {
                    closes: Some(id), ..
                }
                | Expect::LocalClose(id) => self.stmts.reopen(id),
                Expect::LocalParse(id) => self.stmts.remove_id(id),
                _ => {}
            }
        }
    }

    /// An ErrorResponse: start a heal, or forward it and skip what the server skips.
    fn on_error(
        &mut self,
        frame: Frame,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Result<(), RelayError> {
        let head = self.pending.front().cloned().expect("head exists");
        if let Expect::ServerParse {
            server_name,
            stmt,
            client_parse,
        } = &head.expect
        {
            // The statement was not created: undo what was recorded.
            srv.closed(server_name);
            if let (true, Some(id)) = (client_parse, stmt) {
                self.stmts.remove_id(*id);
            }
        }
        if let Ok(fields) = ErrorFields::decode(&frame) {
            if let (Expect::BindComplete { stmt: Some(id), .. }, true) = (
                &head.expect,
                fields.code() == Some(sqlstate::INTERNAL_ERROR) && self.pooled(),
            ) {
                // E.g. `cache lookup failed for type N`: the statement was prepared against
                // objects that are gone. Not reused on this connection: prepared afresh next time.
                if let Some(name) = self.stmts.get(*id).map(|s| s.server_name.clone()) {
                    srv.closed(&name);
                }
            }
            // Behind the savepoint guard only a guarded Bind can be rolled back to its
            // savepoint; the replay starts there.
            let from = match (&head.expect, self.window.savepoint) {
                (_, false) => Some(0),
                (Expect::BindComplete { guarded: true, .. }, true) => head.idx,
                _ => None,
            };
            let healable = self.cfg.enabled && self.window.replayable(self.cfg.max_heals);
            let healable = if healable { from } else { None };
            if is_cached_plan_error(&fields) {
                self.epoch.bump("a server connection reported a stale plan");
                if let (Some(target), Some(from)) = (self.heal_target(&head), healable) {
                    if head.is_risky() {
                        return self.start_heal(target, from, frame, srv, out);
                    }
                }
                if !self.window.no_heal {
                    self.report_unhealed(&head, out);
                }
            } else if fields.code() == Some(sqlstate::PROTOCOL_VIOLATION)
                && matches!(head.expect, Expect::BindComplete { lazy: true, .. })
            {
                if let Some(from) = healable {
                    // A statement prepared lazily on this connection has another shape than
                    // the client's result formats assumed: replay now that it is known.
                    return self.start_heal(HealTarget::Reshape, from, frame, srv, out);
                }
            }
        }
        let ends_at_ready = matches!(head.expect, Expect::Query { .. } | Expect::FunctionCall);
        // An error ends COPY FROM STDIN. After a simple Query or FunctionCall the server goes on
        // normally; after an extended-protocol message it skips to the next Sync.
        self.input = ServerInput::Normal;
        if !ends_at_ready {
            self.pop_pending();
            // The server skips every message up to Sync: a Parse among them creates nothing,
            // and a simple Query or FunctionCall among them is not answered (found by fuzzing:
            // waiting for their ReadyForQuery held the client's Sync for ever).
            let mut skipped = Vec::new();
            while self.pending.front().is_some_and(|p| {
                !p.is_sync_point()
                    || matches!(p.expect, Expect::Query { .. } | Expect::FunctionCall)
            }) {
                if let Some(p) = self.pop_pending() {
                    skipped.push(p.expect);
                }
            }
            self.undo_skipped(skipped, srv);
            if self.pending.is_empty() {
                // No Sync was sent after the failed message (a Flush-driven pipeline): whatever
                // the client sends next is discarded by the server up to its Sync.
                self.input = ServerInput::SkipToSync;
            }
            if self.awaiting_shape > 0 {
                // A prepare the client's messages were waiting for failed: the server skips
                // them too, up to the client's Sync.
                self.awaiting_shape = 0;
                while self
                    .deferred
                    .front()
                    .is_some_and(|f| f.tag != crate::protocol::frontend::SYNC)
                {
                    self.deferred.pop_front();
                }
            }
        }
        if self.risky_in_flight == 0 {
            self.flush_held(out);
        }
        let frame = match head.expect {
            Expect::FailWith(replacement) => replacement,
            _ => frame,
        };
        // A replayed message whose first answers the client already has (`Suppress`) is still
        // answered by the error: a forwarded error makes the window irrevocable, so it is never
        // among those answers, and a replay can fail earlier than the original batch did (a
        // refused heal replays a Bind that had succeeded before the migration; found by the
        // engine property test).
        match head.action {
            Action::Swallow => {}
            Action::SwallowOk => self.emit(None, frame.tag, frame.bytes, false, out),
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
                let frame = &self.window.entries.get(head.idx? as usize)?.frame;
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
            | Expect::StatementDescription { stmt: Some(id), .. } => self.statement_label(*id),
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

/// Handle swallowed and suppressed responses. Returns true when the message is consumed.
fn consume_suppressed(head: &mut Pending, done: bool) -> bool {
    match head.action {
        Action::Swallow | Action::SwallowOk => true,
        Action::Suppress(n) if n > 0 => {
            if !done {
                head.action = Action::Suppress(n - 1);
            }
            true
        }
        _ => false,
    }
}
