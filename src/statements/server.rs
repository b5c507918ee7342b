//! What one server connection has prepared: server-side statement names and the row shape
//! each was prepared with. It travels with the connection through the pool, so a client that
//! gets the connection for its next transaction knows what is there already.
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
    entries: Vec<(Arc<str>, ServerStmt)>,
    index: HashMap<Arc<str>, usize>,
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
    fn slot(&self, name: &str) -> Option<usize> {
        if let Some(i) = self.last.get(name) {
            return Some(i);
        }
        let i = *self.index.get(name)?;
        self.last.set(name, i);
        Some(i)
    }

    pub fn get(&self, name: &str) -> Option<&ServerStmt> {
        self.slot(name).map(|i| &self.entries[i].1)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.slot(name).is_some()
    }

    pub fn shape(&self, name: &str) -> Option<&Arc<[Field]>> {
        self.get(name).and_then(|s| s.shape.as_ref())
    }

    /// Mark a statement used (LRU order).
    pub fn touch(&mut self, name: &str) {
        self.tick += 1;
        if let Some(i) = self.slot(name) {
            self.entries[i].1.last_used = self.tick;
        }
    }

    /// Remove the statement in slot `i` (the last slot moves into it).
    fn remove_slot(&mut self, i: usize) -> Arc<str> {
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

    pub fn described(&mut self, name: &str, shape: Arc<[Field]>) {
        if let Some(i) = self.slot(name) {
            self.entries[i].1.shape = Some(shape);
        }
    }

    pub fn closed(&mut self, name: &str) {
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
        p.closed("guard");
        assert_eq!(p.prepared("c".into(), 0).as_deref(), Some("b"));
        p.prepared_pinned("guard".into(), 0);
        p.clear();
        assert!(!p.contains("guard"));
        assert_eq!(p.prepared("d".into(), 0), None);
    }

    #[test]
    fn lookups_stay_right_as_slots_move() {
        let mut p = ServerPrepared::new(8);
        for n in ["a", "b", "c", "d"] {
            p.prepared(n.into(), 0);
        }
        p.described("d", Vec::new().into());
        assert!(p.shape("d").is_some());
        // "d" was looked up last; removing "a" moves "d" into slot 0.
        p.closed("a");
        assert!(!p.contains("a"));
        assert!(p.shape("d").is_some());
        assert!(p.contains("b") && p.contains("c"));
        p.closed("d");
        assert!(!p.contains("d") && p.shape("d").is_none());
        assert_eq!(p.len(), 2);
        p.prepared("d".into(), 3);
        assert_eq!(p.get("d").map(|s| s.epoch), Some(3));
        assert_eq!(p.get("b").map(|s| s.epoch), Some(0));
        p.clear();
        assert!(p.is_empty() && !p.contains("b"));
        // Names that share a prefix are not confused by the remembered slot.
        p.prepared("s1".into(), 0);
        p.prepared("s10".into(), 1);
        assert!(p.contains("s1"));
        assert_eq!(p.get("s10").map(|s| s.epoch), Some(1));
        assert!(!p.contains("s"));
    }
}
