//! The wait of a transaction-pooling client between its transactions.
//!
//! Why a future of its own: a session's task holds, for the client's whole life, the largest
//! state any of its await points needs. The relay loop's state (frame batches, the outbox,
//! the per-socket wakers, the writes it awaits) is needed only while a transaction runs, and
//! a pooled client is idle most of the time. So the loop returns at each transaction boundary
//! with no server connection attached, the session waits here with little more than a
//! borrowed conversation, and the next step of the loop runs in a box of its own, allocated
//! when the client sends its next message and freed when that transaction ends (issue 14:
//! memory per idle client).
//!
//! What can end the wait is what the loop itself would have woken for at that point: the
//! client's next message (or its leaving), the kill switch (`KILL`, shutdown, an online
//! restart's request to move), notifications for a listening client, and the session's timer
//! (`client_idle_timeout`). Whatever woke it is handed to the loop, which handles it as if
//! it had woken the loop itself; so a client sees no difference.

use std::future::Future;
use std::task::Poll;

use crate::net::ClientReader;
use crate::protocol::Frame;

use super::clients::ClientTrack;
use super::kill::KillWatch;
use super::relay_loop::Conversation;
use super::wakers::Woke;

/// What ended a wait between transactions, for the relay loop to handle first.
pub(super) struct Wake {
    pub(super) woke: Woke,
    /// The client's frames, when the client woke it.
    pub(super) cframes: Vec<Frame>,
}

impl Conversation<'_> {
    /// Whether the session may wait outside the relay loop: transaction pooling, no server
    /// connection, nothing in flight and nothing held back.
    pub(super) fn may_idle(&self) -> bool {
        self.mode.per_transaction()
            && self.attached.is_none()
            && self.engine.at_transaction_boundary()
            && self.engine.backlog() == 0
    }

    /// Wait for whatever the relay loop must handle next. Cancel-safe (nothing is read or
    /// written but what it returns).
    pub(super) async fn idle(
        &mut self,
        client_r: &mut ClientReader,
        force: &mut KillWatch<ClientTrack>,
    ) -> Wake {
        let mut cframes = Vec::new();
        let read_mail = self.listen.has_mailbox();
        // As in the loop: the kill switch's waiter is polled again only when it was fired (a
        // registered waiter takes a lock to poll), and without the task's budget, so that its
        // first poll registers.
        let probe = force.clone();
        let changed = tokio::task::unconstrained(force.changed());
        tokio::pin!(changed);
        let mut armed = false;
        let woke = std::future::poll_fn(|cx| {
            if !armed || probe.has_changed() {
                armed = true;
                if changed.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Shutdown);
                }
            }
            if let Poll::Ready(r) = std::pin::pin!(client_r.read_frames(&mut cframes)).poll(cx) {
                return Poll::Ready(Woke::Client(r));
            }
            if read_mail && self.listen.poll_mail(cx).is_ready() {
                return Poll::Ready(Woke::Mail);
            }
            if self.timers.poll_fired(cx).is_ready() {
                return Poll::Ready(Woke::Timer);
            }
            Poll::Pending
        })
        .await;
        Wake { woke, cframes }
    }
}
