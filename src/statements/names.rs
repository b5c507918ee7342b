//! Pool-wide server-side statement names for transaction pooling.
//!
//! Clients name statements as they like ("P_0", "s1", "_pg3_0"), and different clients use
//! the same name for different SQL. In transaction mode a client's statement may run on any
//! server connection, so pgheal prepares it there under a name of its own, shared by every
//! client that prepares the same text: the key is the full SQL text (bytes, as the client sent
//! them), the parameter type OIDs and the client's settings that decide what the text means
//! (not a hash alone, so no collision can ever mix two statements). Those settings are
//! `search_path` (which table a name is) and `client_encoding` (which characters the bytes are:
//! `'\xe9'` is "é" in LATIN9 and an invalid sequence in UTF-8; the server converts the text
//! once, at Parse); the session gives them as one opaque key (`search_path` below).
//!
//! The registry is bounded (`max_pool_statements`): once it holds more texts than that, the
//! ones nobody holds are forgotten. Who holds a statement is counted by the name itself: every
//! client statement and every server connection that prepared it keeps a clone of its
//! `Arc<[u8]>` name, so a name whose only owners are this registry's two maps is unused. A
//! forgotten text that comes back gets a new name and is described again, so forgetting never
//! breaks a client; it costs a round trip. Without this, an app that generates SQL texts
//! (ids inlined, `IN` lists of every length) would grow the registry for ever.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::protocol::backend::Field;
use crate::protocol::Frame;

/// How the server described a pool statement: enough to answer a client's Parse and
/// Describe 'S' without a server connection.
#[derive(Debug, Clone)]
pub struct Described {
    /// The ParameterDescription message.
    pub params: Frame,
    /// The RowDescription or NoData message.
    pub rows: Frame,
    pub shape: Arc<[Field]>,
    /// The schema epoch it was described in.
    pub epoch: u64,
}

/// A statement of a pool as the admin console lists it.
#[derive(Debug, Clone)]
pub struct PoolStatement {
    pub name: Arc<[u8]>,
    pub sql: Arc<[u8]>,
    pub param_types: Arc<[u32]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    sql: Arc<[u8]>,
    param_types: Arc<[u32]>,
    search_path: Option<Arc<str>>,
}

/// The default of `max_pool_statements`.
pub const DEFAULT_MAX_POOL_STATEMENTS: usize = 10_000;

#[derive(Debug)]
pub struct StatementNames {
    names: DashMap<Key, Arc<[u8]>>,
    described: DashMap<Arc<[u8]>, Arc<Described>>,
    next: AtomicU64,
    /// `max_pool_statements`: texts kept before unused ones are forgotten.
    cap: AtomicUsize,
    /// The size at which the next sweep runs: the cap, or more when most texts are in use (so
    /// a registry full of held statements is not swept at every new text).
    sweep_at: AtomicUsize,
    /// Texts forgotten so far.
    evicted: AtomicU64,
}

impl Default for StatementNames {
    fn default() -> Self {
        StatementNames::with_cap(DEFAULT_MAX_POOL_STATEMENTS)
    }
}

impl StatementNames {
    pub fn with_cap(cap: usize) -> StatementNames {
        StatementNames {
            names: DashMap::new(),
            described: DashMap::new(),
            next: AtomicU64::new(0),
            cap: AtomicUsize::new(cap),
            sweep_at: AtomicUsize::new(cap),
            evicted: AtomicU64::new(0),
        }
    }

    /// A reload changed `max_pool_statements`.
    pub fn set_cap(&self, cap: usize) {
        if self.cap.swap(cap, Ordering::Relaxed) != cap {
            self.sweep_at.store(cap, Ordering::Relaxed);
        }
    }

    /// Texts forgotten because nobody held them (`pgheal_pool_statements_evicted_total`).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Forget every text no client and no server connection holds; returns how many.
    pub fn sweep(&self) -> usize {
        let mut gone = 0;
        self.names.retain(|_, name| {
            // Held here and, once described, as a key of `described`.
            let here = 1 + usize::from(self.described.contains_key(&**name));
            let keep = Arc::strong_count(name) > here;
            gone += usize::from(!keep);
            keep
        });
        // Descriptions of forgotten names (also one described after its name was forgotten).
        self.described.retain(|name, _| Arc::strong_count(name) > 1);
        self.evicted.fetch_add(gone as u64, Ordering::Relaxed);
        let cap = self.cap.load(Ordering::Relaxed);
        self.sweep_at
            .store(cap.max(self.names.len() * 2), Ordering::Relaxed);
        if gone > 0 {
            tracing::debug!(
                forgotten = gone,
                kept = self.names.len(),
                "statement registry swept"
            );
        }
        gone
    }

    /// The server-side name for a statement text; `search_path`: the client's settings that
    /// decide what the text means (see the module docs).
    pub fn name_for(
        &self,
        sql: &Arc<[u8]>,
        param_types: &Arc<[u32]>,
        search_path: Option<&Arc<str>>,
    ) -> Arc<[u8]> {
        let key = Key {
            sql: sql.clone(),
            param_types: param_types.clone(),
            search_path: search_path.cloned(),
        };
        let mut added = false;
        let name = self
            .names
            .entry(key)
            .or_insert_with(|| {
                added = true;
                let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
                format!("pgheal_{n}").into_bytes().into()
            })
            .clone();
        if added && self.names.len() > self.sweep_at.load(Ordering::Relaxed) {
            self.sweep();
        }
        name
    }

    /// The name of a statement text already known to the pool.
    pub fn existing(
        &self,
        sql: &Arc<[u8]>,
        param_types: &Arc<[u32]>,
        search_path: Option<&Arc<str>>,
    ) -> Option<Arc<[u8]>> {
        let key = Key {
            sql: sql.clone(),
            param_types: param_types.clone(),
            search_path: search_path.cloned(),
        };
        self.names.get(&key).map(|n| n.clone())
    }

    /// Record the latest description of a pool statement.
    pub fn describe(&self, name: &Arc<[u8]>, d: Described) {
        self.described.insert(name.clone(), Arc::new(d));
    }

    pub fn described(&self, name: &[u8]) -> Option<Arc<Described>> {
        self.described.get(name).map(|d| d.clone())
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Every statement of the pool, by name (the admin console's `SHOW STATEMENTS`).
    pub fn list(&self) -> Vec<PoolStatement> {
        let mut v: Vec<PoolStatement> = self
            .names
            .iter()
            .map(|e| PoolStatement {
                name: e.value().clone(),
                sql: e.key().sql.clone(),
                param_types: e.key().param_types.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_name_other_text_other_name() {
        let n = StatementNames::default();
        let t: Arc<[u32]> = vec![23].into();
        let text = |s: &[u8]| -> Arc<[u8]> { s.into() };
        let a = n.name_for(&text(b"SELECT $1"), &t, None);
        assert_eq!(&*a, b"pgheal_1");
        assert_eq!(a, n.name_for(&text(b"SELECT $1"), &t, None));
        assert_ne!(a, n.name_for(&text(b"SELECT $1 "), &t, None));
        assert_ne!(a, n.name_for(&text(b"SELECT $1"), &vec![20].into(), None));
        assert_ne!(a, n.name_for(&text(b"SELECT $1"), &t, Some(&"shop".into())));
        // The same bytes under another client_encoding are another statement.
        let latin9: Arc<str> = "SET client_encoding TO latin9".into();
        let e = n.name_for(&text(b"SELECT '\xc3\xa9'"), &t, None);
        assert_ne!(
            e,
            n.name_for(&text(b"SELECT '\xc3\xa9'"), &t, Some(&latin9))
        );
        assert_eq!(n.existing(&text(b"SELECT '\xc3\xa9'"), &t, None), Some(e));
    }

    #[test]
    fn texts_nobody_holds_are_forgotten_past_the_cap_and_held_ones_never() {
        let n = StatementNames::with_cap(10);
        let t: Arc<[u32]> = vec![].into();
        let text = |i: usize| -> Arc<[u8]> { format!("SELECT {i}").into_bytes().into() };
        // A client keeps statement 0 (its clone of the name), a server connection statement 1.
        let client_holds = n.name_for(&text(0), &t, None);
        let server_holds = n.name_for(&text(1), &t, None);
        n.describe(
            &server_holds,
            Described {
                params: crate::protocol::encode::parse_complete(),
                rows: crate::protocol::encode::parse_complete(),
                shape: Vec::new().into(),
                epoch: 0,
            },
        );
        for i in 2..1000 {
            let _ = n.name_for(&text(i), &t, None);
        }
        assert!(n.len() <= 11, "bounded: {} texts kept", n.len());
        assert!(n.evicted() >= 989 - 11, "{}", n.evicted());
        assert_eq!(n.existing(&text(0), &t, None), Some(client_holds.clone()));
        assert_eq!(n.existing(&text(1), &t, None), Some(server_holds.clone()));
        assert!(n.described(&server_holds).is_some());
        // A forgotten text that comes back gets a new name.
        assert_eq!(n.existing(&text(5), &t, None), None);
        let again = n.name_for(&text(5), &t, None);
        assert!(again.starts_with(b"pgheal_"));
        // Once nobody holds them, even these go at the next sweep.
        drop((client_holds, server_holds));
        n.sweep();
        assert_eq!(n.existing(&text(0), &t, None), None);
        assert!(n.described(b"pgheal_2").is_none());
    }
}
