//! A cap on the server connections of several pools: `max_db_connections` (every pool of a
//! database) and `max_user_connections` (every pool of a server user).
//!
//! Unlike a pool's own permit, which is held only while a connection is checked out, a slot of
//! a shared limit is held by the connection itself for as long as it is open, idle included:
//! PgBouncer counts open server connections. So a pool that wants a new connection while the
//! database is at its cap may find every slot held by *idle* connections of other pools; as
//! PgBouncer (`evict_connection`, `evict_user_connection`), it then closes one of those to make
//! room. A client over the cap waits (within `query_wait_timeout`); it is not refused.
//!
//! Deadlock freedom: a checkout never holds one shared slot while waiting for another. It
//! takes both the database's and the user's slot at once or neither ([`try_take`]), and
//! between tries it evicts an idle connection or sleeps a short tick.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Semaphore;

use super::bounded::Pool;
use super::capacity::{Capacity, Slot};

/// A shared cap; 0 = no limit.
pub struct SharedLimit {
    /// `max_db_connections` or `max_user_connections`, for logs.
    pub key: &'static str,
    /// The database or server user it caps.
    pub name: String,
    limit: AtomicUsize,
    cap: Capacity,
    pools: Mutex<Vec<Weak<Pool>>>,
}

impl std::fmt::Debug for SharedLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({}={})", self.key, self.name, self.limit())
    }
}

/// The capacity used for "no limit": the most a semaphore holds.
const UNLIMITED: usize = Semaphore::MAX_PERMITS;

fn capacity_for(limit: usize) -> usize {
    if limit == 0 {
        UNLIMITED
    } else {
        limit
    }
}

impl SharedLimit {
    pub fn new(key: &'static str, name: &str, limit: usize) -> Arc<SharedLimit> {
        Arc::new(SharedLimit {
            key,
            name: name.to_owned(),
            limit: AtomicUsize::new(limit),
            cap: Capacity::new(capacity_for(limit)),
            pools: Mutex::new(Vec::new()),
        })
    }

    /// The limit in force (0 = none).
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Open server connections counted against it.
    pub fn in_use(&self) -> usize {
        self.cap.in_use()
    }

    /// More connections are open than the limit allows (it was lowered by a reload): a
    /// connection given back is then closed instead of kept idle.
    pub fn over(&self) -> bool {
        let limit = self.limit();
        limit > 0 && self.in_use() > limit
    }

    /// Change the limit (a reload): a smaller one takes effect as connections close.
    pub fn set(&self, limit: usize) {
        if self.limit.swap(limit, Ordering::AcqRel) != limit {
            self.cap.resize(capacity_for(limit));
        }
    }

    /// A pool whose idle connections may be closed to make room.
    pub fn register(&self, pool: &Arc<Pool>) {
        if let Ok(mut v) = self.pools.lock() {
            v.retain(|p| p.strong_count() > 0);
            v.push(Arc::downgrade(pool));
        }
    }

    /// Close one idle connection of another pool under this limit (the pool with the most
    /// idle connections, its oldest). Whether one was closed.
    pub fn evict_one(&self, except: &Pool) -> bool {
        let pools: Vec<Arc<Pool>> = match self.pools.lock() {
            Ok(v) => v.iter().filter_map(Weak::upgrade).collect(),
            Err(_) => return false,
        };
        let victim = pools
            .iter()
            .filter(|p| !std::ptr::eq(Arc::as_ptr(p), except))
            .max_by_key(|p| p.idle_count());
        match victim {
            Some(p) if p.idle_count() > 0 => {
                let closed = p.close_oldest_idle();
                if closed {
                    tracing::info!(limit = self.key, name = %self.name, pool = ?p, "closing an idle server connection of another pool to make room");
                }
                closed
            }
            _ => false,
        }
    }
}

/// The shared slots one open server connection holds (dropped when it closes).
#[derive(Debug, Default)]
pub struct SharedSlots {
    _db: Option<Slot>,
    _user: Option<Slot>,
}

/// Both slots, or none (no hold-and-wait between the two limits).
pub fn try_take(db: &SharedLimit, user: &SharedLimit) -> Option<SharedSlots> {
    let d = db.cap.try_acquire()?;
    let u = user.cap.try_acquire()?;
    Some(SharedSlots {
        _db: Some(d),
        _user: Some(u),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_slots_or_none_and_zero_is_no_limit() {
        let db = SharedLimit::new("max_db_connections", "d", 1);
        let user = SharedLimit::new("max_user_connections", "u", 0);
        let a = try_take(&db, &user).expect("under both limits");
        assert_eq!(db.in_use(), 1);
        assert_eq!(user.in_use(), 1);
        assert!(try_take(&db, &user).is_none());
        assert_eq!(user.in_use(), 1, "the user's slot is not kept on failure");
        db.set(2);
        let b = try_take(&db, &user).expect("after growing");
        db.set(0);
        let c = try_take(&db, &user).expect("no limit");
        drop((a, b, c));
        assert_eq!(db.in_use(), 0);
        db.set(1);
        assert!(try_take(&db, &user).is_some());
    }
}
