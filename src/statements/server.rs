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
}

#[derive(Debug)]
pub struct ServerPrepared {
    map: HashMap<Arc<str>, ServerStmt>,
    tick: u64,
    cap: usize,
}

impl ServerPrepared {
    pub fn new(cap: usize) -> Self {
        ServerPrepared {
            map: HashMap::new(),
            tick: 0,
            cap: cap.max(1),
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
        self.tick += 1;
        let evicted = if !self.map.contains_key(&name) && self.map.len() >= self.cap {
            let victim = self
                .map
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(n, _)| n.clone());
            if let Some(v) = &victim {
                self.map.remove(v);
            }
            victim
        } else {
            None
        };
        self.map.insert(
            name,
            ServerStmt {
                shape: None,
                epoch,
                last_used: self.tick,
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
        self.map.remove(name);
    }

    /// After `DISCARD ALL` / `DEALLOCATE ALL` on the connection.
    pub fn clear(&mut self) {
        self.map.clear();
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
}
