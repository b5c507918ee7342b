//! The named statements one client has prepared, by name and by a stable id.
//!
//! Pending responses refer to statements by [`StmtId`] (a number), so the relay never allocates
//! a name per Bind on the hot path. Each statement knows its server-side name (the client's own
//! in session mode, a pool-wide one in transaction mode) and its contract. The server-side
//! shape lives with the server connection ([`super::ServerPrepared`]); the projection between
//! the two is computed here and cached per shape.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::protocol::backend::Field;

use super::{NameMemo, Projection, ProjectionError};

pub type StmtId = u64;

/// A named statement as the client prepared it, with its contract. Name and text are bytes in
/// the client's encoding.
#[derive(Debug, Clone)]
pub struct Statement {
    pub name: Vec<u8>,
    pub sql: Arc<[u8]>,
    pub param_types: Arc<[u32]>,
    /// The name the statement has on server connections.
    pub server_name: Arc<[u8]>,
    /// The row shape promised to the client; `Some(empty)` when the statement returns no rows.
    pub contract: Option<Arc<[Field]>>,
    /// The last shape a projection was computed for, and the result.
    cache: Option<(Arc<[Field]>, Shaping)>,
}

/// How a server shape relates to a statement's contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shaping {
    /// Same columns, same names: forward untouched.
    Same,
    /// Rows and/or descriptions must be rewritten into the contract's terms. The contract is
    /// carried along: a portal outlives a Close of its statement, and its description is still
    /// told in the contract's terms.
    Project {
        projection: Projection,
        contract: Arc<[Field]>,
    },
}

impl Statement {
    /// Statements that return rows can be hit by "cached plan must not change result type".
    pub fn returns_rows(&self) -> bool {
        self.contract.as_ref().is_some_and(|c| !c.is_empty())
    }

    /// The shaping of rows of `shape` for this statement's contract.
    pub fn shaping_for(&mut self, shape: &Arc<[Field]>) -> Result<Shaping, ProjectionError> {
        let Some(contract) = self.contract.clone() else {
            self.contract = Some(shape.clone());
            return Ok(Shaping::Same);
        };
        if Arc::ptr_eq(&contract, shape) {
            return Ok(Shaping::Same);
        }
        if let Some((cached, s)) = &self.cache {
            if Arc::ptr_eq(cached, shape) {
                return Ok(s.clone());
            }
        }
        let same = contract.len() == shape.len()
            && contract.iter().zip(shape.iter()).all(|(a, b)| {
                a.name == b.name
                    && a.type_oid == b.type_oid
                    && a.table_oid == b.table_oid
                    && a.column_attr == b.column_attr
            });
        let shaping = if same {
            Shaping::Same
        } else {
            Shaping::Project {
                projection: Projection::compute(&contract, shape)?,
                contract,
            }
        };
        self.cache = Some((shape.clone(), shaping.clone()));
        Ok(shaping)
    }
}

/// Hashes the ids pgheal hands out itself (sequential, never chosen by a client) with one
/// multiplication instead of SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<StmtId, V, BuildHasherDefault<IdHasher>>;

/// Names are chosen by the client, so they keep the std (keyed SipHash) hasher; the last name
/// looked up is remembered, because a client binds the same statement over and over and the
/// hot path asks for it several times per Bind.
#[derive(Debug, Default)]
pub struct StatementRegistry {
    by_name: HashMap<Vec<u8>, StmtId>,
    stmts: IdMap<Statement>,
    next: StmtId,
    /// The last name looked up; cleared whenever a name is added or removed.
    last: NameMemo<StmtId>,
}

impl StatementRegistry {
    /// Record a Parse of a named statement (replacing an older one of the same name).
    pub fn parsed(
        &mut self,
        name: &[u8],
        sql: Arc<[u8]>,
        param_types: Arc<[u32]>,
        server_name: Arc<[u8]>,
    ) -> StmtId {
        self.last.clear();
        self.next += 1;
        let id = self.next;
        if let Some(old) = self.by_name.insert(name.to_owned(), id) {
            self.stmts.remove(&old);
        }
        self.stmts.insert(
            id,
            Statement {
                name: name.to_owned(),
                sql,
                param_types,
                server_name,
                contract: None,
                cache: None,
            },
        );
        id
    }

    pub fn id(&self, name: &[u8]) -> Option<StmtId> {
        if let Some(id) = self.last.get(name) {
            return Some(id);
        }
        let id = self.by_name.get(name).copied()?;
        self.last.set(name, id);
        Some(id)
    }

    pub fn get(&self, id: StmtId) -> Option<&Statement> {
        self.stmts.get(&id)
    }

    pub fn get_mut(&mut self, id: StmtId) -> Option<&mut Statement> {
        self.stmts.get_mut(&id)
    }

    pub fn by_name(&self, name: &[u8]) -> Option<&Statement> {
        self.id(name).and_then(|id| self.get(id))
    }

    pub fn close(&mut self, name: &[u8]) -> Option<Statement> {
        self.last.clear();
        let id = self.by_name.remove(name)?;
        self.stmts.remove(&id)
    }

    /// A Close of `name` is on its way: the name is free at once (a Parse after the Close in
    /// the same pipeline defines a new statement), but the statement is kept by id until the
    /// Close is known to have run ([`Self::remove_id`]) or to have been skipped by the server
    /// after an earlier error ([`Self::reopen`]).
    pub fn closing(&mut self, name: &[u8]) -> Option<StmtId> {
        self.last.clear();
        self.by_name.remove(name)
    }

    /// A Close was skipped: the statement still exists, under its name unless a newer
    /// statement took it meanwhile.
    pub fn reopen(&mut self, id: StmtId) {
        self.last.clear();
        let Some(name) = self.stmts.get(&id).map(|s| s.name.clone()) else {
            return;
        };
        match self.by_name.entry(name) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.stmts.remove(&id);
            }
        }
    }

    /// Forget a statement by id (its Parse failed).
    pub fn remove_id(&mut self, id: StmtId) {
        self.last.clear();
        if let Some(s) = self.stmts.remove(&id) {
            if self.by_name.get(&s.name) == Some(&id) {
                self.by_name.remove(&s.name);
            }
        }
    }

    pub fn clear(&mut self) {
        self.last.clear();
        self.by_name.clear();
        self.stmts.clear();
    }

    /// Every statement, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Statement> {
        self.stmts.values()
    }

    pub fn len(&self) -> usize {
        self.stmts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stmts.is_empty()
    }

    /// The first description of a statement becomes its contract; `true` when this one did.
    pub fn described(&mut self, id: StmtId, shape: &Arc<[Field]>) -> bool {
        match self.stmts.get_mut(&id) {
            Some(s) if s.contract.is_none() => {
                s.contract = Some(shape.clone());
                true
            }
            _ => false,
        }
    }

    /// The client will read the new shape (it describes the statement in this batch): the new
    /// shape becomes the contract.
    pub fn adopt_shape(&mut self, id: StmtId, shape: Arc<[Field]>) {
        if let Some(s) = self.stmts.get_mut(&id) {
            s.contract = Some(shape);
            s.cache = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(r: &mut StatementRegistry, name: &str) -> StmtId {
        let name = name.as_bytes();
        r.parsed(name, b"SELECT 1"[..].into(), Vec::new().into(), name.into())
    }

    #[test]
    fn names_resolve_after_replace_close_and_remove() {
        let mut r = StatementRegistry::default();
        assert_eq!(r.id(b"s1"), None);
        let a = parse(&mut r, "s1");
        let b = parse(&mut r, "s2");
        assert_eq!(r.id(b"s1"), Some(a));
        assert_eq!(r.id(b"s1"), Some(a));
        assert_eq!(r.id(b"s2"), Some(b));
        // Replacing s2 (the name looked up last) gives the new id.
        let b2 = parse(&mut r, "s2");
        assert_ne!(b, b2);
        assert_eq!(r.id(b"s2"), Some(b2));
        assert!(r.get(b).is_none());
        r.close(b"s2");
        assert_eq!(r.id(b"s2"), None);
        assert_eq!(r.id(b"s1"), Some(a));
        r.remove_id(a);
        assert_eq!(r.id(b"s1"), None);
        // A Close on its way frees the name; skipped, it gives the statement back, unless a
        // newer one took the name.
        let d = parse(&mut r, "s3");
        assert_eq!(r.closing(b"s3"), Some(d));
        assert_eq!(r.id(b"s3"), None);
        assert!(r.get(d).is_some());
        r.reopen(d);
        assert_eq!(r.id(b"s3"), Some(d));
        r.closing(b"s3");
        let e = parse(&mut r, "s3");
        r.reopen(d);
        assert_eq!(r.id(b"s3"), Some(e));
        assert!(r.get(d).is_none());
        r.closing(b"s3");
        r.remove_id(e);
        assert!(r.get(e).is_none());
        let c = parse(&mut r, "s1");
        assert_eq!(r.id(b"s1"), Some(c));
        r.clear();
        assert_eq!(r.id(b"s1"), None);
        assert!(r.is_empty());
        // Names in any client encoding, told apart byte for byte.
        let latin9 = r.parsed(
            b"caf\xe9",
            b"SELECT '\xa4'"[..].into(),
            Vec::new().into(),
            b"caf\xe9"[..].into(),
        );
        let utf8 = parse(&mut r, "caf\u{e9}");
        assert_ne!(latin9, utf8);
        assert_eq!(r.id(b"caf\xe9"), Some(latin9));
        assert_eq!(r.id("caf\u{e9}".as_bytes()), Some(utf8));
        assert_eq!(&*r.by_name(b"caf\xe9").unwrap().sql, b"SELECT '\xa4'");
    }
}
