//! What one server connection has prepared: server-side statement names and the row shape
//! each was prepared with. It travels with the connection through the pool, so a client that
//! gets the connection for its next transaction knows what is there already.
//!
//! Capped (`max_prepared_statements`): when full, the least recently used statement is
//! evicted and must be Closed on the server by the caller.

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::backend::Field;

#[derive(Debug, Clone)]
pub struct ServerStmt {
    /// The row shape as the server last described it; `None` until described.
    pub shape: Option<Arc<[Field]>>,
    /// The schema epoch the statement was prepared in.
    pub epoch: u64,
    last_used: u64,
    /// pgheal's own statement (the savepoint guard's): never evicted.
    pinned: bool,
}

#[derive(Debug)]
pub struct ServerPrepared {
    map: HashMap<Arc<str>, ServerStmt>,
    tick: u64,
    cap: usize,
    /// How many entries are pinned (outside the cap).
    pinned: usize,
}

impl ServerPrepared {
    pub fn new(cap: usize) -> Self {
        ServerPrepared {
            map: HashMap::new(),
            tick: 0,
            cap: cap.max(1),
            pinned: 0,
        }
    }

    pub fn get(&self, name: &str) -> Option<&ServerStmt> {
        self.map.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&Arc<[Field]>> {
        self.map.get(name).and_then(|s| s.shape.as_ref())
    }

    /// Mark a statement used (LRU order).
    pub fn touch(&mut self, name: &str) {
        self.tick += 1;
        if let Some(s) = self.map.get_mut(name) {
            s.last_used = self.tick;
        }
    }

    /// Record a Parse sent for `name`. Returns the statement evicted to stay under the cap, which
    /// the caller must Close on the server.
    pub fn prepared(&mut self, name: Arc<str>, epoch: u64) -> Option<Arc<str>> {
        self.record(name, epoch, false)
    }

    /// Record a Parse of one of pgheal's own statements, which stays until the connection is
    /// reset (it does not count against the cap and is never evicted).
    pub fn prepared_pinned(&mut self, name: Arc<str>, epoch: u64) {
        self.record(name, epoch, true);
    }

    fn record(&mut self, name: Arc<str>, epoch: u64, pinned: bool) -> Option<Arc<str>> {
        self.tick += 1;
        let full = self.map.len() - self.pinned >= self.cap;
        let evicted = if !pinned && !self.map.contains_key(&name) && full {
            let victim = self
                .map
                .iter()
                .filter(|(_, s)| !s.pinned)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(n, _)| n.clone());
            if let Some(v) = &victim {
                self.map.remove(v);
            }
            victim
        } else {
            None
        };
        if pinned && !self.map.contains_key(&name) {
            self.pinned += 1;
        }
        self.map.insert(
            name,
            ServerStmt {
                shape: None,
                epoch,
                last_used: self.tick,
                pinned,
            },
        );
        evicted
    }

    pub fn described(&mut self, name: &str, shape: Arc<[Field]>) {
        if let Some(s) = self.map.get_mut(name) {
            s.shape = Some(shape);
        }
    }

    pub fn closed(&mut self, name: &str) {
        if self.map.remove(name).is_some_and(|s| s.pinned) {
            self.pinned -= 1;
        }
    }

    /// After `DISCARD ALL` / `DEALLOCATE ALL` on the connection.
    pub fn clear(&mut self) {
        self.map.clear();
        self.pinned = 0;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut p = ServerPrepared::new(2);
        assert_eq!(p.prepared("a".into(), 0), None);
        assert_eq!(p.prepared("b".into(), 0), None);
        p.touch("a");
        assert_eq!(p.prepared("c".into(), 0).as_deref(), Some("b"));
        assert!(p.contains("a") && p.contains("c") && !p.contains("b"));
        // Re-preparing a present name evicts nothing.
        assert_eq!(p.prepared("a".into(), 1), None);
        assert_eq!(p.get("a").map(|s| s.epoch), Some(1));
    }

    #[test]
    fn pinned_statements_are_never_evicted() {
        let mut p = ServerPrepared::new(1);
        p.prepared_pinned("guard".into(), 0);
        assert_eq!(p.prepared("a".into(), 0), None);
        assert_eq!(p.prepared("b".into(), 0).as_deref(), Some("a"));
        assert!(p.contains("guard") && p.contains("b"));
        p.clear();
        assert!(!p.contains("guard"));
    }
}
