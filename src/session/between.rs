//! What the relay loop does for session state in transaction pooling, kept out of the loop
//! itself: LISTEN/UNLISTEN answered by pgheal ([`super::listen`]), the session-state check
//! and pin at the end of a transaction ([`super::pin`]), and notifications written to the
//! client between its transactions. The loop calls in only for clients that listen or may
//! hold session state; for every other client it releases the connection as before.

use crate::heal::Outbox;
use crate::net::ClientWriter;
use crate::protocol::backend::TxStatus;
use crate::protocol::{encode, sqlstate, Frame};

use super::listen::Position;
use super::listen_sql;
use super::relay_loop::{Conversation, End};
use super::SessionError;

impl Conversation<'_> {
    /// Transaction pooling: whether anything besides releasing the connection may be due at a
    /// transaction boundary (cheap; false for clients that never listened or made state).
    #[inline]
    pub(super) fn has_session_state(&self) -> bool {
        self.pin.is_active() || self.listen.is_active()
    }

    /// Transaction pooling: a simple query that pgheal answers itself (LISTEN/UNLISTEN). True
    /// when it was answered (into `out.to_client`, in order after what is already there).
    /// Not cancel-safe.
    pub(super) async fn answer_listen(&mut self, f: &Frame, out: &mut Outbox) -> bool {
        let sql = listen_sql::query_text(f);
        if !listen_sql::may_be_listen(sql) {
            return false;
        }
        let at = match self.engine.status() {
            TxStatus::Idle if self.engine.at_transaction_boundary() => Position::Idle,
            TxStatus::InTransaction if self.engine.is_quiet() => Position::InBlock,
            _ => Position::Elsewhere,
        };
        let pinned = self.pin.is_pinned();
        self.listen
            .on_query(sql, at, pinned, &self.pool, &mut out.to_client)
            .await
    }

    /// Transaction pooling, after each step of the relay loop for a client with session
    /// state: at a transaction boundary, check the connection and keep it (pinned) or release
    /// it; apply LISTENs committed in a block; write waiting notifications. `Some` ends the
    /// session (the client was told why). Not cancel-safe.
    pub(super) async fn between_transactions(
        &mut self,
        client_w: &mut ClientWriter,
        out: &mut Outbox,
    ) -> Result<Option<End>, SessionError> {
        let boundary = self.engine.at_transaction_boundary();
        if boundary {
            if let Some(c) = self.attached.as_mut() {
                if self.pin.due() {
                    if let Err(e) = self.pin.settle(c.conn(), &mut out.to_client).await {
                        tracing::info!(parent: &self.engine.span, error = %e, "server connection lost while checking its session state");
                        out.to_client.push(
                            encode::error_response(
                                "FATAL",
                                sqlstate::CONNECTION_FAILURE,
                                "pgheal: the server connection holding this session's state was lost",
                            )
                            .bytes,
                        );
                        let _ = client_w.write_parts(&mut out.to_client).await;
                        out.to_client.clear();
                        return Ok(Some(End::ServerGone));
                    }
                }
                if !self.pin.is_pinned() {
                    self.detach().await?;
                }
            }
        }
        self.listen.apply_committed(&self.pool).await;
        let mut end = None;
        if boundary {
            if let Err(why) = self.listen.deliver(&mut out.to_client) {
                tracing::info!(parent: &self.engine.span, reason = why.label(), "closing a listening client");
                self.metrics
                    .listen_clients_closed
                    .with_label_values(&[why.label()])
                    .inc();
                out.to_client.push(why.fatal().bytes);
                end = Some(End::NotificationsLost);
            }
        }
        if !out.to_client.is_empty() {
            let written = client_w.write_parts(&mut out.to_client).await;
            out.to_client.clear();
            if written.is_err() {
                return Ok(Some(End::ClientGone));
            }
        }
        Ok(end)
    }
}
