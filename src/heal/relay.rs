//! The relay engine's state and its entry points: what a session knows of its client's
//! statements and portals, the responses it expects, the replay window and the messages held
//! back. The client-side half of the relay is in [`super::client`], the server-side half in
//! [`super::route`], healing in [`super::repair`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::protocol::backend::TxStatus;
use crate::protocol::frontend;
use crate::protocol::{Frame, ProtocolError};
use crate::statements::sql_prepare::SqlPrepared;
use crate::statements::{ServerPrepared, StatementNames, StatementRegistry, StmtId};

use super::epoch::SchemaEpoch;
use super::guard::SavepointGuard;
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
    /// `--record-statements`: where statements are recorded when their contract becomes known
    /// (for `pgheal check-migration`). `None` costs one branch per new contract.
    pub record_statements: Option<Arc<crate::migration_check::Recorder>>,
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
            record_statements: None,
        }
    }
}

/// How client statement names map to server statement names.
#[derive(Debug, Clone)]
pub enum Naming {
    /// Session pooling: the client's names are the server's.
    Session,
    /// Transaction pooling: pool-wide names, keyed by text, parameter types and the client's
    /// settings that decide what a text means (`search_path`, `client_encoding`: see
    /// [`StatementNames`]).
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

/// What the server does with the next frontend message it reads, as pgheal's model of the
/// server's input loop (`PostgresMain` in PostgreSQL's `postgres.c`). Pending responses are
/// pushed only for messages the server will answer; getting this wrong shifts the matching of
/// responses to messages, and a client then waits for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerInput {
    /// Every message is executed and answered.
    #[default]
    Normal,
    /// COPY FROM STDIN is running: CopyData, CopyDone and CopyFail are read; Sync and Flush are
    /// ignored, with no answer.
    CopyIn,
    /// An extended-protocol message failed and no Sync was sent after it yet: the server
    /// discards every message (Query and FunctionCall included) up to the next Sync, which it
    /// answers with ReadyForQuery.
    SkipToSync,
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
    pub(crate) portals: HashMap<Vec<u8>, Portal>,
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
    /// What the server does with the next frontend message pgheal sends.
    pub(crate) input: ServerInput,
    /// (statement, re-prepared because stale): reported at its next Bind.
    pub(crate) reprepared: Option<(StmtId, bool)>,
    /// The client's unnamed statement may end the transaction block (savepoint guard only).
    pub(crate) unnamed_ends_block: bool,
    /// The last server message was ReadyForQuery (a transaction-pooling release point).
    pub(crate) at_ready: bool,
    pub(crate) scratch: Vec<std::ops::Range<usize>>,
    /// The client's span: the relay (engine and session loop) runs outside it, so its log lines
    /// name it as their parent.
    pub(crate) span: tracing::Span,
    /// The database the client connected to (pgheal's name), for recorded statements.
    pub(crate) database: Arc<str>,
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
            input: ServerInput::Normal,
            unnamed_ends_block: false,
            at_ready: true,
            scratch: Vec::new(),
            span: tracing::Span::none(),
            database: Arc::from(""),
        }
    }

    /// Log in the client's span.
    pub fn with_span(mut self, span: tracing::Span) -> Self {
        self.span = span;
        self
    }

    /// The database the client connected to (named in recorded statements).
    pub fn with_database(mut self, database: &str) -> Self {
        self.database = database.into();
        self
    }

    /// `--record-statements`: the contract of statement `id` just became known (its first
    /// description). Once per statement and session; the recorder skips what it has written.
    pub(crate) fn record_contract(&self, id: StmtId) {
        let Some(rec) = &self.cfg.record_statements else {
            return;
        };
        if let Some(s) = self.stmts.get(id) {
            if let Some(contract) = &s.contract {
                rec.record(&self.database, &s.sql, &s.param_types, contract);
            }
        }
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

    /// Between transactions, with nothing in flight: the queues and the replay window give
    /// their memory back, so an idle client holds only what outlives a transaction (its
    /// statements and settings; issue 14). Costs a few small allocations in the next
    /// transaction; does nothing while anything is in flight.
    pub fn shed(&mut self) {
        if !self.at_transaction_boundary() {
            return;
        }
        if self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
        }
        if self.deferred.capacity() > 0 {
            self.deferred = VecDeque::new();
        }
        if self.scratch.capacity() > 0 {
            self.scratch = Vec::new();
        }
        if self.portals.is_empty() && self.portals.capacity() > 0 {
            self.portals = HashMap::new();
        }
        self.window.shed();
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

    /// The client's settings that decide what a statement text means (search_path and
    /// client_encoding, an opaque key): transaction pooling keys statements by them.
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

    pub(crate) fn heal_possible(&self) -> bool {
        self.cfg.enabled && self.window.replayable(self.cfg.max_heals)
    }

    pub(crate) fn returns_rows(&self, stmt: Option<StmtId>) -> bool {
        stmt.and_then(|id| self.stmts.get(id))
            .is_some_and(|s| s.returns_rows())
    }

    pub(crate) fn portal(&self, name: &[u8]) -> PortalShaping {
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

    /// Answer something locally, in order with the server's responses.
    pub(crate) fn local(
        &mut self,
        frame: Frame,
        idx: Option<u32>,
        srv: &ServerPrepared,
        out: &mut Outbox,
    ) {
        self.push_pending(Pending {
            expect: Expect::Local(frame),
            idx,
            action: Action::Forward,
        });
        self.emit_locals(srv, out);
    }
}
