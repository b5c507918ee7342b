//! The relay: client-side half. Frontend messages are tracked, kept for replay and forwarded.

use std::collections::{HashMap, VecDeque};

use crate::protocol::backend::TxStatus;
use crate::protocol::frontend::{self, Bind, Parse, Target};
use crate::protocol::{encode, Frame, ProtocolError};
use crate::statements::sql_prepare::SqlPrepared;
use crate::statements::{StatementRegistry, StmtId};

use super::outbox::Outbox;
use super::pending::{Action, Expect, Pending};
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
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            holdback_bytes: 1 << 20,
            replay_bytes: 8 << 20,
            max_heals: 3,
            enabled: true,
        }
    }
}

/// Errors that end the session.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client sent a malformed message: {0}")]
    Client(ProtocolError),
    #[error("server sent a malformed message: {0}")]
    Server(ProtocolError),
}

/// Which statement a portal was bound from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Portal {
    pub stmt: Option<StmtId>,
}

/// The engine between one client and one server connection. See the module docs of
/// [`crate::heal`].
#[derive(Debug)]
pub struct Relay {
    pub(crate) cfg: RelayConfig,
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
    pub(crate) scratch: Vec<std::ops::Range<usize>>,
}

impl Relay {
    pub fn new(cfg: RelayConfig) -> Self {
        Relay {
            cfg,
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
            scratch: Vec::new(),
        }
    }

    /// Transaction status of the last ReadyForQuery.
    pub fn status(&self) -> TxStatus {
        self.status
    }

    /// Nothing in flight: every message sent has been answered up to ReadyForQuery.
    pub fn is_quiet(&self) -> bool {
        self.pending.is_empty() && self.deferred.is_empty() && matches!(self.phase, Phase::Relaying)
    }

    /// Named statements the client has prepared on this connection.
    pub fn statements(&self) -> &StatementRegistry {
        &self.stmts
    }

    /// Forget everything known about the server connection's prepared state.
    pub fn forget_prepared(&mut self) {
        self.stmts.clear();
        self.sql_prepared.clear();
        self.portals.clear();
        self.unnamed_portal = Portal::default();
    }

    /// A frontend message from the client.
    pub fn on_client(&mut self, frame: Frame, out: &mut Outbox) -> Result<(), RelayError> {
        if !self.deferred.is_empty() || self.must_defer() {
            self.deferred.push_back(frame);
            return Ok(());
        }
        self.client_message(frame, None, out)
    }

    /// Whether a new client message must wait instead of going to the server now.
    pub(crate) fn must_defer(&self) -> bool {
        !matches!(self.phase, Phase::Relaying)
            || (self.window.sync_sent && self.risky_in_flight > 0)
    }

    /// Send deferred messages for as long as nothing blocks them.
    pub(crate) fn drain_deferred(&mut self, out: &mut Outbox) -> Result<(), RelayError> {
        while !self.must_defer() {
            let Some(frame) = self.deferred.pop_front() else {
                break;
            };
            self.client_message(frame, None, out)?;
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

    fn heal_possible(&self) -> bool {
        self.cfg.enabled && self.window.replayable(self.cfg.max_heals)
    }

    fn returns_rows(&self, stmt: Option<StmtId>) -> bool {
        stmt.and_then(|id| self.stmts.get(id))
            .is_some_and(|s| s.returns_rows())
    }

    fn portal(&self, name: &str) -> Portal {
        if name.is_empty() {
            self.unnamed_portal
        } else {
            self.portals.get(name).copied().unwrap_or_default()
        }
    }

    /// Track and send one client message. `replay` carries the window index and the number of
    /// responses the client already has when the message is replayed.
    pub(crate) fn client_message(
        &mut self,
        frame: Frame,
        replay: Option<(u32, u32)>,
        out: &mut Outbox,
    ) -> Result<(), RelayError> {
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
                (self.keep_in_window(&frame), Action::Forward)
            }
        };
        let is_replay = replay.is_some();
        let pending = |expect| Pending {
            expect,
            idx,
            action,
        };
        match frame.tag {
            frontend::PARSE => {
                let p = Parse::decode(&frame).map_err(RelayError::Client)?;
                let stmt = if p.name.is_empty() {
                    None
                } else if is_replay {
                    // The statement may exist on the server already: make the Parse succeed.
                    out.to_server
                        .push(encode::close(Target::Statement(p.name)).bytes);
                    self.push_pending(Pending {
                        expect: Expect::CloseComplete,
                        idx: None,
                        action: Action::Swallow,
                    });
                    self.stmts.id(p.name)
                } else {
                    Some(self.stmts.parsed(p.name, p.query, p.param_types.clone()))
                };
                let describe = stmt.map(|_| encode::describe(Target::Statement(p.name)));
                out.to_server.push(frame.bytes);
                self.push_pending(pending(Expect::ParseComplete));
                if let Some(d) = describe {
                    out.to_server.push(d.bytes);
                    self.push_pending(Pending {
                        expect: Expect::StatementDescription { stmt, risky: false },
                        idx: None,
                        action: Action::Swallow,
                    });
                }
            }
            frontend::BIND => {
                let b = Bind::decode(&frame).map_err(RelayError::Client)?;
                let stmt = self
                    .stmts
                    .id(b.statement)
                    .filter(|_| !b.statement.is_empty());
                let risky = self.returns_rows(stmt) && self.heal_possible();
                let portal = Portal { stmt };
                if b.portal.is_empty() {
                    self.unnamed_portal = portal;
                } else {
                    self.portals.insert(b.portal.to_owned(), portal);
                }
                let rewritten = stmt
                    .and_then(|id| self.stmts.get(id))
                    .and_then(|s| s.projection.remap_result_formats(&b.result_formats))
                    .map(|f| encode::bind_with_result_formats(&frame, b.result_formats_at, &f));
                out.to_server
                    .push(rewritten.map_or(frame.bytes.clone(), |f| f.bytes));
                self.push_pending(pending(Expect::BindComplete { stmt, risky }));
            }
            frontend::DESCRIBE => {
                let expect = match frontend::decode_describe(&frame).map_err(RelayError::Client)? {
                    Target::Statement(name) => {
                        let stmt = self.stmts.id(name).filter(|_| !name.is_empty());
                        let risky = self.returns_rows(stmt) && self.heal_possible();
                        Expect::StatementDescription { stmt, risky }
                    }
                    Target::Portal(name) => Expect::PortalDescription {
                        stmt: self.portal(name).stmt,
                    },
                };
                out.to_server.push(frame.bytes);
                self.push_pending(pending(expect));
            }
            frontend::EXECUTE => {
                let (portal, _) = frontend::decode_execute(&frame).map_err(RelayError::Client)?;
                let stmt = self.portal(portal).stmt;
                out.to_server.push(frame.bytes);
                self.push_pending(pending(Expect::ExecuteResult { stmt }));
            }
            frontend::CLOSE => {
                match frontend::decode_close(&frame).map_err(RelayError::Client)? {
                    Target::Statement(name) if !is_replay => self.stmts.close(name),
                    Target::Portal(name) if !is_replay => {
                        self.portals.remove(name);
                    }
                    _ => {}
                }
                out.to_server.push(frame.bytes);
                self.push_pending(pending(Expect::CloseComplete));
            }
            frontend::SYNC => {
                out.to_server.push(frame.bytes);
                self.window.sync_sent = true;
                self.push_pending(pending(Expect::Sync));
            }
            frontend::QUERY => {
                let sql = frontend::decode_query(&frame).map_err(RelayError::Client)?;
                let risky = self.heal_possible() && !self.sql_prepared.executed_by(sql).is_empty();
                if !is_replay {
                    self.observe_sql(sql);
                }
                out.to_server.push(frame.bytes);
                self.window.sync_sent = true;
                self.push_pending(pending(Expect::Query { risky }));
            }
            frontend::FUNCTION_CALL => {
                out.to_server.push(frame.bytes);
                self.window.sync_sent = true;
                self.push_pending(pending(Expect::FunctionCall));
            }
            _ => {
                // Flush, CopyData/CopyDone/CopyFail and anything else: forwarded untouched.
                out.to_server.push(frame.bytes);
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

    /// SQL-level statement management that also affects protocol-level statements.
    fn observe_sql(&mut self, sql: &str) {
        for effect in self.sql_prepared.observe(sql) {
            match effect {
                crate::statements::sql_prepare::Dealloc::All => self.forget_prepared(),
                crate::statements::sql_prepare::Dealloc::Name(n) => self.stmts.close(&n),
            }
        }
    }
}
