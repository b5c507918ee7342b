//! Pool-wide server-side statement names for transaction pooling.
//!
//! Clients name statements as they like ("P_0", "s1", "_pg3_0"), and different clients use
//! the same name for different SQL. In transaction mode a client's statement may run on any
//! server connection, so pgheal prepares it there under a name of its own, shared by every
//! client that prepares the same text: the key is the full SQL text, the parameter type OIDs
//! and the client's search_path (not a hash alone, so no collision can ever mix two
//! statements).

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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    sql: Arc<str>,
    param_types: Arc<[u32]>,
    search_path: Option<Arc<str>>,
}

#[derive(Debug, Default)]
pub struct StatementNames {
    names: DashMap<Key, Arc<str>>,
    described: DashMap<Arc<str>, Arc<Described>>,
    next: AtomicU64,
}

impl StatementNames {
    /// The server-side name for a statement text.
    pub fn name_for(
        &self,
        sql: &Arc<str>,
        param_types: &Arc<[u32]>,
        search_path: Option<&Arc<str>>,
    ) -> Arc<str> {
        let key = Key {
            sql: sql.clone(),
            param_types: param_types.clone(),
            search_path: search_path.cloned(),
        };
        self.names
            .entry(key)
            .or_insert_with(|| {
                let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
                format!("pgheal_{n}").into()
            })
            .clone()
    }

    /// The name of a statement text already known to the pool.
    pub fn existing(
        &self,
        sql: &Arc<str>,
        param_types: &Arc<[u32]>,
        search_path: Option<&Arc<str>>,
    ) -> Option<Arc<str>> {
        let key = Key {
            sql: sql.clone(),
            param_types: param_types.clone(),
            search_path: search_path.cloned(),
        };
        self.names.get(&key).map(|n| n.clone())
    }

    /// Record the latest description of a pool statement.
    pub fn describe(&self, name: &Arc<str>, d: Described) {
        self.described.insert(name.clone(), Arc::new(d));
    }

    pub fn described(&self, name: &str) -> Option<Arc<Described>> {
        self.described.get(name).map(|d| d.clone())
    }

    pub fn len(&self) -> usize {
        self.names.len()
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
        let a = n.name_for(&"SELECT $1".into(), &t, None);
        assert_eq!(a, n.name_for(&"SELECT $1".into(), &t, None));
        assert_ne!(a, n.name_for(&"SELECT $1 ".into(), &t, None));
        assert_ne!(a, n.name_for(&"SELECT $1".into(), &vec![20].into(), None));
        assert_ne!(a, n.name_for(&"SELECT $1".into(), &t, Some(&"shop".into())));
    }
}
