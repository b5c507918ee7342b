//! The responses the relay expects from the server, in order, and what to do with each.

use crate::statements::StmtId;

/// What a message sent to the server will produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Parse → ParseComplete.
    ParseComplete,
    /// Bind → BindComplete. `risky`: the statement returns rows and the batch is healable.
    BindComplete { stmt: Option<StmtId>, risky: bool },
    /// Describe 'S' → ParameterDescription, then RowDescription or NoData.
    StatementDescription { stmt: Option<StmtId>, risky: bool },
    /// Describe 'P' → RowDescription or NoData.
    PortalDescription { stmt: Option<StmtId> },
    /// Execute → DataRow*, then CommandComplete / EmptyQueryResponse / PortalSuspended
    /// (COPY sub-protocol messages in between).
    ExecuteResult { stmt: Option<StmtId> },
    /// Close → CloseComplete.
    CloseComplete,
    /// Sync → ReadyForQuery.
    Sync,
    /// Query (simple protocol) → anything, up to ReadyForQuery. `risky`: it EXECUTEs a tracked
    /// SQL-level prepared statement in a healable batch.
    Query { risky: bool },
    /// FunctionCall → FunctionCallResponse or error, then ReadyForQuery.
    FunctionCall,
}

/// What to do with the responses of one pending entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Forward,
    /// pgheal's own message: the client never sees its responses.
    Swallow,
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
                | Expect::Query { risky: true }
        )
    }

    /// Entries that end with ReadyForQuery, the end of an implicit transaction.
    pub fn is_sync_point(&self) -> bool {
        matches!(
            self.expect,
            Expect::Sync | Expect::Query { .. } | Expect::FunctionCall
        )
    }
}
