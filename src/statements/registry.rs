//! The named statements one client has prepared, by name and by a stable id.
//!
//! Pending responses refer to statements by [`StmtId`] (a number), so the relay never allocates
//! a name per Bind on the hot path.

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::backend::Field;

use super::{Projection, ProjectionError};

pub type StmtId = u64;

/// A named statement as the client prepared it, with its contract and current projection.
#[derive(Debug, Clone)]
pub struct Statement {
    pub name: String,
    pub sql: Arc<str>,
    pub param_types: Arc<[u32]>,
    /// The row shape promised to the client; `Some(empty)` when the statement returns no rows.
    pub contract: Option<Arc<[Field]>>,
    /// The row shape of the statement as currently prepared on the server.
    pub shape: Option<Arc<[Field]>>,
    pub projection: Projection,
    /// Descriptions must be rewritten into the contract's terms (names, order or width differ).
    rewrites: bool,
}

impl Statement {
    /// Whether RowDescriptions of this statement must be answered with the contract.
    pub fn rewrites(&self) -> bool {
        self.rewrites
    }

    fn refresh(&mut self) {
        self.rewrites = !self.projection.is_identity()
            || match (&self.contract, &self.shape) {
                (Some(c), Some(s)) => {
                    c.len() != s.len() || c.iter().zip(s.iter()).any(|(a, b)| a.name != b.name)
                }
                _ => false,
            };
    }

    /// Statements that return rows can be hit by "cached plan must not change result type".
    pub fn returns_rows(&self) -> bool {
        self.contract.as_ref().is_some_and(|c| !c.is_empty())
    }
}

#[derive(Debug, Default)]
pub struct StatementRegistry {
    by_name: HashMap<String, StmtId>,
    stmts: HashMap<StmtId, Statement>,
    next: StmtId,
}

impl StatementRegistry {
    /// Record a Parse of a named statement (replacing an older one of the same name).
    pub fn parsed(&mut self, name: &str, sql: &str, param_types: Vec<u32>) -> StmtId {
        self.next += 1;
        let id = self.next;
        if let Some(old) = self.by_name.insert(name.to_owned(), id) {
            self.stmts.remove(&old);
        }
        self.stmts.insert(
            id,
            Statement {
                name: name.to_owned(),
                sql: sql.into(),
                param_types: param_types.into(),
                contract: None,
                shape: None,
                projection: Projection::Identity,
                rewrites: false,
            },
        );
        id
    }

    pub fn id(&self, name: &str) -> Option<StmtId> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: StmtId) -> Option<&Statement> {
        self.stmts.get(&id)
    }

    pub fn by_name(&self, name: &str) -> Option<&Statement> {
        self.id(name).and_then(|id| self.get(id))
    }

    pub fn close(&mut self, name: &str) {
        if let Some(id) = self.by_name.remove(name) {
            self.stmts.remove(&id);
        }
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
        self.stmts.clear();
    }

    pub fn len(&self) -> usize {
        self.stmts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stmts.is_empty()
    }

    /// The server described the statement: the first description becomes the contract.
    pub fn described(&mut self, id: StmtId, fields: Vec<Field>) {
        if let Some(s) = self.stmts.get_mut(&id) {
            let fields: Arc<[Field]> = fields.into();
            if s.contract.is_none() {
                s.contract = Some(fields.clone());
            }
            s.shape = Some(fields);
            s.projection = match (&s.contract, &s.shape) {
                (Some(c), Some(sh)) => Projection::compute(c, sh).unwrap_or(Projection::Identity),
                _ => Projection::Identity,
            };
            s.refresh();
        }
    }

    /// A new server shape after a re-prepare: keep the contract if it can be projected.
    pub fn reshaped(
        &mut self,
        id: StmtId,
        shape: Vec<Field>,
    ) -> Result<&Statement, ProjectionError> {
        let Some(s) = self.stmts.get_mut(&id) else {
            return Err(ProjectionError::ColumnGone(String::new()));
        };
        let contract = s.contract.clone().unwrap_or_else(|| shape.clone().into());
        let projection = Projection::compute(&contract, &shape)?;
        s.contract = Some(contract);
        s.shape = Some(shape.into());
        s.projection = projection;
        s.refresh();
        Ok(s)
    }

    /// The client will read the new shape (it described the statement in this batch): the
    /// new shape becomes the contract.
    pub fn adopt_shape(&mut self, id: StmtId, shape: Vec<Field>) {
        if let Some(s) = self.stmts.get_mut(&id) {
            let shape: Arc<[Field]> = shape.into();
            s.contract = Some(shape.clone());
            s.shape = Some(shape);
            s.projection = Projection::Identity;
            s.refresh();
        }
    }
}
