//! The responses the relay expects from the server, in order, and what to do with each.

use std::sync::Arc;

use crate::protocol::backend::Field;
use crate::protocol::Frame;
use crate::statements::{Shaping, StmtId};

/// How the rows and descriptions of a portal are shaped for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalShaping {
    /// The server shape is the contract.
    Plain,
    /// Bound from a statement pgheal keeps no contract for (the unnamed one): rows go
    /// untouched, and a description of it that reaches the client ends the window's replays.
    Untracked,
    /// Known when the Bind was sent.
    Known(StmtId, Shaping),
    /// The statement's new shape cannot keep its contract, but the client describes this
    /// portal before reading its rows: rows go untouched, and the shape becomes the contract
    /// when the portal's description reaches the client (not before: a Describe the server
    /// skips after an error tells the client nothing).
    Adopt(StmtId, Arc<[Field]>),
    /// The statement was prepared lazily in the same pipeline: its shape is learned from the
    /// Describe that precedes the Bind's response, and resolved at the first response.
    Unresolved(StmtId),
    /// The shape learned at the response cannot be projected onto the contract (a migration
    /// pgheal had not seen raced a lazy prepare): rows are withheld and the client receives the
    /// cached-plan error instead of the command tag.
    Broken,
}

/// What a message sent to the server will produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Parse → ParseComplete.
    ParseComplete,
    /// A Parse of a named statement that pgheal records as prepared on this connection (the
    /// client's own in session mode, or pgheal's under a pool-wide name). On error the record is
    /// undone, and with `client_parse` the client's statement too (a failed Parse creates none).
    ServerParse {
        server_name: Arc<[u8]>,
        stmt: Option<StmtId>,
        client_parse: bool,
    },
    /// Bind → BindComplete. `risky`: the statement returns rows and the batch is healable.
    /// `lazy`: pgheal prepared the statement on this connection in the same pipeline.
    /// `guarded`: bracketed by the savepoint guard, whose savepoint is released once it binds.
    BindComplete {
        stmt: Option<StmtId>,
        risky: bool,
        lazy: bool,
        guarded: bool,
    },
    /// Describe 'S' → ParameterDescription, then RowDescription or NoData. `server_name`: the
    /// statement's name on the server, whose shape the answer records.
    StatementDescription {
        stmt: Option<StmtId>,
        server_name: Option<Arc<[u8]>>,
        risky: bool,
        /// The ParameterDescription once received (kept for the pool's statement cache).
        params: Option<Frame>,
        /// A proactive re-prepare that deferred client messages until this answer.
        unblocks: bool,
    },
    /// Describe 'P' → RowDescription or NoData.
    PortalDescription { shaping: PortalShaping },
    /// Execute → DataRow*, then CommandComplete / EmptyQueryResponse / PortalSuspended
    /// (COPY sub-protocol messages in between).
    ExecuteResult { shaping: PortalShaping },
    /// Close → CloseComplete. `closes`: the client's statement this Close removes, kept until
    /// the server has run it (undone if the server skips it after an earlier error); `shape`:
    /// its shape on the connection when the Close was sent, for portals bound from it that
    /// still wait for it (`Relay::resolve_before_close`).
    CloseComplete {
        closes: Option<StmtId>,
        shape: Option<Arc<[Field]>>,
    },
    /// Sync → ReadyForQuery.
    Sync,
    /// Query (simple protocol) → anything, up to ReadyForQuery. `risky`: it EXECUTEs a tracked
    /// SQL-level prepared statement in a healable batch.
    Query { risky: bool, temp: bool },
    /// FunctionCall → FunctionCallResponse or error, then ReadyForQuery.
    FunctionCall,
    /// A response pgheal answers itself, sent when every earlier response has been.
    Local(Frame),
    /// A Close of the client's statement answered by pgheal (transaction pooling): the
    /// statement goes when the CloseComplete is sent; a server that skips to Sync first (an
    /// earlier error) drops the answer and the statement stays.
    LocalClose(StmtId),
    /// A Parse of the client's statement answered by pgheal (transaction pooling: the
    /// statement is on the connection already); a server that skips to Sync first drops the
    /// answer and the statement with it, as its Parse would have created nothing.
    LocalParse(StmtId),
    /// pgheal's own message that is bound to fail (so the server skips to Sync and rolls the
    /// implicit transaction back); the client receives this error instead of the server's.
    FailWith(Frame),
}

/// What to do with the responses of one pending entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Forward,
    /// pgheal's own message: the client never sees its responses.
    Swallow,
    /// pgheal's own message standing in for a client's (a proactive re-prepare): success is
    /// swallowed, an error is what the client's own message would have met, so it is forwarded.
    SwallowOk,
    /// A replayed message: the client already has its first `n` responses.
    Suppress(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub expect: Expect,
    /// Index of the client message in the replay window, when it is kept there.
    pub idx: Option<u32>,
    pub action: Action,
}

impl Pending {
    pub fn is_risky(&self) -> bool {
        matches!(
            self.expect,
            Expect::BindComplete { risky: true, .. }
                | Expect::StatementDescription { risky: true, .. }
                | Expect::Query { risky: true, .. }
        )
    }

    /// Entries that end with ReadyForQuery, the end of an implicit transaction.
    pub fn is_sync_point(&self) -> bool {
        match &self.expect {
            Expect::Sync | Expect::Query { .. } | Expect::FunctionCall => true,
            Expect::Local(f) => f.tag == b'Z',
            _ => false,
        }
    }
}
