//! The replay window: every frontend message since the last ReadyForQuery, and what of it the
//! client has already been told.

use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::backend::{Field, TxStatus};
use crate::protocol::frontend::{self, Target};
use crate::protocol::Frame;
use crate::statements::StmtId;

/// One client message of the window and how many of its responses reached the client.
#[derive(Debug, Clone)]
pub struct Entry {
    pub frame: Frame,
    pub forwarded: u32,
}

/// Output held back while an unconfirmed risky message is in flight.
#[derive(Debug, Clone)]
pub struct Held {
    pub idx: Option<u32>,
    /// A replay reproduces it identically (see [`replay_safe`]).
    pub replayable: bool,
    /// Only the first part of a projected DataRow counts as a response.
    pub counts: bool,
    pub bytes: Bytes,
}

#[derive(Debug)]
pub struct Window {
    pub entries: Vec<Entry>,
    /// The batch began inside a transaction block and the savepoint guard bracketed a Bind:
    /// messages are kept from that Bind on, and a cached-plan error of a guarded Bind is healed
    /// by rolling back to its savepoint and replaying from it.
    pub savepoint: bool,
    /// A statement of this batch may end the transaction block: later ones are not guarded.
    pub ends_block: bool,
    pub bytes: usize,
    /// Transaction status before the window's first message.
    pub start: TxStatus,
    /// Something that cannot be replayed was forwarded (rows, command tags, COPY), or the
    /// window outgrew its bound: a cached-plan error in this window is not healed.
    pub irrevocable: bool,
    /// The hold-back bound was exceeded: output flows unheld for the rest of the window.
    pub overflowed: bool,
    /// The window ended with Sync/Query: later client messages belong to the next window.
    pub sync_sent: bool,
    /// Replays done in this window (bounded, so a statement that keeps failing cannot loop).
    pub heals: u8,
    /// This window is being replayed without healing (refusal): errors pass through.
    pub no_heal: bool,
    /// While this window is replayed for a refused heal: the refused statement, and the
    /// statements the replay parses again in a shape that cannot keep their contracts. Their
    /// Binds fail as the server failed the original.
    pub refused: Vec<StmtId>,
    /// While this window is replayed: the contracts of the statements its Parses created, by
    /// entry index. The replayed Parse creates the statement afresh, and it keeps the contract
    /// the client was told (finding 18 of docs/fuzzing.md: it took the server's new shape).
    pub reparsed: Vec<(u32, Arc<[Field]>)>,
    /// The entries that parse a name the client had prepared already when they were sent:
    /// PostgreSQL refuses them (`42P05`), and so does their replay (finding 19 of
    /// docs/fuzzing.md: a replay made one succeed).
    pub duplicates: Vec<u32>,
    pub held: Vec<Held>,
    pub held_bytes: usize,
    /// A kept Bind used the unnamed statement parsed before this window began.
    unnamed_inherited: bool,
    /// A kept Parse defined the unnamed statement.
    unnamed_parsed: bool,
}

impl Window {
    pub fn new() -> Self {
        Window {
            entries: Vec::new(),
            savepoint: false,
            ends_block: false,
            bytes: 0,
            start: TxStatus::Idle,
            irrevocable: false,
            overflowed: false,
            sync_sent: false,
            heals: 0,
            no_heal: false,
            refused: Vec::new(),
            reparsed: Vec::new(),
            duplicates: Vec::new(),
            held: Vec::new(),
            held_bytes: 0,
            unnamed_inherited: false,
            unnamed_parsed: false,
        }
    }

    /// Start a new window after ReadyForQuery with `status`. Keeps allocations.
    pub fn reset(&mut self, status: TxStatus) {
        self.entries.clear();
        self.savepoint = false;
        self.ends_block = false;
        self.bytes = 0;
        self.start = status;
        self.irrevocable = false;
        self.overflowed = false;
        self.sync_sent = false;
        self.heals = 0;
        self.no_heal = false;
        self.refused.clear();
        self.reparsed.clear();
        self.duplicates.clear();
        self.held.clear();
        self.held_bytes = 0;
        self.unnamed_inherited = false;
        self.unnamed_parsed = false;
    }

    /// Give back the memory of a finished window (the engine is between transactions).
    pub fn shed(&mut self) {
        self.entries = Vec::new();
        self.held = Vec::new();
        self.bytes = 0;
        self.held_bytes = 0;
    }

    /// Keep a client message for replay; `None` when the window no longer keeps messages.
    /// `known`: whether a statement name is one the client has prepared (only those can have
    /// been used by a kept message).
    pub fn push(
        &mut self,
        frame: &Frame,
        max_bytes: usize,
        known: impl FnOnce(&[u8]) -> bool,
    ) -> Option<u32> {
        if self.irrevocable || !(self.start == TxStatus::Idle || self.savepoint) {
            return None;
        }
        self.bytes += frame.len();
        if self.bytes > max_bytes || self.redefines_used_statement(frame, known) {
            self.make_irrevocable();
            return None;
        }
        self.entries.push(Entry {
            frame: frame.clone(),
            forwarded: 0,
        });
        Some((self.entries.len() - 1) as u32)
    }

    /// Whether `frame` (a Parse or a Close) replaces or removes a statement that a kept message
    /// used: a replay would run the kept message against the new statement, so a window with
    /// one is not replayed (found by the engine property test: a Bind of the unnamed statement
    /// of the previous batch, replayed after a Parse of a new one, returned the new one's rows).
    /// The unnamed statement is followed by two flags, since a Parse of it is in nearly every
    /// batch; a named one is looked for in the window only when it is `known` (closed or
    /// parsed again, which is rare), so a pipeline of new statements costs no search.
    fn redefines_used_statement(
        &mut self,
        frame: &Frame,
        known: impl FnOnce(&[u8]) -> bool,
    ) -> bool {
        let name = match frame.tag {
            frontend::PARSE => match frontend::parse_statement(frame) {
                Ok(n) => n,
                Err(_) => return false,
            },
            frontend::CLOSE => match frontend::decode_close(frame) {
                Ok(Target::Statement(n)) => n,
                _ => return false,
            },
            frontend::BIND => {
                if frontend::bind_statement(frame).is_ok_and(|n| n.is_empty()) {
                    self.unnamed_inherited |= !self.unnamed_parsed;
                }
                return false;
            }
            _ => return false,
        };
        if name.is_empty() {
            let used = self.unnamed_inherited;
            self.unnamed_parsed |= frame.tag == frontend::PARSE;
            return used;
        }
        known(name) && self.entries.iter().any(|e| uses_statement(&e.frame, name))
    }

    /// The first guarded Bind of a batch that began inside a transaction block: keep messages
    /// from here on. Output already forwarded belongs to messages before it, which a heal
    /// never replays.
    pub fn start_savepoint(&mut self) {
        if !self.savepoint {
            self.savepoint = true;
            self.entries.clear();
            self.duplicates.clear();
            self.bytes = 0;
            self.irrevocable = false;
            self.overflowed = false;
        }
    }

    pub fn make_irrevocable(&mut self) {
        self.irrevocable = true;
        self.entries.clear();
    }

    /// Whether a cached-plan error in this window may be healed by a replay.
    pub fn replayable(&self, max_heals: u8) -> bool {
        (self.start == TxStatus::Idle || self.savepoint)
            && !self.irrevocable
            && !self.no_heal
            && self.heals < max_heals
    }

    /// A response of message `idx` reached the client; `replayable`: a replay reproduces it.
    pub fn forwarded(&mut self, idx: Option<u32>, replayable: bool) {
        if let Some(e) = idx.and_then(|i| self.entries.get_mut(i as usize)) {
            e.forwarded += 1;
        }
        // Behind a savepoint only the failed guarded Bind and what follows it are replayed, and
        // nothing after a failed Bind produced output.
        if !replayable && !self.savepoint {
            self.make_irrevocable();
        }
    }
}

impl Default for Window {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `frame` binds or describes statement `name`.
fn uses_statement(frame: &Frame, name: &[u8]) -> bool {
    match frame.tag {
        frontend::BIND => frontend::bind_statement(frame).is_ok_and(|n| n == name),
        frontend::DESCRIBE => frontend::decode_describe(frame) == Ok(Target::Statement(name)),
        _ => false,
    }
}

/// Responses that a replay reproduces identically, so the client may already have them:
/// ParseComplete, BindComplete, CloseComplete, ParameterDescription, RowDescription, NoData.
/// Anything else (rows, command tags, COPY) makes the window irrevocable, as does a description
/// of a statement pgheal keeps no contract for (the unnamed one): replayed after a migration it
/// may differ from the one the client has, with nothing to project its rows onto.
pub fn replay_safe(tag: u8) -> bool {
    matches!(tag, b'1' | b'2' | b'3' | b't' | b'T' | b'n')
}
