//! A limit whose size can change while it is in use: a pool's connections (`pool_size`) and
//! the clients pgheal accepts (`max_client_conn`), both changed by `RELOAD` and `SET`.
//!
//! A tokio [`Semaphore`] can grow (`add_permits`) but only shrink by the permits that are free
//! at that moment. When fewer are free than the limit drops by, the rest is a *debt*: each
//! [`Slot`] given back while a debt is owed is forgotten instead of returned, until the
//! semaphore holds exactly the new size. Nothing already granted is taken away: a smaller pool
//! gets smaller as its connections come back, as PgBouncer's does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// A resizable limit. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Capacity {
    permits: Arc<Semaphore>,
    debt: Arc<AtomicUsize>,
    /// The current limit; resizes are serialized by this lock.
    size: Mutex<usize>,
}

/// One unit of a [`Capacity`], held while in use.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    debt: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(p) = self.permit.take() else { return };
        let owed = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1));
        if owed.is_ok() {
            p.forget();
        }
    }
}

impl Capacity {
    pub fn new(size: usize) -> Capacity {
        Capacity {
            permits: Arc::new(Semaphore::new(size)),
            debt: Arc::new(AtomicUsize::new(0)),
            size: Mutex::new(size),
        }
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            permit: Some(permit),
            debt: self.debt.clone(),
        }
    }

    /// A slot if one is free now.
    pub fn try_acquire(&self) -> Option<Slot> {
        let p = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.slot(p))
    }

    /// Wait for a free slot. Cancel-safe. Fails only if the limit is closed.
    pub async fn acquire(&self) -> Result<Slot, AcquireError> {
        let p = self.permits.clone().acquire_owned().await?;
        Ok(self.slot(p))
    }

    /// The current limit.
    pub fn size(&self) -> usize {
        self.size.lock().map_or(0, |s| *s)
    }

    /// Slots held now (some of them may belong to a larger limit from before a resize).
    pub fn in_use(&self) -> usize {
        let size = self.size();
        (size + self.debt.load(Ordering::Acquire)).saturating_sub(self.permits.available_permits())
    }

    /// Change the limit. Held slots are kept; a smaller limit takes effect as they are given
    /// back.
    pub fn resize(&self, new: usize) {
        let Ok(mut size) = self.size.lock() else {
            return;
        };
        let old = *size;
        *size = new;
        if new > old {
            // Cancel what is still owed first, then add the rest.
            let mut grow = new - old;
            let paid = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    Some(d - d.min(grow))
                })
                .map_or(0, |d| d.min(grow));
            grow -= paid;
            self.permits.add_permits(grow);
        } else if new < old {
            let shrink = old - new;
            let forgotten = self.permits.forget_permits(shrink);
            self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_below_what_is_held_waits_for_slots_to_come_back() {
        let c = Capacity::new(3);
        let a = c.try_acquire().unwrap();
        let b = c.try_acquire().unwrap();
        c.resize(1);
        assert_eq!(c.size(), 1);
        assert_eq!(c.in_use(), 2);
        assert!(
            c.try_acquire().is_none(),
            "no slot while over the new limit"
        );
        drop(a);
        assert!(
            c.try_acquire().is_none(),
            "the first slot back pays the debt"
        );
        drop(b);
        let again = c.try_acquire().expect("one slot under the new limit");
        assert!(c.try_acquire().is_none());
        drop(again);
        assert_eq!(c.in_use(), 0);
    }

    #[test]
    fn growing_cancels_the_debt_before_adding_slots() {
        let c = Capacity::new(2);
        let a = c.try_acquire().unwrap();
        let b = c.try_acquire().unwrap();
        c.resize(0);
        c.resize(3);
        assert_eq!(c.in_use(), 2);
        let d = c.try_acquire().expect("one free slot in a limit of 3");
        assert!(c.try_acquire().is_none());
        drop((a, b, d));
        let held: Vec<Slot> = (0..3).filter_map(|_| c.try_acquire()).collect();
        assert_eq!(held.len(), 3);
        assert!(c.try_acquire().is_none());
    }

    #[test]
    fn free_slots_are_removed_at_once() {
        let c = Capacity::new(5);
        c.resize(2);
        let held: Vec<Slot> = (0..5).filter_map(|_| c.try_acquire()).collect();
        assert_eq!(held.len(), 2);
    }
}
