//! The relay: client-side half. Frontend messages are tracked, kept for replay and forwarded,
//! with statement names mapped for the pool mode.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::protocol::backend::TxStatus;
use crate::protocol::frontend::{self, Bind, Parse, Target};
use crate::protocol::{encode, sqlstate, Frame, ProtocolError};
use crate::statements::sql_prepare::{Dealloc, SqlPrepared};
use crate::statements::{ServerPrepared, Shaping, StatementNames, StatementRegistry, StmtId};

use super::epoch::SchemaEpoch;
use super::guard::{Bracket, SavepointGuard};
use super::outbox::Outbox;
use super::pending::{Action, Expect, Pending, PortalShaping};
use super::repair::Phase;
use super::window::Window;

/// Limits of the heal engine (from the config's `[heal]` section).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Bytes of output held back while a risky Bind is unconfirmed; past it, output flows and
    /// that batch is no longer healable.
    pub holdback_bytes: usize,
    /// Bytes of frontend messages kept for replay per implicit transaction.
    pub replay_bytes: usize,
    /// Replays per implicit transaction.
    pub max_heals: u8,
    /// Heal at all (`heal = false` makes pgheal a plain pooler).
    pub enabled: bool,
    /// When to bracket a Bind inside a transaction block with a savepoint ([`super::guard`]).
    pub savepoint_guard: SavepointGuard,
    /// How long after a schema change `after-schema-change` keeps guarding.
    pub savepoint_guard_window: std::time::Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            holdback_bytes: 1 << 20,
            replay_bytes: 8 << 20,
            max_heals: 3,
            enabled: true,
            savepoint_guard: SavepointGuard::Off,
            savepoint_guard_window: std::time::Duration::from_secs(60),
        }
    }
}

/// How client statement names map to server statement names.
#[derive(Debug, Clone)]
pub enum Naming {
    /// Session pooling: the client's names are the server's.
    Session,
    /// Transaction pooling: pool-wide names, keyed by text, parameter types and search_path.
    Pooled {
        names: Arc<StatementNames>,
        search_path: Option<Arc<str>>,
    },
}

/// Errors that end the session.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client sent a malformed message: {0}")]
    Client(ProtocolError),
    #[error("server sent a malformed message: {0}")]
    Server(ProtocolError),
}

/// How a portal's rows are shaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Portal {
    pub shaping: PortalShaping,
}

impl Default for Portal {
    fn default() -> Self {
        Portal {
            shaping: PortalShaping::Plain,
        }
    }
}

/// The engine between one client and its server connection(s). See the module docs of
/// [`crate::heal`]. Every call takes the [`ServerPrepared`] of the server connection the client
/// currently uses.
#[derive(Debug)]
pub struct Relay {
    pub(crate) cfg: RelayConfig,
    pub(crate) naming: Naming,
    pub(crate) stmts: StatementRegistry,
    pub(crate) sql_prepared: SqlPrepared,
    pub(crate) unnamed_portal: Portal,
    pub(crate) portals: HashMap<String, Portal>,
    pub(crate) pending: VecDeque<Pending>,
    pub(crate) risky_in_flight: usize,
    pub(crate) window: Window,
    pub(crate) phase: Phase,
    /// Client messages that must wait (a heal is running, or the previous batch is still
    /// healable and this one would run before its replay).
    pub(crate) deferred: VecDeque<Frame>,
    pub(crate) status: TxStatus,
    /// The schema epoch of the upstream database (shared by every session of it).
    pub(crate) epoch: Arc<SchemaEpoch>,
    /// DDL ran in the current transaction: the epoch advances when it commits.
    pub(crate) ddl_pending: bool,
    /// Proactive re-prepares whose shape must be known before deferred messages can go.
    pub(crate) awaiting_shape: usize,
    /// COPY FROM STDIN is running: PostgreSQL ignores Sync (and Flush) until CopyDone/CopyFail.
    pub(crate) copy_in: bool,
    /// (statement, re-prepared because stale): reported at its next Bind.
    pub(crate) reprepared: Option<(StmtId, bool)>,
    /// The client's unnamed statement may end the transaction block (savepoint guard only).
    pub(crate) unnamed_ends_block: bool,
    /// The last server message was ReadyForQuery (a transaction-pooling release point).
    pub(crate) at_ready: bool,
    pub(crate) scratch: Vec<std::ops::Range<usize>>,
    /// The client's span: the relay runs outside it, so its log lines name it as their parent.
    pub(crate) span: tracing::Span,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // A client that leaves inside a transaction that ran DDL: the server rolls it back.
        if self.ddl_pending {
            self.epoch.ddl_ended();
        }
    }
}

impl Relay {
    pub fn new(cfg: RelayConfig, naming: Naming) -> Self {
        Relay {
            cfg,
            naming,
            stmts: StatementRegistry::default(),
            sql_prepared: SqlPrepared::default(),
            unnamed_portal: Portal::default(),
            portals: HashMap::new(),
            pending: VecDeque::new(),
            risky_in_flight: 0,
            window: Window::new(),
            phase: Phase::Relaying,
            deferred: VecDeque::new(),
            status: TxStatus::Idle,
            epoch: Arc::new(SchemaEpoch::default()),
            ddl_pending: false,
            awaiting_shape: 0,
            reprepared: None,
            copy_in: false,
            unnamed_ends_block: false,
            at_ready: true,
            scratch: Vec::new(),
            span: tracing::Span::none(),
        }
    }

    /// Log in the client's span.
    pub fn with_span(mut self, span: tracing::Span) -> Self {
        self.span = span;
        self
    }

    /// Share the schema epoch of the upstream database.
    pub fn with_epoch(mut self, epoch: Arc<SchemaEpoch>) -> Self {
        if self.ddl_pending {
            self.epoch.ddl_ended();
            self.ddl_pending = false;
        }
        self.epoch = epoch;
        self
    }

    /// Transaction status of the last ReadyForQuery.
    pub fn status(&self) -> TxStatus {
        self.status
    }

    /// Client messages waiting to be sent (the session stops reading the client while this
    /// is large, so a pipelining client cannot make pgheal buffer without bound).
    pub fn backlog(&self) -> usize {
        self.deferred.len()
    }

    /// Nothing in flight: every message sent has been answered.
    pub fn is_quiet(&self) -> bool {
        self.pending.is_empty() && self.deferred.is_empty() && matches!(self.phase, Phase::Relaying)
    }

    /// The server connection may go back to the pool (transaction pooling): everything is
    /// answered, the last answer was ReadyForQuery, and no transaction block is open.
    pub fn at_transaction_boundary(&self) -> bool {
        self.is_quiet() && self.at_ready && self.status == TxStatus::Idle
    }

    /// A one-line summary of the engine's state, for trace logs.
    pub fn debug_state(&self) -> String {
        format!(
            "status={:?} at_ready={} pending={:?} deferred={} risky={} phase={}",
            self.status,
            self.at_ready,
            self.pending.iter().map(|p| &p.expect).collect::<Vec<_>>(),
            self.deferred.len(),
            self.risky_in_flight,
            matches!(self.phase, Phase::Relaying)
        )
    }

    /// The search_path the client set (transaction pooling keys statements by it).
    pub fn set_search_path(&mut self, path: Option<Arc<str>>) {
        if let Naming::Pooled { search_path, .. } = &mut self.naming {
            *search_path = path;
        }
    }

    /// Named statements the client has prepared.
    pub fn statements(&self) -> &StatementRegistry {
        &self.stmts
    }

    /// Forget the client's statements (after DISCARD ALL / DEALLOCATE ALL).
    pub fn forget_prepared(&mut self) {
        self.stmts.clear();
        self.sql_prepared.clear();
        self.portals.clear();
        self.unnamed_portal = Portal::default();
    }

    /// A frontend message from the client.
    pub fn on_client(
        &mut self,
        frame: Frame,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Result<(), RelayError> {
        // COPY data belongs to the statement already running (its Sync or Query was sent
        // before): it never waits.
        let copy = matches!(
            frame.tag,
            frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL
        );
        if copy && matches!(self.phase, Phase::Relaying) && self.awaiting_shape == 0 {
            return self.client_message(frame, None, srv, out);
        }
        if !self.deferred.is_empty() || self.must_defer() {
            self.deferred.push_back(frame);
            return Ok(());
        }
        self.client_message(frame, None, srv, out)
    }

    /// Whether a new client message must wait instead of going to the server now.
    ///
    /// With healing on, one implicit transaction is in flight at a time: messages after a Sync
    /// wait for its ReadyForQuery. A replay must cover exactly one implicit transaction, and
    /// the next one must not run before it; letting part of the next batch through is not an
    /// option either, since PostgreSQL only flushes its answers at Sync or Flush. Clients that
    /// pipeline across Syncs pay a round trip per Sync; Flush-terminated segments are not
    /// affected.
    pub(crate) fn must_defer(&self) -> bool {
        !matches!(self.phase, Phase::Relaying)
            || self.awaiting_shape > 0
            || (self.cfg.enabled && self.window.sync_sent && !self.pending.is_empty())
    }

    /// Send deferred messages for as long as nothing blocks them.
    pub(crate) fn drain_deferred(
        &mut self,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Result<(), RelayError> {
        while !self.must_defer() {
            let Some(frame) = self.deferred.pop_front() else {
                break;
            };
            self.client_message(frame, None, srv, out)?;
        }
        Ok(())
    }

    pub(crate) fn push_pending(&mut self, p: Pending) {
        if p.is_risky() {
            self.risky_in_flight += 1;
        }
        self.pending.push_back(p);
    }

    pub(crate) fn pop_pending(&mut self) -> Option<Pending> {
        let p = self.pending.pop_front()?;
        if p.is_risky() {
            self.risky_in_flight -= 1;
        }
        Some(p)
    }

    pub(crate) fn internal(&mut self, expect: Expect) {
        self.push_pending(Pending {
            expect,
            idx: None,
            action: Action::Swallow,
        });
    }

    fn heal_possible(&self) -> bool {
        self.cfg.enabled && self.window.replayable(self.cfg.max_heals)
    }

    fn returns_rows(&self, stmt: Option<StmtId>) -> bool {
        stmt.and_then(|id| self.stmts.get(id))
            .is_some_and(|s| s.returns_rows())
    }

    fn portal(&self, name: &str) -> PortalShaping {
        if name.is_empty() {
            self.unnamed_portal.shaping.clone()
        } else {
            self.portals
                .get(name)
                .map(|p| p.shaping.clone())
                .unwrap_or(PortalShaping::Plain)
        }
    }

    pub(crate) fn pooled(&self) -> bool {
        matches!(self.naming, Naming::Pooled { .. })
    }

    /// Whether the batch of this Bind describes its statement or portal (the Bind itself is
    /// being processed, so it is not in the window yet).
    fn describes_pending_bind(&self, id: StmtId, bind: &Frame) -> bool {
        if self.window_describes(id) {
            return true;
        }
        let Ok(b) = Bind::decode(bind) else {
            return false;
        };
        let portal = b.portal;
        self.deferred
            .iter()
            .take_while(|f| f.tag != frontend::SYNC)
            .any(|f| {
                f.tag == frontend::DESCRIBE
                    && frontend::decode_describe(f) == Ok(Target::Portal(portal))
            })
    }

    /// Answer something locally, in order with the server's responses.
    pub(crate) fn local(&mut self, frame: Frame, idx: Option<u32>, out: &mut Outbox) {
        self.push_pending(Pending {
            expect: Expect::Local(frame),
            idx,
            action: Action::Forward,
        });
        self.emit_locals(out);
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
                if is_replay {
                    // The statement may exist on the server already: make the Parse succeed.
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
                    Naming::Session if existing.is_some() => {
                        // The server answers 42P05; the registry keeps the statement it has.
                        out.to_server.push(frame.bytes.clone());
                        self.push_pending(pending(Expect::ParseComplete));
                    }
                    Naming::Session => {
                        let id = self.stmts.parsed(
                            p.name,
                            p.query.into(),
                            p.param_types.clone().into(),
                            p.name.into(),
                        );
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
                            let msg = format!("prepared statement \"{}\" already exists", p.name);
                            let err = encode::error_response(
                                "ERROR",
                                sqlstate::DUPLICATE_PREPARED_STATEMENT,
                                &msg,
                            );
                            // A Parse that must fail makes the server skip to Sync and roll the
                            // implicit transaction back, exactly as the duplicate would have.
                            out.to_server.push(
                                encode::parse("", "pgheal: duplicate prepared statement", &[])
                                    .bytes,
                            );
                            self.push_pending(pending(Expect::FailWith(err)));
                            return Ok(());
                        }
                        let sql: Arc<str> = p.query.into();
                        let types: Arc<[u32]> = p.param_types.clone().into();
                        let server_name = names.name_for(&sql, &types, search_path.as_ref());
                        let id = self.stmts.parsed(p.name, sql, types, server_name.clone());
                        match srv.shape(&server_name).cloned() {
                            Some(shape) => {
                                srv.touch(&server_name);
                                self.stmts.described(id, &shape);
                                self.local(encode::parse_complete(), idx, out);
                            }
                            None if srv.contains(&server_name) => {
                                srv.touch(&server_name);
                                self.local(encode::parse_complete(), idx, out);
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
                let mut shaping = PortalShaping::Plain;
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
                                    Some(Ok(Shaping::Project { projection })) => {
                                        formats =
                                            projection.remap_result_formats(&b.result_formats());
                                        PortalShaping::Known(id, Shaping::Project { projection })
                                    }
                                    Some(Ok(Shaping::Same)) | None => PortalShaping::Plain,
                                    Some(Err(_)) if self.describes_pending_bind(id, &frame) => {
                                        // The client reads the new shape in this batch.
                                        self.stmts.adopt_shape(id, shape.clone());
                                        PortalShaping::Plain
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
                Target::Statement(name) if !name.is_empty() && self.pooled() => {
                    if !is_replay {
                        self.stmts.close(name);
                    }
                    self.local(encode::close_complete(), idx, out);
                }
                target => {
                    if !is_replay {
                        match target {
                            Target::Statement(name) => {
                                self.stmts.close(name);
                                srv.closed(name);
                            }
                            Target::Portal(name) => {
                                self.portals.remove(name);
                            }
                        }
                    }
                    out.to_server.push(frame.bytes.clone());
                    self.push_pending(pending(Expect::CloseComplete));
                }
            },
            frontend::SYNC if self.copy_in => {
                // Ignored by the server during COPY FROM STDIN: no ReadyForQuery will answer it.
                out.to_server.push(frame.bytes.clone());
            }
            frontend::COPY_DONE | frontend::COPY_FAIL => {
                self.copy_in = false;
                out.to_server.push(frame.bytes.clone());
            }
            frontend::SYNC => {
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
                        self.local(encode::command_complete(tag), idx, out);
                        self.local(encode::ready_for_query(self.status), idx, out);
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
            _ => self.window.push(frame, self.cfg.replay_bytes),
        }
    }

    /// SQL-level statement management that also affects protocol-level statements. `server`:
    /// the command reaches the server connection, whose prepared set changes too.
    fn observe_sql(&mut self, sql: &str, srv: &mut ServerPrepared, server: bool) {
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
fn mentions_temp(sql: &str) -> bool {
    sql.as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"temp"))
}

/// A Bind for another statement name, without copying the parameters: a new head (tag, length,
/// portal, statement name) followed by a slice of the original message.
fn push_renamed_bind(
    frame: &Frame,
    b: &Bind<'_>,
    name: &str,
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
    head.put_slice(b.portal.as_bytes());
    head.put_u8(0);
    head.put_slice(name.as_bytes());
    head.put_u8(0);
    out.to_server.push(head.freeze());
    out.to_server.push(tail);
    if !formats_bytes.is_empty() {
        out.to_server.push(formats_bytes.freeze());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamed_bind_keeps_parameters() {
        use crate::protocol::frontend::Bind;
        let body: &[u8] = b"p\0s1\0\0\x01\0\x01\0\x01\0\0\0\x02ab\0\x01\0\x01";
        let f = encode::raw(b'B', body);
        let b = Bind::decode(&f).unwrap();
        let mut out = Outbox::default();
        push_renamed_bind(&f, &b, "pgheal_7", None, &mut out);
        let joined: Vec<u8> = out
            .to_server
            .iter()
            .flat_map(|p| p.iter().copied())
            .collect();
        let g = Frame::from_encoded(joined.into());
        let b2 = Bind::decode(&g).unwrap();
        assert_eq!((b2.portal, b2.statement), ("p", "pgheal_7"));
        assert_eq!(b2.result_formats(), vec![1]);
        let mut out = Outbox::default();
        push_renamed_bind(&f, &b, "x", Some(&[1, 0, 0]), &mut out);
        let joined: Vec<u8> = out
            .to_server
            .iter()
            .flat_map(|p| p.iter().copied())
            .collect();
        let g = Frame::from_encoded(joined.into());
        assert_eq!(Bind::decode(&g).unwrap().result_formats(), vec![1, 0, 0]);
    }
}
