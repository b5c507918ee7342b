//! The repair sequence after a healable cached-plan error.
//!
//! ```text
//! Relaying ──error──▶ Draining ──Z(I)──────────────▶ Probing ──Z──▶ Repreparing ──Z──▶ replay ▶ Relaying
//!                        └──Z(E/T)──▶ RollingBack ──Z──┘  └─(contract broken)──▶ replay without heal
//! ```
//! * **Draining** swallows the error and everything up to ReadyForQuery (sending a Sync when
//!   the client's segment ended with Flush).
//! * **RollingBack** ends a transaction block the batch itself opened.
//! * **Probing** prepares the statement's text under a scratch name, describes and closes it, to
//!   learn the new shape without touching the client's statement.
//! * **Repreparing** replaces the client's statement (Close + Parse + Describe).
//! * The window is then replayed. When the contract cannot be kept, it is replayed with healing
//!   off, so the client receives PostgreSQL's own error with all fields intact.

use crate::protocol::backend::{self, decode_row_description, Field, TxStatus};
use crate::protocol::frontend::{self, Target};
use crate::protocol::{encode, Frame};
use crate::statements::sql_prepare::quote_ident_bytes;
use crate::statements::{ProjectionError, ServerPrepared, StmtId};

use super::event::{truncate_sql, HealEvent, Outcome};
use super::outbox::Outbox;
use super::pending::Expect;
use super::relay::{Relay, RelayError};

/// The scratch statement name used to learn a statement's new shape.
pub const PROBE_NAME: &[u8] = b"pgheal_probe";

/// What is being healed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealTarget {
    /// A protocol-level named statement.
    Statement(StmtId),
    /// SQL-level prepared statements (name, PREPARE text) run by a simple query; bytes in the
    /// client's encoding.
    Sql(Vec<(Vec<u8>, Vec<u8>)>),
    /// A statement prepared lazily on this connection turned out to have another shape than
    /// the client's Bind assumed; the shape is known now, so a replay is enough.
    Reshape,
}

/// The relay's state machine. Data for each step lives in its variant.
#[derive(Debug, Clone)]
pub enum Phase {
    Relaying,
    Draining(Heal),
    RollingBack(Heal),
    Probing {
        heal: Heal,
        /// Other statements probed after the heal's own (see [`Relay::reparsed_in_replay`]).
        others: Vec<StmtId>,
        /// The shapes the probes found, in order: the heal's statement first (none when its
        /// probe failed; a later failure leaves the rest unknown).
        shapes: Vec<Vec<Field>>,
    },
    Repreparing {
        heal: Heal,
        shape: Option<Vec<Field>>,
        failed: bool,
    },
}

/// One heal in progress.
#[derive(Debug, Clone)]
pub struct Heal {
    pub target: HealTarget,
    /// The original error, kept for the log.
    pub error: Frame,
    /// Set when the repair learned the contract cannot be kept: replay without healing.
    pub refusal: Option<String>,
    pub outcome: Outcome,
    pub detail: String,
    /// The window entry the replay starts at: 0, or behind the savepoint guard the guarded
    /// Bind that failed (what precedes it ran and stays).
    pub from: u32,
}

impl Relay {
    pub(crate) fn start_heal(
        &mut self,
        target: HealTarget,
        from: u32,
        error: Frame,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Result<(), RelayError> {
        // Held output belongs to messages the server rolled back: the replay reproduces it.
        // Output of messages before a guard's savepoint was not rolled back: it goes out.
        let held = std::mem::take(&mut self.window.held);
        self.window.held_bytes = 0;
        if self.window.savepoint {
            let before = held.into_iter().filter(|h| h.idx.is_none_or(|i| i < from));
            for h in before {
                if h.counts {
                    self.window.forwarded(h.idx, h.replayable);
                }
                out.to_client.push(h.bytes);
            }
        }
        // After a failed extended-protocol message, a simple Query (or FunctionCall) is
        // skipped by the server like the rest: only a Sync ends the skipping (found by
        // fuzzing). When the failed message is itself a simple Query (SQL-level EXECUTE), its
        // own ReadyForQuery ends it.
        let extended = !matches!(target, HealTarget::Sql(_));
        let sync_pending = self.pending.iter().any(|p| {
            p.is_sync_point()
                && !(extended && matches!(p.expect, Expect::Query { .. } | Expect::FunctionCall))
        });
        // The server skipped what is still waiting for its answer: Closes give their statements
        // back and Parses create none, until the replay sends them again (a Parse left recorded
        // redefined the client's statement in a refused replay: finding 16 of docs/fuzzing.md).
        let skipped = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|p| p.expect)
            .collect();
        self.undo_skipped(skipped, srv);
        self.risky_in_flight = 0;
        // A prepare that held the client's messages (awaiting their shape) was skipped by the
        // server with the rest: they go again after the replay, and ask again if they must
        // (found by the engine property test: the held Describe waited for ever).
        self.awaiting_shape = 0;
        self.reprepared = None;
        if !sync_pending {
            out.to_server.push(encode::sync().bytes);
        }
        self.phase = Phase::Draining(Heal {
            target,
            error,
            refusal: None,
            outcome: Outcome::Healed,
            detail: String::new(),
            from,
        });
        Ok(())
    }

    /// A server message while repairing: everything is pgheal's own and swallowed.
    pub(crate) fn repair_step(
        &mut self,
        frame: Frame,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Result<(), RelayError> {
        let phase = std::mem::replace(&mut self.phase, Phase::Relaying);
        self.phase = match phase {
            Phase::Relaying => Phase::Relaying,
            Phase::Draining(heal) => match ready_status(&frame)? {
                None => Phase::Draining(heal),
                Some(TxStatus::Idle) => self.begin_probe(heal, srv, out),
                Some(_) if self.window.savepoint => {
                    // Back to the guard's savepoint (kept, so a failed probe can return too).
                    out.to_server.push(super::guard::rollback_to().bytes);
                    Phase::RollingBack(heal)
                }
                Some(_) => {
                    out.to_server.push(encode::query("ROLLBACK").bytes);
                    Phase::RollingBack(heal)
                }
            },
            Phase::RollingBack(heal) => match ready_status(&frame)? {
                None => Phase::RollingBack(heal),
                Some(_) => self.begin_probe(heal, srv, out),
            },
            Phase::Probing {
                heal,
                others,
                mut shapes,
            } => {
                let (mut shape, mut failed) = (None, false);
                observe_shape(&frame, &mut shape, &mut failed)?;
                shapes.extend(shape);
                match ready_status(&frame)? {
                    None => Phase::Probing {
                        heal,
                        others,
                        shapes,
                    },
                    Some(_) => self.decide(heal, &others, shapes, srv, out)?,
                }
            }
            Phase::Repreparing {
                heal,
                mut shape,
                mut failed,
            } => {
                observe_shape(&frame, &mut shape, &mut failed)?;
                match ready_status(&frame)? {
                    None => Phase::Repreparing {
                        heal,
                        shape,
                        failed,
                    },
                    Some(_) => {
                        let heal = self.finish_reprepare(heal, shape, failed, srv);
                        self.replay(heal, srv, out)?;
                        return Ok(());
                    }
                }
            }
        };
        Ok(())
    }

    fn begin_probe(&mut self, heal: Heal, srv: &mut ServerPrepared, out: &mut Outbox) -> Phase {
        match &heal.target {
            HealTarget::Reshape => {
                let mut heal = heal;
                heal.detail =
                    "prepared on this connection with a new shape; result formats re-mapped".into();
                match self.replay(heal, srv, out) {
                    Ok(()) => std::mem::replace(&mut self.phase, Phase::Relaying),
                    Err(_) => Phase::Relaying,
                }
            }
            HealTarget::Statement(id) => {
                let Some(s) = self.stmts.get(*id) else {
                    return self.refuse_phase(
                        heal,
                        "the statement is no longer known".into(),
                        srv,
                        out,
                    );
                };
                push_probe(&s.sql, &s.param_types, out);
                let others = self.reparsed_in_replay(heal.from, *id);
                for other in &others {
                    if let Some(s) = self.stmts.get(*other) {
                        push_probe(&s.sql, &s.param_types, out);
                    }
                }
                out.to_server.push(encode::sync().bytes);
                Phase::Probing {
                    heal,
                    others,
                    shapes: Vec::new(),
                }
            }
            HealTarget::Sql(names) => {
                // The simple protocol describes every result: no contract to keep.
                let mut sql = Vec::new();
                for (name, text) in names {
                    sql.extend_from_slice(b"DEALLOCATE ");
                    sql.extend_from_slice(&quote_ident_bytes(name));
                    sql.extend_from_slice(b"; ");
                    sql.extend_from_slice(text);
                    sql.extend_from_slice(b";");
                }
                out.to_server.push(encode::query(&sql).bytes);
                Phase::Repreparing {
                    heal,
                    shape: None,
                    failed: false,
                }
            }
        }
    }

    /// Statements other than `target` that the replay from window entry `from` parses again
    /// before it binds them. Their shapes would be learned only from the replay's own
    /// Describe, after their Binds have gone, too late to fail a Bind whose contract cannot be
    /// kept (the server would already be running what follows it), so they are probed with
    /// the heal's own statement (finding 12 of docs/fuzzing.md).
    fn reparsed_in_replay(&self, from: u32, target: StmtId) -> Vec<StmtId> {
        let mut parsed: Vec<&[u8]> = Vec::new();
        let mut found = Vec::new();
        for e in self.window.entries.iter().skip(from as usize) {
            match e.frame.tag {
                frontend::PARSE => {
                    if let Ok(name) = frontend::parse_statement(&e.frame) {
                        parsed.push(name);
                    }
                }
                frontend::BIND => {
                    let Ok(name) = frontend::bind_statement(&e.frame) else {
                        continue;
                    };
                    let id = match self.stmts.id(name) {
                        Some(id) if !name.is_empty() && parsed.contains(&name) => id,
                        _ => continue,
                    };
                    let rows = self.stmts.get(id).is_some_and(|s| s.returns_rows());
                    if id != target && rows && !found.contains(&id) {
                        found.push(id);
                    }
                }
                _ => {}
            }
        }
        found
    }

    /// The first of `others` (probed after the heal's statement, their shapes in `shapes`)
    /// whose new shape cannot keep its contract and that the client does not describe in this
    /// batch, with why; every such statement is added to the window's refused ones.
    fn others_broken(&mut self, others: &[StmtId], shapes: &[Vec<Field>]) -> Option<String> {
        let mut why = None;
        for (id, shape) in others.iter().zip(shapes) {
            let shape: std::sync::Arc<[Field]> = shape.clone().into();
            let Some(Err(e)) = self.stmts.get_mut(*id).map(|s| s.shaping_for(&shape)) else {
                continue;
            };
            if self.window_describes(*id) {
                continue;
            }
            self.window.refused.push(*id);
            if why.is_none() {
                let (statement, _) = self.statement_label(*id);
                why = Some(format!(
                    "statement {statement}, parsed again in this batch, changed shape too: {}",
                    refusal_text(&e)
                ));
            }
        }
        why
    }

    /// After the probe: re-prepare when the contract can be kept, else refuse.
    fn decide(
        &mut self,
        mut heal: Heal,
        others: &[StmtId],
        shapes: Vec<Vec<Field>>,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Result<Phase, RelayError> {
        let HealTarget::Statement(id) = heal.target.clone() else {
            return Ok(Phase::Relaying);
        };
        // A failure after the first shape is another statement's probe: its replayed Parse
        // fails as it did, and nothing is known of its shape.
        let mut shapes = shapes.into_iter();
        let Some(shape) = shapes.next() else {
            return Ok(self.refuse_phase(
                heal,
                "the statement no longer prepares".into(),
                srv,
                out,
            ));
        };
        // Judged first: a refused replay must fail their Binds too.
        let rest: Vec<Vec<Field>> = shapes.collect();
        let others_broken = self.others_broken(others, &rest);
        let Some(s) = self.stmts.get(id) else {
            return Ok(self.refuse_phase(
                heal,
                "the statement is no longer known".into(),
                srv,
                out,
            ));
        };
        let old_width = s.contract.as_ref().map_or(0, |c| c.len());
        let contract = s.contract.clone().unwrap_or_else(|| shape.clone().into());
        match crate::statements::Projection::compute(&contract, &shape) {
            Ok(p) => {
                heal.outcome = if p.is_identity() {
                    Outcome::Healed
                } else {
                    Outcome::Projected
                };
                heal.detail = format!(
                    "{} columns → {}{}",
                    old_width,
                    shape.len(),
                    if p.is_identity() {
                        ""
                    } else {
                        ", projected onto the contract"
                    }
                );
            }
            Err(e) if self.window_describes(id) => {
                heal.outcome = Outcome::Healed;
                // The replayed Bind finds the new shape and that the batch describes it: the
                // shape becomes the contract when the description reaches the client.
                heal.detail = format!(
                    "{e}; the client describes the statement in this batch and reads the new shape"
                );
            }
            Err(e) => return Ok(self.refuse_phase(heal, refusal_text(&e), srv, out)),
        }
        if let Some(why) = others_broken {
            return Ok(self.refuse_phase(heal, why, srv, out));
        }
        let (name, sql, types) = match self.stmts.get(id) {
            Some(s) => (s.server_name.clone(), s.sql.clone(), s.param_types.clone()),
            None => return Ok(Phase::Relaying),
        };
        srv.prepared(name.clone(), self.epoch.current());
        out.to_server
            .push(encode::close(Target::Statement(&name)).bytes);
        out.to_server.push(encode::parse(&name, &sql, &types).bytes);
        out.to_server
            .push(encode::describe(Target::Statement(&name)).bytes);
        out.to_server.push(encode::sync().bytes);
        Ok(Phase::Repreparing {
            heal,
            shape: None,
            failed: false,
        })
    }

    fn finish_reprepare(
        &mut self,
        mut heal: Heal,
        shape: Option<Vec<Field>>,
        failed: bool,
        srv: &mut ServerPrepared,
    ) -> Heal {
        if failed {
            heal.refusal = Some("the statement could not be re-prepared".into());
            return heal;
        }
        if let (HealTarget::Statement(id), Some(shape)) = (&heal.target, shape) {
            let shape: std::sync::Arc<[Field]> = shape.into();
            let shape = match self.stmts.get(*id) {
                Some(s) => self.shared_shape(&s.server_name, shape),
                None => shape,
            };
            if let Some(s) = self.stmts.get_mut(*id) {
                srv.described(&s.server_name, shape.clone());
                if let Err(e) = s.shaping_for(&shape) {
                    heal.refusal = Some(refusal_text(&e));
                }
            }
        }
        heal
    }

    /// Refuse: replay the window with healing off, so PostgreSQL's own answer reaches the client.
    fn refuse_phase(
        &mut self,
        mut heal: Heal,
        why: String,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Phase {
        heal.refusal = Some(why);
        match self.replay(heal, srv, out) {
            Ok(()) => std::mem::replace(&mut self.phase, Phase::Relaying),
            Err(_) => Phase::Relaying,
        }
    }

    /// Replay the whole window, suppressing the responses the client already has.
    fn replay(
        &mut self,
        heal: Heal,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Result<(), RelayError> {
        self.phase = Phase::Relaying;
        self.window.heals += 1;
        let (outcome, detail) = match &heal.refusal {
            Some(why) => {
                self.window.no_heal = true;
                if let HealTarget::Statement(id) = heal.target {
                    self.window.refused.push(id);
                }
                (Outcome::Refused, why.clone())
            }
            None if self.window.savepoint => {
                out.guard_heals += 1;
                (
                    heal.outcome,
                    format!(
                        "{}; inside a transaction block, rolled back to the savepoint guard",
                        heal.detail
                    ),
                )
            }
            None => (heal.outcome, heal.detail.clone()),
        };
        let (statement, sql) = match &heal.target {
            HealTarget::Statement(id) => self.statement_label(*id),
            HealTarget::Sql(names) => (
                names
                    .iter()
                    .map(|n| String::from_utf8_lossy(&n.0))
                    .collect::<Vec<_>>()
                    .join(","),
                truncate_sql(
                    &names
                        .iter()
                        .map(|n| n.1.as_slice())
                        .collect::<Vec<_>>()
                        .join(&b"; "[..]),
                ),
            ),
            HealTarget::Reshape => (String::new(), String::new()),
        };
        out.events.push(HealEvent {
            outcome,
            statement,
            sql,
            detail,
        });
        let entries: Vec<(Frame, u32)> = self
            .window
            .entries
            .iter()
            .skip(heal.from as usize)
            .map(|e| (e.frame.clone(), e.forwarded))
            .collect();
        self.window.sync_sent = false;
        if self.window.savepoint {
            // Undo whatever the repair left (a failed probe) and drop the savepoint; the
            // replayed Bind is guarded by a new one.
            out.to_server
                .push(super::guard::rollback_to_and_release().bytes);
            self.internal(Expect::Query {
                risky: false,
                temp: false,
            });
        }
        self.window.reparsed = self.reparsed_contracts(heal.from, &entries);
        for (i, (frame, forwarded)) in entries.into_iter().enumerate() {
            let idx = heal.from + i as u32;
            self.client_message(frame, Some((idx, forwarded)), srv, out)?;
        }
        self.window.reparsed.clear();
        Ok(())
    }

    /// For each named Parse among the replayed `entries` that defines the statement now
    /// registered under its name (the last Parse of that name), that statement's contract,
    /// when the client was told it (see [`told_shape`]). A contract only pgheal's own
    /// description set is not kept: replayed after the migration, the client's Parse gets the
    /// new shape as PostgreSQL would give it.
    fn reparsed_contracts(
        &self,
        from: u32,
        entries: &[(Frame, u32)],
    ) -> Vec<(u32, std::sync::Arc<[Field]>)> {
        let names: Vec<Option<&[u8]>> = entries
            .iter()
            .map(|(f, _)| match f.tag {
                frontend::PARSE => frontend::parse_statement(f).ok().filter(|n| !n.is_empty()),
                _ => None,
            })
            .collect();
        let mut found = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let Some(name) = name else { continue };
            if names[i + 1..].contains(&Some(name)) || !told_shape(name, &entries[i + 1..]) {
                continue;
            }
            let contract = self
                .stmts
                .id(name)
                .and_then(|id| self.stmts.get(id))
                .and_then(|s| s.contract.clone());
            if let Some(c) = contract {
                found.push((from + i as u32, c));
            }
        }
        found
    }

    /// Whether the client describes statement `id` (directly or through a portal) in this
    /// batch: in the window, or among the messages waiting to be sent. Once the window's Sync
    /// has gone, the waiting messages belong to the next batch: a Describe there is a question
    /// the client has not asked yet, and must not let this batch's rows take a new shape.
    pub(crate) fn window_describes(&self, id: StmtId) -> bool {
        self.batch_describes(id, None)
    }

    /// As [`Self::window_describes`], with `bind` (being processed, so in neither the window
    /// nor the waiting messages) between the two.
    pub(crate) fn batch_describes(&self, id: StmtId, bind: Option<&Frame>) -> bool {
        let Some(name) = self.stmts.get(id).map(|s| s.name.as_slice()) else {
            return false;
        };
        let this_batch = !self.window.sync_sent;
        let waiting = self
            .deferred
            .iter()
            .take_while(move |f| this_batch && f.tag != frontend::SYNC && f.tag != frontend::QUERY);
        // A Describe already answered told the client the shape before the change: its replay
        // is suppressed, so it tells the client nothing new (found by the engine property test).
        let window = self
            .window
            .entries
            .iter()
            .filter(|e| e.frame.tag != frontend::DESCRIBE || e.forwarded == 0)
            .map(|e| &e.frame);
        describes(name, window.chain(bind).chain(waiting))
    }
}

/// Whether `frames` tell the client the statement's new shape before any of its rows: a
/// Describe of statement `name` before it is bound, or a Describe of the one portal bound from
/// it (not bound again from another statement, or closed, before the Describe). Every other
/// portal bound from the statement and still open would get rows in a shape the client was not
/// told (findings 14 and 15 of docs/fuzzing.md), so two such portals keep the error
/// (conservative: a client that describes both still gets it). A Parse or Close of `name`
/// after a Bind of it ends the search: what is described after it is another statement of that
/// name (one before any Bind defines the statement in question). So does an Execute of such a
/// portal: its rows reach the client before the description. A Describe of the statement
/// speaks for portals bound after it, not before.
fn describes<'a>(name: &[u8], frames: impl Iterator<Item = &'a Frame>) -> bool {
    // The portals bound from the statement and still open, each name once.
    let mut portals: Vec<&[u8]> = Vec::new();
    let mut bound = false;
    for f in frames {
        match f.tag {
            frontend::EXECUTE
                if frontend::decode_execute(f).is_ok_and(|(p, _)| portals.contains(&p)) =>
            {
                return false;
            }
            frontend::PARSE if bound && frontend::parse_statement(f).is_ok_and(|n| n == name) => {
                return false;
            }
            frontend::BIND => {
                if let Ok(b) = frontend::Bind::decode(f) {
                    portals.retain(|p| *p != b.portal);
                    if b.statement == name {
                        portals.push(b.portal);
                        bound = true;
                    }
                }
            }
            frontend::DESCRIBE => match frontend::decode_describe(f) {
                // A portal bound before it keeps the shape it was bound with: its rows are in
                // the shape the client knew at its Bind.
                Ok(Target::Statement(n)) if n == name => return portals.is_empty(),
                Ok(Target::Portal(p)) if portals.contains(&p) => return portals == [p],
                _ => {}
            },
            frontend::CLOSE => match frontend::decode_close(f) {
                Ok(Target::Portal(p)) => portals.retain(|q| *q != p),
                Ok(Target::Statement(n)) if bound && n == name => return false,
                _ => {}
            },
            _ => {}
        }
    }
    false
}

/// Whether the client already has a description of statement `name` from `entries` (the
/// window after its Parse, each with the number of answers the client has): an answered
/// Describe of the statement, or of a portal bound from it, before the name is closed.
fn told_shape(name: &[u8], entries: &[(Frame, u32)]) -> bool {
    let mut portals: Vec<&[u8]> = Vec::new();
    for (f, forwarded) in entries {
        match f.tag {
            frontend::BIND => {
                if let Ok(b) = frontend::Bind::decode(f) {
                    portals.retain(|p| *p != b.portal);
                    if b.statement == name {
                        portals.push(b.portal);
                    }
                }
            }
            frontend::DESCRIBE if *forwarded > 0 => match frontend::decode_describe(f) {
                Ok(Target::Statement(n)) if n == name => return true,
                Ok(Target::Portal(p)) if portals.contains(&p) => return true,
                _ => {}
            },
            frontend::CLOSE => match frontend::decode_close(f) {
                Ok(Target::Statement(n)) if n == name => return false,
                Ok(Target::Portal(p)) => portals.retain(|q| *q != p),
                _ => {}
            },
            _ => {}
        }
    }
    false
}

fn refusal_text(e: &ProjectionError) -> String {
    format!("contract cannot be kept: {e}")
}

fn ready_status(frame: &Frame) -> Result<Option<TxStatus>, RelayError> {
    if frame.tag != backend::READY_FOR_QUERY {
        return Ok(None);
    }
    backend::decode_ready_for_query(frame)
        .map(Some)
        .map_err(RelayError::Server)
}

/// Learn a statement text's shape under the scratch name: Parse, Describe, Close.
fn push_probe(sql: &[u8], param_types: &[u32], out: &mut Outbox) {
    out.to_server
        .push(encode::parse(PROBE_NAME, sql, param_types).bytes);
    out.to_server
        .push(encode::describe(Target::Statement(PROBE_NAME)).bytes);
    out.to_server
        .push(encode::close(Target::Statement(PROBE_NAME)).bytes);
}

fn observe_shape(
    frame: &Frame,
    shape: &mut Option<Vec<Field>>,
    failed: &mut bool,
) -> Result<(), RelayError> {
    match frame.tag {
        backend::ROW_DESCRIPTION => {
            *shape = Some(decode_row_description(frame).map_err(RelayError::Server)?);
        }
        backend::NO_DATA => *shape = Some(Vec::new()),
        backend::ERROR_RESPONSE => *failed = true,
        _ => {}
    }
    Ok(())
}
