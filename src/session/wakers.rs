//! How the relay loop knows what woke it. The loop waits on both sockets, the shutdown watch,
//! the mailbox of notifications and its timers at once; giving each socket a waker of its own
//! lets a wake-up read the socket it came from instead of polling both every time. This is
//! task-waking machinery, apart from the loop so that the loop reads as the conversation it
//! relays.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use crate::net::NetError;

/// What woke the relay loop.
pub(super) enum Woke {
    Shutdown,
    Server(Result<bool, NetError>),
    Client(Result<bool, NetError>),
    /// Notifications are waiting for the client.
    Mail,
    /// The session's timeout timer fired.
    Timer,
    /// Time to look whether `server_fast_close` applies.
    FastClose,
}

/// A waker of one socket: records that this socket is ready, then wakes the session's task.
struct SocketWaker {
    woken: AtomicBool,
    task: Waker,
}

impl Wake for SocketWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// The session task's waker and one waker per socket wrapping it. Built once per session (and
/// again should the task's waker change).
pub(super) struct Wakers {
    pub(super) task: Waker,
    pub(super) server: Woken,
    pub(super) server_waker: Waker,
    pub(super) client: Woken,
    pub(super) client_waker: Waker,
}

/// The flag of one socket's waker.
pub(super) struct Woken(Arc<SocketWaker>);

impl Woken {
    /// Whether the socket's waker fired since the last call.
    pub(super) fn take(&self) -> bool {
        // A plain load first: the swap is a locked instruction, and most calls find no wake.
        self.0.woken.load(Ordering::Relaxed) && self.0.woken.swap(false, Ordering::Acquire)
    }
}

impl Wakers {
    pub(super) fn new(task: &Waker) -> Wakers {
        let socket = || {
            Arc::new(SocketWaker {
                woken: AtomicBool::new(false),
                task: task.clone(),
            })
        };
        let (server, client) = (socket(), socket());
        Wakers {
            task: task.clone(),
            server_waker: Waker::from(server.clone()),
            server: Woken(server),
            client_waker: Waker::from(client.clone()),
            client: Woken(client),
        }
    }
}
