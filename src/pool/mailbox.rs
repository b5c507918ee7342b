//! A client's queue of notifications, between the listening connection's task (which pushes,
//! see [`super::listen`]) and the client's session (which takes them between its
//! transactions).
//!
//! The queue is bounded in bytes. A client inside a long transaction, or one that does not read
//! its socket, makes its queue grow; at the cap pgheal stops queueing for it and marks the
//! mailbox [`Broken::Overflow`]: the session delivers what is queued and then closes the
//! client with an error. Dropping notifications while the client stays connected would let it
//! believe it saw everything; stopping the listening connection instead would delay every
//! other client of the database. The same mark ([`Broken::ListenerLost`]) tells the session
//! that the listening connection died, so notifications may have been missed.
//!
//! A std mutex guards the queue: both sides hold it for a push or a swap of the queue, never
//! across an await.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

/// Bytes of notifications queued for one client before it is closed.
pub const MAX_QUEUED_BYTES: usize = 32 << 20;

/// One notification as the server sent it (a whole NotificationResponse frame).
#[derive(Debug, Clone)]
pub struct Notification {
    pub channel: Arc<str>,
    pub frame: Bytes,
}

/// Why a mailbox stopped taking notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// More than the cap waited for the client.
    Overflow,
    /// The listening connection was lost; notifications may have been missed.
    ListenerLost,
}

#[derive(Debug)]
pub struct Mailbox {
    inner: Mutex<Inbox>,
    cap: usize,
}

#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<Notification>,
    bytes: usize,
    broken: Option<Broken>,
    /// The session's waker, registered while it waits between transactions.
    waker: Option<Waker>,
}

impl Mailbox {
    pub fn new(cap: usize) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            inner: Mutex::new(Inbox::default()),
            cap,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // Nothing panics while holding the lock; a poisoned one still holds a valid queue.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a notification and wake the session. At the cap, the mailbox breaks instead.
    pub fn push(&self, n: Notification) {
        let waker = {
            let mut inbox = self.lock();
            if inbox.broken.is_some() {
                return;
            }
            if inbox.bytes + n.frame.len() > self.cap {
                inbox.broken = Some(Broken::Overflow);
            } else {
                inbox.bytes += n.frame.len();
                inbox.queue.push_back(n);
            }
            inbox.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Take no more notifications; the session learns why when it next takes the queue.
    pub fn break_with(&self, why: Broken) {
        let waker = {
            let mut inbox = self.lock();
            inbox.broken.get_or_insert(why);
            inbox.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ready when something is queued or the mailbox broke; otherwise the task's waker is
    /// registered.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inbox = self.lock();
        if !inbox.queue.is_empty() || inbox.broken.is_some() {
            return Poll::Ready(());
        }
        match &inbox.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inbox.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Move everything queued to `out` (in order); `Some` when the mailbox broke.
    pub fn take(&self, out: &mut VecDeque<Notification>) -> Option<Broken> {
        let mut inbox = self.lock();
        inbox.bytes = 0;
        if out.is_empty() {
            std::mem::swap(out, &mut inbox.queue);
        } else {
            out.extend(inbox.queue.drain(..));
        }
        inbox.broken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(channel: &str, n: usize) -> Notification {
        Notification {
            channel: Arc::from(channel),
            frame: Bytes::from(vec![b'A'; n]),
        }
    }

    #[test]
    fn keeps_order_and_breaks_at_the_cap() {
        let m = Mailbox::new(100);
        m.push(note("a", 40));
        m.push(note("b", 40));
        let mut out = VecDeque::new();
        assert_eq!(m.take(&mut out), None);
        let channels: Vec<&str> = out.iter().map(|n| &*n.channel).collect();
        assert_eq!(channels, ["a", "b"]);
        out.clear();
        // The count starts again after a take; the third push would pass 100 bytes.
        m.push(note("c", 40));
        m.push(note("d", 40));
        m.push(note("e", 40));
        m.push(note("f", 1));
        assert_eq!(m.take(&mut out), Some(Broken::Overflow));
        let channels: Vec<&str> = out.iter().map(|n| &*n.channel).collect();
        assert_eq!(
            channels,
            ["c", "d"],
            "what was queued before the cap is kept"
        );
    }

    #[test]
    fn wakes_the_session() {
        struct Flag(std::sync::atomic::AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let m = Mailbox::new(MAX_QUEUED_BYTES);
        assert!(m.poll_ready(&mut cx).is_pending());
        m.push(note("a", 10));
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(m.poll_ready(&mut cx).is_ready());
        let mut out = VecDeque::new();
        m.take(&mut out);
        assert!(m.poll_ready(&mut cx).is_pending());
        m.break_with(Broken::ListenerLost);
        assert!(m.poll_ready(&mut cx).is_ready());
        assert_eq!(m.take(&mut out), Some(Broken::ListenerLost));
    }
}
