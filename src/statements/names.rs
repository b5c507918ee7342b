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

use std::sync::atomic::{AtomicU64, Ordering};
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

#[derive(Debug, Default)]
pub struct StatementNames {
    names: DashMap<Key, Arc<[u8]>>,
    described: DashMap<Arc<[u8]>, Arc<Described>>,
    next: AtomicU64,
}

impl StatementNames {
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
        self.names
            .entry(key)
            .or_insert_with(|| {
                let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
                format!("pgheal_{n}").into_bytes().into()
            })
            .clone()
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
}
