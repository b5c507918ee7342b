//! A session's kill switch: `KILL_CLIENT`, `KILL db`, shutdown and an online restart's request
//! to move all wake the session through it.
//!
//! Why not `tokio::sync::watch`: a watch channel allocates its shared state apart (328 bytes:
//! the value's lock and eight `Notify` for its receivers), one per logged-in client, while a
//! session has one waiter and the value only ever goes one way. Here the switch is a counter
//! and one `Notify`, kept inline in the client's [`super::clients::ClientTrack`] (issue 14:
//! memory per idle client). Each [`KillWatch`] remembers the last count it saw, so a watcher
//! checks for news with one atomic load and takes no lock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Fired any number of times; never reset.
#[derive(Debug, Default)]
pub struct KillSwitch {
    /// How many times it was fired.
    fired: AtomicU32,
    notify: Notify,
}

impl KillSwitch {
    /// A switch already fired once when `fired` (a client logging in during shutdown).
    pub fn new(fired: bool) -> Self {
        KillSwitch {
            fired: AtomicU32::new(u32::from(fired)),
            notify: Notify::new(),
        }
    }

    /// Wake every watcher; what they find is up to the caller (a kill, or a request to move).
    pub fn fire(&self) {
        self.fired.fetch_add(1, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn count(&self) -> u32 {
        self.fired.load(Ordering::Acquire)
    }

    /// Completes once the switch has been fired more (or less: it cannot) than `seen` times;
    /// the count then. `wait_past(0)`: once it was ever fired.
    pub async fn wait_past(&self, seen: u32) -> u32 {
        loop {
            // Registered before the count is read: a firing between the two still wakes it.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.count();
            if now != seen {
                return now;
            }
            notified.await;
        }
    }
}

/// Something that holds a kill switch (shared behind an `Arc`).
pub trait HasKillSwitch: Send + Sync {
    fn kill_switch(&self) -> &KillSwitch;
}

/// A watcher of one switch. New watchers have seen nothing, so a switch fired before they were
/// made wakes them at once.
#[derive(Debug)]
pub struct KillWatch<H> {
    holder: Arc<H>,
    seen: u32,
}

impl<H> Clone for KillWatch<H> {
    fn clone(&self) -> Self {
        KillWatch {
            holder: self.holder.clone(),
            seen: self.seen,
        }
    }
}

impl<H: HasKillSwitch> KillWatch<H> {
    pub fn new(holder: Arc<H>) -> Self {
        KillWatch { holder, seen: 0 }
    }

    /// Whether the switch was ever fired.
    pub fn fired(&self) -> bool {
        self.holder.kill_switch().count() > 0
    }

    /// Whether it was fired since this watcher last saw it (one atomic load, no lock).
    pub fn has_changed(&self) -> bool {
        self.holder.kill_switch().count() != self.seen
    }

    /// Count everything fired so far as seen: only a later firing wakes [`Self::changed`].
    pub fn mark_seen(&mut self) {
        self.seen = self.holder.kill_switch().count();
    }

    /// Completes once the switch is fired after what this watcher has seen (at once if it
    /// already was), and marks it seen. Cancel-safe.
    pub async fn changed(&mut self) {
        self.seen = self.holder.kill_switch().wait_past(self.seen).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Holder(KillSwitch);
    impl HasKillSwitch for Holder {
        fn kill_switch(&self) -> &KillSwitch {
            &self.0
        }
    }

    async fn wakes(w: &mut KillWatch<Holder>) -> bool {
        tokio::time::timeout(Duration::from_millis(200), w.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_watcher_wakes_for_each_firing_after_what_it_saw() {
        let h = Arc::new(Holder(KillSwitch::new(false)));
        let mut w = KillWatch::new(h.clone());
        assert!(!w.fired() && !w.has_changed());
        assert!(!wakes(&mut w).await, "nothing fired yet");
        h.0.fire();
        assert!(w.fired() && w.has_changed());
        assert!(wakes(&mut w).await);
        assert!(!w.has_changed(), "seen");
        assert!(!wakes(&mut w).await, "fired once, seen once");
        let mut later = w.clone();
        later.mark_seen();
        h.0.fire();
        assert!(
            wakes(&mut later).await,
            "a second firing wakes a watcher that saw the first"
        );
    }

    #[tokio::test]
    async fn a_switch_fired_before_the_watcher_was_made_wakes_it_at_once() {
        let h = Arc::new(Holder(KillSwitch::new(true)));
        let mut w = KillWatch::new(h);
        assert!(w.fired());
        assert!(wakes(&mut w).await);
    }

    #[tokio::test]
    async fn a_waiting_watcher_is_woken_by_a_firing_from_another_task() {
        let h = Arc::new(Holder(KillSwitch::new(false)));
        let mut w = KillWatch::new(h.clone());
        let waiter = tokio::spawn(async move { wakes(&mut w).await });
        tokio::task::yield_now().await;
        h.0.fire();
        assert!(waiter.await.unwrap());
    }
}
