//! Session state in transaction pooling: temporary objects, `WITH HOLD` cursors, session
//! advisory locks and LISTENs that reached the server stay with the server connection that
//! ran them, and the next client of that connection would inherit them (see the same list in
//! PgBouncer's documentation of transaction pooling).
//!
//! pgheal keeps the client on that connection while such state lasts (it *pins* it) rather
//! than refusing the statements: the statement has already run by the time pgheal could
//! refuse it, many applications use temporary tables and advisory locks briefly, and a pin
//! costs only a pooled connection for the time the state lives, which
//! `pgheal_pinned_clients` shows.
//!
//! How: the client's SQL is searched for what may create such state
//! ([`super::settings::session_state_in`]: simple queries, Parse texts, and Binds of
//! statements whose text matched). After a transaction that ran such a statement, and after
//! every transaction of a pinned client, pgheal asks the server on the same connection what
//! remains ([`CHECK_SQL`]); while something does, the connection stays with the client. When
//! the client ends its session pinned, the connection is closed, not pooled. `DISCARD ALL`
//! from a pinned client, which pgheal answers itself, also releases that state on the
//! server ([`RELEASE_SQL`]).
//!
//! State created inside functions (a PL/pgSQL `CREATE TEMP TABLE`, a function that takes an
//! advisory lock) is not visible in the SQL text and is not detected. A prepared transaction
//! (`PREPARE TRANSACTION`) is not state of the connection: any session may `COMMIT PREPARED`
//! it, so it needs no pin.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::metrics::Metrics;
use crate::pool::{Checkout, ServerConn, ServerError};
use crate::protocol::backend::{self, TxStatus};
use crate::protocol::frontend::{self, Parse, Target};
use crate::protocol::{encode, Frame};

use super::listen_sql::{is_discard_all, query_text};
use super::settings::{session_state_in, StateKinds};

/// What remains on the connection: temporary objects, holdable cursors, session advisory
/// locks, listened channels. One round trip; catalog names qualified, so the client's
/// search_path does not matter.
pub const CHECK_SQL: &str = "SELECT \
    (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
  + (SELECT count(*) FROM pg_catalog.pg_proc WHERE pronamespace = pg_catalog.pg_my_temp_schema()) \
  + (SELECT count(*) FROM pg_catalog.pg_type WHERE typnamespace = pg_catalog.pg_my_temp_schema()), \
    (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable), \
    (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' \
        AND pid = pg_catalog.pg_backend_pid()), \
    (SELECT count(*) FROM pg_catalog.pg_listening_channels())";

/// The session-state part of `DISCARD ALL` (without resetting settings or prepared statements,
/// which pgheal manages itself).
pub const RELEASE_SQL: &str =
    "CLOSE ALL; SELECT pg_catalog.pg_advisory_unlock_all(); UNLISTEN *; DISCARD TEMP";

/// How long the check may take before the connection is given up.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the check found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub temp_objects: i64,
    pub hold_cursors: i64,
    pub advisory_locks: i64,
    pub listens: i64,
}

impl Held {
    fn any(&self) -> bool {
        self.temp_objects + self.hold_cursors + self.advisory_locks + self.listens > 0
    }

    /// The `state` labels of `pgheal_pins_total`.
    fn labels(&self) -> Vec<&'static str> {
        [
            (self.temp_objects, "temp_objects"),
            (self.hold_cursors, "hold_cursor"),
            (self.advisory_locks, "advisory_lock"),
            (self.listens, "listen"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(_, l)| l)
        .collect()
    }
}

/// What to do at the next transaction boundary while pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Nothing ran since the last check.
    Keep,
    /// The client ran something: check again.
    Recheck,
    /// The client sent `DISCARD ALL`: release the state, then check.
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PinState {
    Free,
    /// A statement that may create session state ran: check at the end of the transaction.
    Suspect(StateKinds),
    /// State remains (`None`: the check failed, so it is assumed to).
    Pinned {
        held: Option<Held>,
        next: Next,
    },
}

/// One client's pin (transaction pooling).
pub struct Pin {
    /// `None` while free with no suspect statement prepared, as most clients are for their
    /// whole session: the state is boxed on first use, so that such a client carries one
    /// pointer for it (issue 14: memory per idle client).
    on: Option<Box<Pinning>>,
    metrics: Arc<Metrics>,
}

/// The state of a client that ran or prepared something that may create session state.
struct Pinning {
    state: PinState,
    /// The client's prepared statements whose text may create session state.
    statements: HashMap<Box<[u8]>, StateKinds>,
}

impl Pin {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Pin { on: None, metrics }
    }

    fn state(&self) -> PinState {
        self.on.as_ref().map_or(PinState::Free, |p| p.state)
    }

    /// Set the state; a client free again with no suspect statement gives its box back.
    fn set_state(&mut self, state: PinState) {
        match &mut self.on {
            Some(p) if state == PinState::Free && p.statements.is_empty() => self.on = None,
            Some(p) => p.state = state,
            None if state == PinState::Free => {}
            None => {
                self.on = Some(Box::new(Pinning {
                    state,
                    statements: HashMap::new(),
                }))
            }
        }
    }

    /// The client's prepared statements whose text may create session state.
    fn statement_kinds(&self, name: &[u8]) -> Option<StateKinds> {
        self.on.as_ref()?.statements.get(name).copied()
    }

    fn forget_statement(&mut self, name: &[u8]) {
        if let Some(p) = &mut self.on {
            p.statements.remove(name);
            if p.statements.is_empty() && p.state == PinState::Free {
                self.on = None;
            }
        }
    }

    /// Anything to do at the end of a transaction (false for most clients).
    pub fn is_active(&self) -> bool {
        self.state() != PinState::Free
    }

    pub fn is_pinned(&self) -> bool {
        matches!(self.state(), PinState::Pinned { .. })
    }

    /// The connection must be checked at this transaction boundary.
    pub fn due(&self) -> bool {
        match self.state() {
            PinState::Free => false,
            PinState::Suspect(_) => true,
            PinState::Pinned { next, .. } => next != Next::Keep,
        }
    }

    /// A client message on its way to the server (or to pgheal's own answers). `status`: the
    /// transaction status of the last ReadyForQuery.
    pub fn observe(&mut self, f: &Frame, status: TxStatus) {
        match f.tag {
            frontend::QUERY => {
                let sql = query_text(f);
                if self.is_pinned() && status == TxStatus::Idle && is_discard_all(sql) {
                    self.set_next(Next::Release);
                } else {
                    self.ran(session_state_in(sql));
                }
            }
            frontend::PARSE => {
                let Ok(p) = Parse::decode(f) else {
                    return;
                };
                let kinds = session_state_in(p.query);
                if !kinds.is_empty() {
                    let state = self.state();
                    let on = self.on.get_or_insert_with(|| {
                        Box::new(Pinning {
                            state,
                            statements: HashMap::new(),
                        })
                    });
                    on.statements.insert(p.name.into(), kinds);
                } else {
                    self.forget_statement(p.name);
                }
                // Preparing runs nothing; a pinned client's Parse still counts as activity.
                self.ran(StateKinds::NONE);
            }
            frontend::BIND => {
                // Most clients have no such statement: no decoding then.
                let kinds = if self.on.is_none() {
                    StateKinds::NONE
                } else {
                    frontend::bind_statement(f)
                        .ok()
                        .and_then(|name| self.statement_kinds(name))
                        .unwrap_or(StateKinds::NONE)
                };
                self.ran(kinds);
            }
            frontend::CLOSE => {
                if let Ok(Target::Statement(name)) = frontend::decode_close(f) {
                    self.forget_statement(name);
                }
            }
            frontend::EXECUTE | frontend::FUNCTION_CALL => self.ran(StateKinds::NONE),
            _ => {}
        }
    }

    /// Something ran that may have created `kinds` of state (and, while pinned, may have
    /// released some).
    fn ran(&mut self, kinds: StateKinds) {
        match self.state() {
            PinState::Free if kinds.is_empty() => {}
            PinState::Free => self.set_state(PinState::Suspect(kinds)),
            PinState::Suspect(k) => self.set_state(PinState::Suspect(k.union(kinds))),
            PinState::Pinned { .. } => self.set_next(Next::Recheck),
        }
    }

    fn set_next(&mut self, want: Next) {
        if let Some(PinState::Pinned { next, .. }) = self.on.as_mut().map(|p| &mut p.state) {
            if *next != Next::Release {
                *next = want;
            }
        }
    }

    /// At a transaction boundary, with everything answered: ask the server what state remains
    /// on `conn` and pin or unpin. Notifications read meanwhile (a pinned client listening on
    /// its connection) are appended to `to_client`. An error means the connection is broken.
    /// Not cancel-safe.
    pub async fn settle(
        &mut self,
        conn: &mut ServerConn,
        to_client: &mut Vec<Bytes>,
    ) -> Result<(), ServerError> {
        let was = self.state();
        if let PinState::Pinned {
            next: Next::Release,
            ..
        } = was
        {
            if let Some(e) = query(conn, RELEASE_SQL, to_client, &mut Vec::new()).await? {
                tracing::warn!(error = %error_text(&e), "could not release session state for DISCARD ALL");
            }
        }
        let mut row = Vec::new();
        let held = match query(conn, CHECK_SQL, to_client, &mut row).await? {
            None => match row.as_slice() {
                [temp_objects, hold_cursors, advisory_locks, listens] => Some(Held {
                    temp_objects: *temp_objects,
                    hold_cursors: *hold_cursors,
                    advisory_locks: *advisory_locks,
                    listens: *listens,
                }),
                _ => None,
            },
            Some(e) => {
                tracing::warn!(error = %error_text(&e), "the session-state check failed; keeping the client on its server connection");
                None
            }
        };
        let pinned_before = matches!(was, PinState::Pinned { .. });
        match held {
            Some(h) if !h.any() => {
                if pinned_before {
                    self.metrics.pinned_clients.dec();
                    tracing::debug!(
                        server = conn.id,
                        "session state released: the client is unpinned"
                    );
                }
                self.set_state(PinState::Free);
            }
            held => {
                if !pinned_before {
                    self.metrics.pinned_clients.inc();
                    let labels = held.map_or_else(|| vec!["unknown"], |h| h.labels());
                    for l in &labels {
                        self.metrics.pins.with_label_values(&[l]).inc();
                    }
                    tracing::info!(
                        server = conn.id,
                        pid = conn.backend_pid,
                        state = ?labels,
                        "session state remains on the server connection: the client keeps it until released"
                    );
                }
                self.set_state(PinState::Pinned {
                    held,
                    next: Next::Keep,
                });
            }
        }
        Ok(())
    }

    /// The session ended: a connection that may carry the client's state is closed, never
    /// pooled.
    pub fn release(&mut self, attached: &mut Option<Box<Checkout>>) {
        if self.state() == PinState::Free {
            return;
        }
        if let Some(c) = attached.take() {
            tracing::debug!(
                server = c.conn_ref().id,
                "closing a server connection that may hold the client's session state"
            );
            c.discard();
        }
        self.unpin();
    }

    fn unpin(&mut self) {
        if self.is_pinned() {
            self.metrics.pinned_clients.dec();
        }
        self.set_state(PinState::Free);
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.unpin();
    }
}

/// Run one simple query on `conn`, outside the client's view. Integers of its single row go
/// to `row`; the first ErrorResponse is returned; notifications go to `to_client`.
async fn query(
    conn: &mut ServerConn,
    sql: &str,
    to_client: &mut Vec<Bytes>,
    row: &mut Vec<i64>,
) -> Result<Option<Frame>, ServerError> {
    let run = async {
        conn.writer
            .write_frame(&encode::query(sql))
            .await
            .map_err(crate::net::NetError::from)?;
        let mut error = None;
        let mut cols = Vec::new();
        loop {
            let f = conn.reader.read_frame().await?;
            match f.tag {
                backend::READY_FOR_QUERY => return Ok(error),
                backend::ERROR_RESPONSE if error.is_none() => error = Some(f),
                backend::NOTIFICATION_RESPONSE => to_client.push(f.bytes),
                backend::PARAMETER_STATUS => conn.note_parameter(&f),
                backend::DATA_ROW if backend::data_row_columns(&f, &mut cols).is_ok() => {
                    row.clear();
                    for r in &cols {
                        let v = f.bytes.get(r.start + 4..r.end).unwrap_or(&[]);
                        row.push(
                            std::str::from_utf8(v)
                                .ok()
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0),
                        );
                    }
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(CHECK_TIMEOUT, run)
        .await
        .map_err(|_| ServerError::Timeout)?
}

fn error_text(f: &Frame) -> String {
    backend::ErrorFields::decode(f)
        .ok()
        .and_then(|e| e.message().map(|m| String::from_utf8_lossy(m).into_owned()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin() -> Pin {
        Pin::new(Metrics::new())
    }

    #[test]
    fn suspects_statements_that_create_state() {
        let mut p = pin();
        p.observe(&encode::query("SELECT 1"), TxStatus::Idle);
        assert!(!p.is_active());
        p.observe(&encode::query("CREATE TEMP TABLE t()"), TxStatus::Idle);
        assert!(p.due() && !p.is_pinned());

        // A statement prepared once and bound later is suspect at each Bind.
        let mut p = pin();
        p.observe(
            &encode::parse("lock", "SELECT pg_advisory_lock($1)", &[]),
            TxStatus::Idle,
        );
        assert!(!p.is_active(), "preparing runs nothing");
        p.observe(&encode::bind_no_params("", "other"), TxStatus::Idle);
        assert!(!p.is_active());
        p.observe(&encode::bind_no_params("", "lock"), TxStatus::Idle);
        assert!(p.due());

        // A closed or re-prepared name is forgotten.
        let mut p = pin();
        p.observe(
            &encode::parse("s", "DECLARE c CURSOR WITH HOLD FOR SELECT 1", &[]),
            TxStatus::Idle,
        );
        p.observe(&encode::parse("s", "SELECT 1", &[]), TxStatus::Idle);
        p.observe(&encode::bind_no_params("", "s"), TxStatus::Idle);
        assert!(!p.is_active());
        assert!(
            p.on.is_none(),
            "nothing suspect is left: the state's box is given back"
        );
    }

    /// Issue 14: a client that never ran or prepared anything suspect holds no pin state
    /// beyond a pointer and the metrics handle.
    #[test]
    fn a_free_client_holds_no_pin_state() {
        let mut p = pin();
        p.observe(&encode::query("SELECT 1"), TxStatus::Idle);
        p.observe(&encode::parse("s", "SELECT 1", &[]), TxStatus::Idle);
        p.observe(&encode::bind_no_params("", "s"), TxStatus::Idle);
        p.observe(&encode::close(Target::Statement(b"s")), TxStatus::Idle);
        assert!(p.on.is_none());
        assert!(std::mem::size_of::<Pin>() <= 16);
    }

    #[test]
    fn pinned_clients_are_checked_after_each_transaction() {
        let mut p = pin();
        p.set_state(PinState::Pinned {
            held: None,
            next: Next::Keep,
        });
        assert!(!p.due());
        p.observe(&encode::query("SELECT 1"), TxStatus::Idle);
        assert!(p.due());
        p.observe(&encode::query("DISCARD ALL"), TxStatus::Idle);
        assert_eq!(
            p.state(),
            PinState::Pinned {
                held: None,
                next: Next::Release
            }
        );
        p.observe(&encode::query("SELECT 1"), TxStatus::Idle);
        assert!(
            matches!(
                p.state(),
                PinState::Pinned {
                    next: Next::Release,
                    ..
                }
            ),
            "a release stays due"
        );
    }
}
