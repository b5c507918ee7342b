//! What the engine reports about heals: the session turns these into log lines and counters.

/// The `outcome` label of `pgheal_heal_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Re-prepared and replayed; the rows keep their shape.
    Healed,
    /// Re-prepared and replayed; rows and descriptions are projected onto the contract.
    Projected,
    /// The contract could not be kept (or the statement could not be re-prepared): the client
    /// received PostgreSQL's own answer.
    Refused,
    /// The error happened inside a transaction block that began in an earlier batch.
    ForwardedInTransaction,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Healed => "healed",
            Outcome::Projected => "projected",
            Outcome::Refused => "refused",
            Outcome::ForwardedInTransaction => "forwarded_in_transaction",
        }
    }
}

/// One heal, refusal or forwarded error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealEvent {
    pub outcome: Outcome,
    /// The client's statement name, for display (not UTF-8 shows as U+FFFD).
    pub statement: String,
    /// The SQL text, cut to 200 characters.
    pub sql: String,
    /// What changed, in words ("3 columns → 4, projected", "column \"b\" is gone", ...).
    pub detail: String,
}

/// SQL (bytes in the client's encoding) cut to at most 200 characters for logs; what is not
/// UTF-8 shows as U+FFFD.
pub fn truncate_sql(sql: &[u8]) -> String {
    const MAX: usize = 200;
    // 4 bytes per character at most: cut long texts before converting them.
    let sql = String::from_utf8_lossy(&sql[..sql.len().min(MAX * 4 + 4)]);
    match sql.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &sql[..i]),
        None => sql.into_owned(),
    }
}

impl super::Relay {
    /// The statement's name and its SQL cut for logs, as a heal event names them; empty
    /// strings when the statement is no longer registered.
    pub(crate) fn statement_label(&self, id: crate::statements::StmtId) -> (String, String) {
        self.stmts
            .get(id)
            .map(|s| {
                (
                    String::from_utf8_lossy(&s.name).into_owned(),
                    truncate_sql(&s.sql),
                )
            })
            .unwrap_or_default()
    }
}
