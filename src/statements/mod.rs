//! What a client has prepared, and the promise pgheal keeps about each statement's rows.
//!
//! A **contract** is the first RowDescription a client statement was described with (by the
//! client's own Describe, or by the Describe pgheal adds to every named Parse). After a
//! migration changes the server-side shape, [`projection::Projection`] maps the new shape back
//! onto the contract so the client keeps receiving the columns it knows, in the order it knows.
//!
//! [`server`] records what each server connection has prepared and with which shape;
//! [`names`] gives statements pool-wide server-side names in transaction mode.
//!
//! [`sql_prepare`] tracks SQL-level `PREPARE name AS ...` texts sent through the simple
//! protocol, so that `EXECUTE name` can be healed too.
//!
//! Bytes are bytes: statement names and SQL text are kept as the client sent them, in its
//! encoding (`Vec<u8>`, `Arc<[u8]>`), and compared byte for byte, as PostgreSQL compares them
//! after converting both the same way. Only logs convert them, lossily.

pub mod names;
pub mod projection;
pub mod registry;
pub mod server;
pub mod sql_prepare;
pub mod type_names;

pub use names::{Described, StatementNames};
pub use projection::{Projection, ProjectionError};
pub use registry::{Shaping, Statement, StatementRegistry, StmtId};
pub use server::ServerPrepared;

pub(crate) use memo::NameMemo;

mod memo {
    use std::cell::Cell;

    /// Longest name remembered (longer ones are simply looked up every time).
    const MAX: usize = 32;

    /// The last name looked up and what it resolved to, kept inline so that checking it
    /// touches no other memory (a client binds the same statement over and over, and the relay
    /// asks for it several times per Bind). The owner clears it on every change of its map.
    #[derive(Debug, Default)]
    pub(crate) struct NameMemo<T: Copy> {
        len: Cell<usize>,
        name: Cell<[u8; MAX]>,
        value: Cell<Option<T>>,
    }

    impl<T: Copy> NameMemo<T> {
        /// What `name` resolved to, if it was the last name remembered.
        #[inline]
        pub(crate) fn get(&self, name: &[u8]) -> Option<T> {
            let value = self.value.get()?;
            let len = self.len.get();
            if len != name.len() {
                return None;
            }
            let stored = self.name.get();
            (stored[..len] == *name).then_some(value)
        }

        pub(crate) fn set(&self, name: &[u8], value: T) {
            if name.len() > MAX {
                return;
            }
            let mut stored = [0; MAX];
            stored[..name.len()].copy_from_slice(name);
            self.name.set(stored);
            self.len.set(name.len());
            self.value.set(Some(value));
        }

        pub(crate) fn clear(&self) {
            self.value.set(None);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn remembers_one_name_exactly() {
            let m = NameMemo::default();
            assert_eq!(m.get(b"a"), None);
            m.set(b"s1", 7u64);
            assert_eq!(m.get(b"s1"), Some(7));
            assert_eq!(m.get(b"s10"), None);
            assert_eq!(m.get(b"s"), None);
            assert_eq!(m.get(b""), None);
            m.set(b"", 3);
            assert_eq!(m.get(b""), Some(3));
            assert_eq!(m.get(b"s1"), None);
            let long = b"x".repeat(MAX + 1);
            m.set(&long, 9);
            assert_eq!(m.get(&long), None);
            assert_eq!(m.get(b""), Some(3));
            m.set(b"caf\xe9", 4);
            assert_eq!(m.get(b"caf\xe9"), Some(4));
            assert_eq!(m.get(b"caf\xc3\xa9"), None);
            m.clear();
            assert_eq!(m.get(b""), None);
        }
    }
}
