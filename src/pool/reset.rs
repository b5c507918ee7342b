//! Making a server connection fit for the next client.
//!
//! A connection left inside a transaction is rolled back first (`DISCARD ALL` cannot run inside
//! a transaction block). Then `server_reset_query` (default `DISCARD ALL`) drops prepared
//! statements, temporary tables, session settings, advisory locks and LISTENs. Any error means
//! the connection is closed instead of re-used.

use crate::protocol::backend::TxStatus;

use super::server::ServerConn;

/// Reset `conn`; on failure the connection comes back with the reason, to be closed.
/// Not cancel-safe.
pub async fn reset(
    mut conn: ServerConn,
    status: TxStatus,
    reset_query: &str,
) -> Result<ServerConn, (ServerConn, String)> {
    if status != TxStatus::Idle {
        match conn.simple_query("ROLLBACK").await {
            Ok(None) => {}
            Ok(Some(_)) => return Err((conn, "ROLLBACK failed".into())),
            Err(e) => return Err((conn, e.to_string())),
        }
    }
    if !reset_query.trim().is_empty() {
        // Whatever the reset query is, assume it may drop prepared statements and settings.
        conn.prepared.clear();
        conn.applied_settings = 0;
        match conn.simple_query(reset_query).await {
            Ok(None) => {}
            Ok(Some(_)) => return Err((conn, "server_reset_query failed".into())),
            Err(e) => return Err((conn, e.to_string())),
        }
    }
    Ok(conn)
}
