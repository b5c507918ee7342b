//! Making a server connection fit for the next client.
//!
//! A connection left inside a transaction is rolled back first (`DISCARD ALL` cannot run inside
//! a transaction block). Then `server_reset_query` (default `DISCARD ALL`) drops prepared
//! statements, temporary tables, session settings, advisory locks and LISTENs. Any error means
//! the connection is closed instead of re-used, and so does a reset that takes longer than
//! [`RESET_TIMEOUT`].

use std::time::Duration;

use crate::protocol::backend::TxStatus;

use super::server::ServerConn;

/// How long a reset (ROLLBACK, then the reset query) may take before the connection is closed
/// instead: a server that does not answer must not hold a pool slot for ever.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(10);

/// Reset `conn`; on failure, the reason (the caller closes the connection). Not cancel-safe:
/// a cancelled reset leaves the connection in an unknown state, to be closed.
pub async fn reset(
    conn: &mut ServerConn,
    status: TxStatus,
    reset_query: &str,
) -> Result<(), String> {
    if status != TxStatus::Idle {
        match conn.simple_query("ROLLBACK").await {
            Ok(None) => {}
            Ok(Some(_)) => return Err("ROLLBACK failed".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    if !reset_query.trim().is_empty() {
        // Whatever the reset query is, assume it may drop prepared statements and settings.
        conn.prepared.clear();
        conn.applied_settings = 0;
        match conn.simple_query(reset_query).await {
            Ok(None) => {}
            Ok(Some(_)) => return Err("server_reset_query failed".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}
