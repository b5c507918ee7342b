//! What one server connection has prepared: server-side statement names and the row shape
//! each was prepared with. It travels with the connection through the pool, so a client that
//! gets the connection for its next transaction knows what is there already.
//!
//! Names are bytes: the client's own in session pooling (in its encoding), pgheal's `pgheal_N`
//! in transaction pooling.
//!
//! Capped (`max_prepared_statements`): when full, the least recently used statement is
//! evicted and must be Closed on the server by the caller.

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::backend::Field;

use super::NameMemo;

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

/// Statements live in a vector with a name index beside it; the slot of the last name looked
/// up is remembered, so the Bind after Bind of the same statement (the common case: the relay
/// asks for it several times per Bind) compares one name instead of hashing it each time.
#[derive(Debug)]
pub struct ServerPrepared {
    entries: Vec<(Arc<[u8]>, ServerStmt)>,
    index: HashMap<Arc<[u8]>, usize>,
    /// The slot of the last name found; cleared whenever an entry is added or removed.
    last: NameMemo<usize>,
    tick: u64,
    cap: usize,
    /// How many entries are pinned (outside the cap).
    pinned: usize,
}

impl ServerPrepared {
    pub fn new(cap: usize) -> Self {
        ServerPrepared {
            entries: Vec::new(),
            index: HashMap::new(),
            last: NameMemo::default(),
            tick: 0,
            cap: cap.max(1),
            pinned: 0,
        }
    }

    /// The slot of `name`.
    fn slot(&self, name: &[u8]) -> Option<usize> {
        if let Some(i) = self.last.get(name) {
            return Some(i);
        }
        let i = *self.index.get(name)?;
        self.last.set(name, i);
        Some(i)
    }

    pub fn get(&self, name: &[u8]) -> Option<&ServerStmt> {
        self.slot(name).map(|i| &self.entries[i].1)
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.slot(name).is_some()
    }

    pub fn shape(&self, name: &[u8]) -> Option<&Arc<[Field]>> {
        self.get(name).and_then(|s| s.shape.as_ref())
    }

    /// Mark a statement used (LRU order).
    pub fn touch(&mut self, name: &[u8]) {
        self.tick += 1;
        if let Some(i) = self.slot(name) {
            self.entries[i].1.last_used = self.tick;
        }
    }

    /// Remove the statement in slot `i` (the last slot moves into it).
    fn remove_slot(&mut self, i: usize) -> Arc<[u8]> {
        self.last.clear();
        let (name, stmt) = self.entries.swap_remove(i);
        if stmt.pinned {
            self.pinned -= 1;
        }
        self.index.remove(&name);
        if let Some((moved, _)) = self.entries.get(i) {
            if let Some(slot) = self.index.get_mut(moved) {
                *slot = i;
            }
        }
        name
    }

    /// Record a Parse sent for `name`. Returns the statement evicted to stay under the cap, which
    /// the caller must Close on the server.
    pub fn prepared(&mut self, name: Arc<[u8]>, epoch: u64) -> Option<Arc<[u8]>> {
        self.record(name, epoch, false)
    }

    /// Record a Parse of one of pgheal's own statements, which stays until the connection is
    /// reset (it does not count against the cap and is never evicted).
    pub fn prepared_pinned(&mut self, name: Arc<[u8]>, epoch: u64) {
        self.record(name, epoch, true);
    }

    fn record(&mut self, name: Arc<[u8]>, epoch: u64, pinned: bool) -> Option<Arc<[u8]>> {
        self.tick += 1;
        let stmt = ServerStmt {
            shape: None,
            epoch,
            last_used: self.tick,
            pinned,
        };
        if let Some(i) = self.slot(&name) {
            let was = std::mem::replace(&mut self.entries[i].1, stmt);
            if was.pinned != pinned {
                if pinned {
                    self.pinned += 1;
                } else {
                    self.pinned -= 1;
                }
            }
            return None;
        }
        let evicted = if !pinned && self.entries.len() - self.pinned >= self.cap {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, (_, s))| !s.pinned)
                .min_by_key(|(_, (_, s))| s.last_used)
                .map(|(i, _)| i);
            victim.map(|i| self.remove_slot(i))
        } else {
            None
        };
        if pinned {
            self.pinned += 1;
        }
        self.last.clear();
        self.index.insert(name.clone(), self.entries.len());
        self.entries.push((name, stmt));
        evicted
    }

    pub fn described(&mut self, name: &[u8], shape: Arc<[Field]>) {
        if let Some(i) = self.slot(name) {
            self.entries[i].1.shape = Some(shape);
        }
    }

    pub fn closed(&mut self, name: &[u8]) {
        if let Some(i) = self.slot(name) {
            self.remove_slot(i);
        }
    }

    /// DDL ran on this connection. A statement prepared before it may keep plan inputs that no
    /// longer exist: parameter types inferred at Parse that name a dropped type fail every later
    /// Bind with `XX000 cache lookup failed for type`, where the client's own fresh Parse would
    /// have worked. Every unpinned statement is forgotten, so each is prepared again (Close +
    /// Parse, in the same pipeline) at its next use; until then the server may keep the old
    /// ones, which is harmless since every prepare closes its name first.
    pub fn forget_unpinned(&mut self) {
        self.last.clear();
        self.entries.retain(|(_, s)| s.pinned);
        self.index.clear();
        for (i, (name, _)) in self.entries.iter().enumerate() {
            self.index.insert(name.clone(), i);
        }
    }

    /// After `DISCARD ALL` / `DEALLOCATE ALL` on the connection.
    pub fn clear(&mut self) {
        self.last.clear();
        self.pinned = 0;
        self.entries.clear();
        self.index.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str) -> Arc<[u8]> {
        name.as_bytes().into()
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut p = ServerPrepared::new(2);
        assert_eq!(p.prepared(n("a"), 0), None);
        assert_eq!(p.prepared(n("b"), 0), None);
        p.touch(b"a");
        assert_eq!(p.prepared(n("c"), 0).as_deref(), Some(&b"b"[..]));
        assert!(p.contains(b"a") && p.contains(b"c") && !p.contains(b"b"));
        // Re-preparing a present name evicts nothing.
        assert_eq!(p.prepared(n("a"), 1), None);
        assert_eq!(p.get(b"a").map(|s| s.epoch), Some(1));
    }

    #[test]
    fn pinned_statements_are_never_evicted() {
        let mut p = ServerPrepared::new(1);
        p.prepared_pinned(n("guard"), 0);
        assert_eq!(p.prepared(n("a"), 0), None);
        assert_eq!(p.prepared(n("b"), 0).as_deref(), Some(&b"a"[..]));
        assert!(p.contains(b"guard") && p.contains(b"b"));
        p.closed(b"guard");
        assert_eq!(p.prepared(n("c"), 0).as_deref(), Some(&b"b"[..]));
        p.prepared_pinned(n("guard"), 0);
        p.clear();
        assert!(!p.contains(b"guard"));
        assert_eq!(p.prepared(n("d"), 0), None);
    }

    #[test]
    fn lookups_stay_right_as_slots_move() {
        let mut p = ServerPrepared::new(8);
        for name in ["a", "b", "c", "d"] {
            p.prepared(n(name), 0);
        }
        p.described(b"d", Vec::new().into());
        assert!(p.shape(b"d").is_some());
        // "d" was looked up last; removing "a" moves "d" into slot 0.
        p.closed(b"a");
        assert!(!p.contains(b"a"));
        assert!(p.shape(b"d").is_some());
        assert!(p.contains(b"b") && p.contains(b"c"));
        p.closed(b"d");
        assert!(!p.contains(b"d") && p.shape(b"d").is_none());
        assert_eq!(p.len(), 2);
        p.prepared(n("d"), 3);
        assert_eq!(p.get(b"d").map(|s| s.epoch), Some(3));
        assert_eq!(p.get(b"b").map(|s| s.epoch), Some(0));
        p.clear();
        assert!(p.is_empty() && !p.contains(b"b"));
        // Names that share a prefix are not confused by the remembered slot.
        p.prepared(n("s1"), 0);
        p.prepared(n("s10"), 1);
        assert!(p.contains(b"s1"));
        assert_eq!(p.get(b"s10").map(|s| s.epoch), Some(1));
        assert!(!p.contains(b"s"));
    }
}
