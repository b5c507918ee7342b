//! The relay: client-side half. Each frontend message is tracked (what the server will answer,
//! and how those answers are shaped for the client), kept in the replay window and forwarded,
//! with statement names mapped for the pool mode. The server-side half is in [`super::route`].

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::protocol::backend::TxStatus;
use crate::protocol::frontend::{self, Bind, Parse, Target};
use crate::protocol::{encode, sqlstate, Frame};
use crate::statements::sql_prepare::Dealloc;
use crate::statements::{ServerPrepared, Shaping, StmtId};

use super::guard::{Bracket, SavepointGuard};
use super::outbox::Outbox;
use super::pending::{Action, Expect, Pending, PortalShaping};
use super::relay::{Naming, Portal, Relay, RelayError, ServerInput};

impl Relay {
    /// A replayed Parse created statement `id` afresh: it keeps the contract the client was
    /// told when the original Parse ran (`Window::reparsed`).
    fn keep_told_contract(&mut self, id: StmtId, idx: Option<u32>) {
        let told = idx.and_then(|i| self.window.reparsed.iter().find(|(j, _)| *j == i));
        if let Some((_, contract)) = told {
            let contract = contract.clone();
            self.stmts.adopt_shape(id, contract);
        }
    }

    /// Track and send one client message. `replay` carries the window index and the number of
    /// responses the client already has when the message is replayed.
    pub(crate) fn client_message(
        &mut self,
        frame: Frame,
        replay: Option<(u32, u32)>,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Result<(), RelayError> {
        if self.input == ServerInput::SkipToSync && frame.tag != frontend::SYNC {
            // The server discards it unanswered and unexecuted (a Parse creates nothing, a Close
            // closes nothing): forwarded as it is, with nothing to expect and nothing to record.
            out.to_server.push(frame.bytes);
            return Ok(());
        }
        if replay.is_none() {
            if let Some((id, stale)) = self.needs_shape_first(&frame, srv) {
                // Prepare (or re-prepare) here and learn the shape before the client's message
                // goes: its result formats and rows must fit the contract, and a broken
                // contract must fail the Bind before anything runs.
                self.prepare_and_wait(id, stale, srv, out);
                self.deferred.push_front(frame);
                return Ok(());
            }
        }
        // Behind a savepoint a replay guards its Binds again.
        let mut guard = replay.is_some() && self.window.savepoint && self.wants_guard(&frame);
        let (idx, action) = match replay {
            Some((idx, 0)) => (Some(idx), Action::Forward),
            Some((idx, n)) => (Some(idx), Action::Suppress(n)),
            None => {
                if self.window.entries.is_empty()
                    && !self.window.irrevocable
                    && self.pending.is_empty()
                {
                    self.window.reset(self.status);
                }
                if self.wants_guard(&frame) {
                    // This Bind and what follows it can be replayed, after rolling back to the
                    // savepoint set right before it.
                    self.window.start_savepoint();
                    guard = true;
                }
                (self.keep_in_window(&frame), Action::Forward)
            }
        };
        self.at_ready = false;
        let is_replay = replay.is_some();
        let pending = |expect| Pending {
            expect,
            idx,
            action,
        };
        match frame.tag {
            frontend::PARSE => {
                let p = Parse::decode(&frame).map_err(RelayError::Client)?;
                if p.name.is_empty() {
                    if self.cfg.savepoint_guard != SavepointGuard::Off {
                        self.unnamed_ends_block = super::guard::may_end_block(p.query);
                    }
                    out.to_server.push(frame.bytes.clone());
                    self.push_pending(pending(Expect::ParseComplete));
                    return Ok(());
                }
                let existing = self.stmts.id(p.name);
                if existing.is_some() && !is_replay {
                    if let Some(i) = idx {
                        self.window.duplicates.push(i);
                    }
                }
                let duplicate = idx.is_some_and(|i| self.window.duplicates.contains(&i));
                if is_replay && !duplicate {
                    // The original Parse ran and the statement exists on the server already:
                    // make the Parse succeed. One of a name that existed before it (finding 19
                    // of docs/fuzzing.md) goes on below and fails with 42P05, as it would have.
                    if let Some(id) = existing {
                        let server_name = self.stmts.get(id).map(|s| s.server_name.clone());
                        if let Some(n) = server_name {
                            srv.closed(&n);
                            self.prepare_on_server(id, srv, out);
                            self.push_pending(pending(Expect::Local(encode::parse_complete())));
                            return Ok(());
                        }
                    }
                }
                match &self.naming {
                    Naming::Session if existing.is_some() && srv.contains(p.name) => {
                        // The server answers 42P05; the registry keeps the statement it has.
                        out.to_server.push(frame.bytes.clone());
                        self.push_pending(pending(Expect::ParseComplete));
                    }
                    Naming::Session if existing.is_some() => {
                        // The client's statement is gone from the server (pgheal's re-prepare
                        // closed it and its Parse failed in a failed block, or it was evicted):
                        // forwarded, the Parse would succeed where PostgreSQL answers 42P05
                        // (finding 20 of docs/fuzzing.md). A Parse bound to fail goes instead;
                        // its syntax error comes before any name is stored or dropped.
                        out.to_server.push(
                            encode::parse(p.name, "pgheal: duplicate prepared statement", &[])
                                .bytes,
                        );
                        self.push_pending(pending(Expect::FailWith(duplicate_error(p.name))));
                    }
                    Naming::Session => {
                        let id = self.stmts.parsed(
                            p.name,
                            p.query.into(),
                            p.param_types.clone().into(),
                            p.name.into(),
                        );
                        self.keep_told_contract(id, idx);
                        srv.prepared(p.name.into(), self.epoch.current());
                        out.to_server.push(frame.bytes.clone());
                        self.push_pending(pending(Expect::ServerParse {
                            server_name: p.name.into(),
                            stmt: Some(id),
                            client_parse: true,
                        }));
                        out.to_server
                            .push(encode::describe(Target::Statement(p.name)).bytes);
                        self.internal(Expect::StatementDescription {
                            stmt: Some(id),
                            server_name: Some(p.name.into()),
                            risky: false,
                            params: None,
                            unblocks: false,
                        });
                    }
                    Naming::Pooled { names, search_path } => {
                        if existing.is_some() {
                            let err = duplicate_error(p.name);
                            // A Parse that must fail makes the server skip to Sync and roll the
                            // implicit transaction back, exactly as the duplicate would have.
                            out.to_server.push(
                                encode::parse("", "pgheal: duplicate prepared statement", &[])
                                    .bytes,
                            );
                            self.push_pending(pending(Expect::FailWith(err)));
                            return Ok(());
                        }
                        let sql: Arc<[u8]> = p.query.into();
                        let types: Arc<[u32]> = p.param_types.clone().into();
                        let server_name = names.name_for(&sql, &types, search_path.as_ref());
                        let id = self.stmts.parsed(p.name, sql, types, server_name.clone());
                        self.keep_told_contract(id, idx);
                        // Prepared here before the last schema change: a fresh Parse (what the
                        // client sent) may resolve names and types differently now.
                        let stale = srv
                            .get(&server_name)
                            .is_some_and(|s| s.epoch < self.epoch.current());
                        match srv.shape(&server_name).cloned().filter(|_| !stale) {
                            Some(shape) => {
                                srv.touch(&server_name);
                                if self.stmts.described(id, &shape) {
                                    self.record_contract(id);
                                }
                                self.push_pending(pending(Expect::LocalParse(id)));
                                self.emit_locals(srv, out);
                            }
                            None if !stale && srv.contains(&server_name) => {
                                srv.touch(&server_name);
                                self.push_pending(pending(Expect::LocalParse(id)));
                                self.emit_locals(srv, out);
                            }
                            None => {
                                self.prepare_on_server_for(id, true, srv, out);
                                self.push_pending(pending(Expect::Local(encode::parse_complete())));
                            }
                        }
                    }
                }
            }
            frontend::BIND => {
                let b = Bind::decode(&frame).map_err(RelayError::Client)?;
                let stmt = if b.statement.is_empty() {
                    None
                } else {
                    self.stmts.id(b.statement)
                };
                let mut lazy = false;
                let mut shaping = if stmt.is_none() {
                    PortalShaping::Untracked
                } else {
                    PortalShaping::Plain
                };
                let mut formats = None;
                let mut server_name = None;
                if let Some(id) = stmt {
                    let name = self.stmts.get(id).map(|s| s.server_name.clone());
                    if let Some(name) = name {
                        if !srv.contains(&name) {
                            self.prepare_on_server(id, srv, out);
                            lazy = true;
                        }
                        srv.touch(&name);
                        shaping = match srv.shape(&name).cloned() {
                            None => PortalShaping::Unresolved(id),
                            Some(shape) => {
                                match self.stmts.get_mut(id).map(|s| s.shaping_for(&shape)) {
                                    Some(Ok(Shaping::Project {
                                        projection,
                                        contract,
                                    })) => {
                                        formats =
                                            projection.remap_result_formats(&b.result_formats());
                                        PortalShaping::Known(
                                            id,
                                            Shaping::Project {
                                                projection,
                                                contract,
                                            },
                                        )
                                    }
                                    Some(Ok(Shaping::Same)) | None => PortalShaping::Plain,
                                    Some(Err(_)) if self.batch_describes(id, Some(&frame)) => {
                                        // The client reads the new shape in this batch.
                                        PortalShaping::Adopt(id, shape.clone())
                                    }
                                    Some(Err(e)) => {
                                        // The statement now returns rows the client does not
                                        // know: fail the Bind as PostgreSQL would.
                                        self.refuse_bind(id, &e.to_string(), idx, action, out);
                                        return Ok(());
                                    }
                                }
                            }
                        };
                        server_name = Some(name);
                    }
                }
                if let (Some(id), PortalShaping::Unresolved(_)) = (stmt, &shaping) {
                    if is_replay && self.window.refused.contains(&id) {
                        // The refused statement is prepared again in this replay (its Parse is
                        // in the window), so the server would run it in a shape the client was
                        // not told of: it fails as it did (found by the engine property test).
                        self.fail_bind(idx, action, out);
                        return Ok(());
                    }
                }
                if let (Some(id), Some((done, stale))) = (stmt, self.reprepared) {
                    if id == done {
                        self.reprepared = None;
                        self.report_proactive(id, stale, &shaping, out);
                    }
                }
                let returns_rows = self.returns_rows(stmt);
                if !returns_rows && self.cfg.savepoint_guard != SavepointGuard::Off {
                    let ends = match stmt.and_then(|id| self.stmts.get(id)) {
                        Some(s) => super::guard::may_end_block(&s.sql),
                        None => b.statement.is_empty() && self.unnamed_ends_block,
                    };
                    self.window.ends_block |= ends;
                }
                let risky = returns_rows && self.heal_possible();
                let guard = guard && risky;
                let portal = Portal { shaping };
                if b.portal.is_empty() {
                    self.unnamed_portal = portal;
                } else {
                    self.portals.insert(b.portal.to_owned(), portal);
                }
                let rename = server_name.filter(|n| self.pooled() && **n != *b.statement);
                if guard {
                    self.push_bracket(Bracket::Savepoint, srv, out);
                }
                match (rename, formats) {
                    (None, None) => out.to_server.push(frame.bytes),
                    (None, Some(f)) => out.to_server.push(
                        encode::bind_with_result_formats(&frame, b.result_formats_at, &f).bytes,
                    ),
                    (Some(name), f) => push_renamed_bind(&frame, &b, &name, f.as_deref(), out),
                }
                self.push_pending(pending(Expect::BindComplete {
                    stmt,
                    risky,
                    lazy,
                    guarded: guard,
                }));
                if guard {
                    self.push_bracket(Bracket::Release, srv, out);
                }
            }
            frontend::DESCRIBE => {
                match frontend::decode_describe(&frame).map_err(RelayError::Client)? {
                    Target::Statement(name)
                        if !name.is_empty() && self.stmts.id(name).is_some() =>
                    {
                        let id = self.stmts.id(name).unwrap_or_default();
                        let server_name = self
                            .stmts
                            .get(id)
                            .map(|s| s.server_name.clone())
                            .unwrap_or_else(|| name.into());
                        if !srv.contains(&server_name) {
                            self.prepare_on_server(id, srv, out);
                        }
                        let risky = self.returns_rows(Some(id)) && self.heal_possible();
                        if *server_name == *name {
                            out.to_server.push(frame.bytes.clone());
                        } else {
                            out.to_server
                                .push(encode::describe(Target::Statement(&server_name)).bytes);
                        }
                        self.push_pending(pending(Expect::StatementDescription {
                            stmt: Some(id),
                            server_name: Some(server_name),
                            risky,
                            params: None,
                            unblocks: false,
                        }));
                    }
                    Target::Statement(_) => {
                        out.to_server.push(frame.bytes.clone());
                        self.push_pending(pending(Expect::StatementDescription {
                            stmt: None,
                            server_name: None,
                            risky: false,
                            params: None,
                            unblocks: false,
                        }));
                    }
                    Target::Portal(name) => {
                        let shaping = self.portal(name);
                        out.to_server.push(frame.bytes.clone());
                        self.push_pending(pending(Expect::PortalDescription { shaping }));
                    }
                }
            }
            frontend::EXECUTE => {
                let (portal, _) = frontend::decode_execute(&frame).map_err(RelayError::Client)?;
                let shaping = self.portal(portal);
                out.to_server.push(frame.bytes);
                self.push_pending(pending(Expect::ExecuteResult { shaping }));
            }
            frontend::CLOSE => match frontend::decode_close(&frame).map_err(RelayError::Client)? {
                // A statement's Close takes effect when it has run: a repair gives back the
                // statements of the Closes it replays, so a replayed Close closes again.
                Target::Statement(name) if !name.is_empty() && self.pooled() => {
                    match self.stmts.closing(name) {
                        Some(id) => {
                            self.push_pending(pending(Expect::LocalClose(id)));
                            self.emit_locals(srv, out);
                        }
                        None => self.local(encode::close_complete(), idx, srv, out),
                    }
                }
                target => {
                    let (mut closes, mut shape) = (None, None);
                    match target {
                        Target::Statement(name) => {
                            closes = self.stmts.closing(name);
                            shape = closes.and_then(|id| self.server_shape(id, srv));
                            // What the server holds is uncertain until the Close has run: the
                            // next use prepares the statement again.
                            srv.closed(name);
                        }
                        Target::Portal(name) if !is_replay => {
                            self.portals.remove(name);
                        }
                        Target::Portal(_) => {}
                    }
                    out.to_server.push(frame.bytes.clone());
                    self.push_pending(pending(Expect::CloseComplete { closes, shape }));
                }
            },
            frontend::SYNC if self.input == ServerInput::CopyIn => {
                // Ignored by the server during COPY FROM STDIN: no ReadyForQuery will answer it.
                out.to_server.push(frame.bytes.clone());
            }
            frontend::COPY_DONE | frontend::COPY_FAIL => {
                if self.input == ServerInput::CopyIn {
                    self.input = ServerInput::Normal;
                }
                out.to_server.push(frame.bytes.clone());
            }
            frontend::SYNC => {
                // Ends a skip after an error too: the server answers it with ReadyForQuery.
                self.input = ServerInput::Normal;
                out.to_server.push(frame.bytes);
                self.window.sync_sent = true;
                self.push_pending(pending(Expect::Sync));
            }
            frontend::QUERY => {
                let sql = frontend::decode_query(&frame).map_err(RelayError::Client)?;
                self.window.sync_sent = true;
                if !is_replay && self.pooled() {
                    if let Some(tag) = self.local_statement_command(sql) {
                        self.observe_sql(sql, srv, false);
                        self.local(encode::command_complete(tag), idx, srv, out);
                        self.local(encode::ready_for_query(self.status), idx, srv, out);
                        return Ok(());
                    }
                }
                let risky = self.heal_possible() && !self.sql_prepared.executed_by(sql).is_empty();
                let temp = mentions_temp(sql);
                if !is_replay && (self.status == TxStatus::Idle || !self.pooled()) {
                    // In transaction pooling a DISCARD/DEALLOCATE that reaches the server drops
                    // pgheal's own statements on that connection too: forget them there.
                    self.observe_sql(sql, srv, true);
                }
                out.to_server.push(frame.bytes.clone());
                self.push_pending(pending(Expect::Query { risky, temp }));
            }
            frontend::FUNCTION_CALL => {
                out.to_server.push(frame.bytes.clone());
                self.window.sync_sent = true;
                self.push_pending(pending(Expect::FunctionCall));
            }
            _ => {
                // Flush, CopyData/CopyDone/CopyFail and anything else: forwarded untouched.
                out.to_server.push(frame.bytes.clone());
            }
        }
        Ok(())
    }

    /// Keep a message for replay. COPY data is never kept: a batch with COPY is not replayable.
    fn keep_in_window(&mut self, frame: &Frame) -> Option<u32> {
        match frame.tag {
            frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL => {
                self.window.make_irrevocable();
                None
            }
            _ => {
                let stmts = &self.stmts;
                self.window
                    .push(frame, self.cfg.replay_bytes, |n| stmts.id(n).is_some())
            }
        }
    }

    /// SQL-level statement management that also affects protocol-level statements. `server`:
    /// the command reaches the server connection, whose prepared set changes too.
    fn observe_sql(&mut self, sql: &[u8], srv: &mut ServerPrepared, server: bool) {
        for effect in self.sql_prepared.observe(sql) {
            match effect {
                Dealloc::All => {
                    self.forget_prepared();
                    if server {
                        srv.clear();
                    }
                }
                Dealloc::Name(n) => {
                    self.stmts.close(&n);
                    if server {
                        srv.closed(&n);
                    }
                }
            }
        }
    }
}

/// Whether a query mentions temporary objects (their DDL does not advance the schema epoch).
fn mentions_temp(sql: &[u8]) -> bool {
    sql.windows(4).any(|w| w.eq_ignore_ascii_case(b"temp"))
}

/// A Bind for another statement name, without copying the parameters: a new head (tag, length,
/// portal, statement name) followed by a slice of the original message.
fn push_renamed_bind(
    frame: &Frame,
    b: &Bind<'_>,
    name: &[u8],
    formats: Option<&[i16]>,
    out: &mut Outbox,
) {
    let body = frame.body();
    let rest_at = b.portal.len() + 1 + b.statement.len() + 1;
    let tail_end = if formats.is_some() {
        b.result_formats_at
    } else {
        body.len()
    };
    let tail = frame.bytes.slice(5 + rest_at..5 + tail_end);
    let mut formats_bytes = BytesMut::new();
    if let Some(f) = formats {
        formats_bytes.put_i16(f.len() as i16);
        for c in f {
            formats_bytes.put_i16(*c);
        }
    }
    let len = 4 + b.portal.len() + 1 + name.len() + 1 + tail.len() + formats_bytes.len();
    let mut head = BytesMut::with_capacity(5 + b.portal.len() + name.len() + 2);
    head.put_u8(b'B');
    head.put_i32(len as i32);
    head.put_slice(b.portal);
    head.put_u8(0);
    head.put_slice(name);
    head.put_u8(0);
    out.to_server.push(head.freeze());
    out.to_server.push(tail);
    if !formats_bytes.is_empty() {
        out.to_server.push(formats_bytes.freeze());
    }
}

/// PostgreSQL's `42P05` for a Parse of statement `name`, which the client has already: in the
/// client's encoding, as the server would have said it.
fn duplicate_error(name: &[u8]) -> Frame {
    let msg = [&b"prepared statement \""[..], name, b"\" already exists"].concat();
    encode::error_response("ERROR", sqlstate::DUPLICATE_PREPARED_STATEMENT, &msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Bind `push_renamed_bind` sends, as one frame.
    fn renamed(f: &Frame, name: &[u8], formats: Option<&[i16]>) -> Frame {
        let mut out = Outbox::default();
        push_renamed_bind(f, &Bind::decode(f).unwrap(), name, formats, &mut out);
        let joined: Vec<u8> = out.to_server.iter().flat_map(|p| p.to_vec()).collect();
        Frame::from_encoded(joined.into())
    }

    #[test]
    fn renamed_bind_keeps_parameters() {
        let body: &[u8] = b"p\0s1\0\0\x01\0\x01\0\x01\0\0\0\x02ab\0\x01\0\x01";
        let f = encode::raw(b'B', body);
        let g = renamed(&f, b"pgheal_7", None);
        let b2 = Bind::decode(&g).unwrap();
        assert_eq!((b2.portal, b2.statement), (&b"p"[..], &b"pgheal_7"[..]));
        assert_eq!(b2.result_formats(), vec![1]);
        // The parameters are carried over byte for byte.
        assert_eq!(
            &g.body()[b"p\0pgheal_7\0".len()..],
            &body[b"p\0s1\0".len()..]
        );
        let g = renamed(&f, b"x", Some(&[1, 0, 0]));
        assert_eq!(Bind::decode(&g).unwrap().result_formats(), vec![1, 0, 0]);
    }
}
