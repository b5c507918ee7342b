//! A client that leaves mid-batch: bringing its server connection to rest.
//!
//! When a client closes its socket (or sends Terminate) PostgreSQL still executes every message
//! it had received, then ends the session, which rolls back whatever was not committed: an open
//! transaction block, and an implicit transaction whose segment no Sync ended. A pooled server
//! connection cannot end its session, so pgheal does the equivalent on it before the connection
//! serves anyone else:
//!
//! 1. The messages already sent, and those still deferred, run to their answers as usual (the
//!    answers go nowhere); a Flush makes the server send answers it still buffers.
//! 2. COPY FROM STDIN in progress is failed with CopyFail.
//! 3. A segment without Sync is made to fail (a Parse that cannot succeed) before pgheal's own
//!    Sync, so the server rolls its implicit transaction back as a closed session would — a
//!    bare Sync would commit writes the client never saw acknowledged. After an error the server
//!    already skips to Sync, and the Sync alone is enough.
//! 4. Once the last answer is ReadyForQuery, the session hands the connection back with that
//!    status; the pool rolls back an open transaction block and runs the reset query.
//!
//! The session bounds the whole wait (`SERVER_DRAIN_TIMEOUT`, src/session/checkout.rs); a
//! server that does not come to rest in time is closed, never handed out in an unknown state.

use crate::protocol::backend::TxStatus;
use crate::protocol::encode;
use crate::statements::ServerPrepared;

use super::outbox::Outbox;
use super::pending::{Action, Expect, Pending};
use super::relay::{Relay, RelayError, ServerInput};

/// Where a server connection stands after its client left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    /// Every answer arrived and the last was ReadyForQuery with this status.
    Ready(TxStatus),
    /// Answers are still due: feed the server's messages to [`Relay::on_server`] and ask again.
    Waiting,
}

impl Relay {
    /// One step of bringing the server connection to rest after the client left. Call it once
    /// when the client is gone and again after each batch of server messages; it sends what the
    /// server needs (CopyFail, a failing Parse, Sync) when it needs it, and says when the
    /// connection is at rest.
    pub fn wind_down(
        &mut self,
        srv: &mut ServerPrepared,
        out: &mut Outbox,
    ) -> Result<Rest, RelayError> {
        if self.input == ServerInput::CopyIn {
            // The COPY waits for data that will never come.
            self.client_message(encode::copy_fail("client disconnected"), None, srv, out)?;
            return Ok(Rest::Waiting);
        }
        if !self.is_quiet() {
            // The server keeps the answers of a batch the client ended with neither Flush nor
            // Sync in its output buffer: without a Flush they would never come, and the
            // connection would be closed at the drain timeout (found by tests/it/chaos.rs).
            // A Flush has no answer of its own, so it changes nothing the engine expects.
            out.to_server
                .push(encode::raw(crate::protocol::frontend::FLUSH, b"").bytes);
            return Ok(Rest::Waiting);
        }
        if self.at_ready {
            return Ok(Rest::Ready(self.status));
        }
        // A segment the client never ended with Sync, or one the server skips after an error.
        if self.input == ServerInput::Normal {
            out.to_server
                .push(encode::parse("", "pgheal: client disconnected mid-batch", &[]).bytes);
            self.push_pending(Pending {
                expect: Expect::ParseComplete,
                idx: None,
                action: Action::Swallow,
            });
        }
        self.client_message(encode::sync(), None, srv, out)?;
        Ok(Rest::Waiting)
    }
}
