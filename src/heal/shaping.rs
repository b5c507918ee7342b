//! Which shape a portal's rows take on their way to the client: the server's shape on this
//! connection against the contract the client was told. A Bind whose statement's shape is not
//! known yet (prepared lazily in the same pipeline, or again by a replay) waits
//! (`PortalShaping::Unresolved`) and is resolved at its first response, or when its statement
//! is closed before that (the contract goes with the statement). Pool statements share one
//! copy of each shape, so many clients' contracts cost one decoded description.

use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::backend::Field;
use crate::protocol::Frame;
use crate::statements::{ServerPrepared, Shaping, StmtId};

use super::event::{HealEvent, Outcome};
use super::outbox::Outbox;
use super::pending::{Expect, PortalShaping};
use super::relay::{Naming, Portal, Relay};

impl Relay {
    /// Resolve a portal's shaping once its statement's shape is known (lazy prepares).
    pub(crate) fn resolve_head(&mut self, srv: &ServerPrepared, out: &mut Outbox) {
        self.resolve_at(0, srv, None, out);
    }

    /// Statement `id` is about to go (its Close has run): the portals bound from it that
    /// still wait for its shape are resolved now, pending responses and portal records both,
    /// while its contract is there. Resolved at their first response, after the Close, they
    /// had no contract to project their rows onto (finding 17 of docs/fuzzing.md: rows in the
    /// server's wider shape). Not earlier than this: a description that reaches the client
    /// before the rows may still make the new shape the contract.
    ///
    /// `shape`: the statement's shape on this connection when the client's Close was sent
    /// (in session pooling the connection's record of it goes with the Close).
    pub(crate) fn resolve_before_close(
        &mut self,
        id: StmtId,
        shape: Option<&Arc<[Field]>>,
        srv: &ServerPrepared,
        out: &mut Outbox,
    ) {
        for pos in 0..self.pending.len() {
            match &self.pending[pos].expect {
                Expect::PortalDescription {
                    shaping: PortalShaping::Unresolved(s),
                }
                | Expect::ExecuteResult {
                    shaping: PortalShaping::Unresolved(s),
                } if *s == id => self.resolve_at(pos, srv, shape, out),
                _ => {}
            }
        }
        let waits = |p: &Portal| matches!(p.shaping, PortalShaping::Unresolved(s) if s == id);
        if !(waits(&self.unnamed_portal) || self.portals.values().any(waits)) {
            return;
        }
        let shape = self.server_shape(id, srv).or_else(|| shape.cloned());
        let shaping = self.shaping_with(id, shape);
        for p in std::iter::once(&mut self.unnamed_portal).chain(self.portals.values_mut()) {
            if waits(p) {
                p.shaping = shaping.clone();
            }
        }
    }

    /// Resolve the shaping of the pending entry at `pos` if it waits for its statement's shape
    /// (this connection's, else `shape`).
    fn resolve_at(
        &mut self,
        pos: usize,
        srv: &ServerPrepared,
        shape: Option<&Arc<[Field]>>,
        out: &mut Outbox,
    ) {
        let (id, describes) = match self.pending.get(pos).map(|p| &p.expect) {
            Some(Expect::PortalDescription {
                shaping: PortalShaping::Unresolved(id),
            }) => (*id, true),
            Some(Expect::ExecuteResult {
                shaping: PortalShaping::Unresolved(id),
            }) => (*id, false),
            _ => return,
        };
        let shape = self.server_shape(id, srv).or_else(|| shape.cloned());
        let mut shaping = self.shaping_with(id, shape.clone());
        if let (PortalShaping::Broken, true) = (&shaping, describes) {
            // The client describes the portal before reading its rows: it will be told the
            // new shape, which becomes the contract once the description reaches it (finding
            // 10 of docs/fuzzing.md: withheld, the description left the client waiting).
            if let Some(shape) = shape {
                shaping = PortalShaping::Adopt(id, shape);
            }
        }
        if matches!(&shaping, PortalShaping::Known(_, Shaping::Project { projection, .. }) if !projection.is_identity())
        {
            let (statement, sql) = self.statement_label(id);
            out.events.push(HealEvent {
                outcome: Outcome::Projected,
                statement,
                sql,
                detail:
                    "prepared on this connection in a new shape; rows projected onto the contract"
                        .into(),
            });
        }
        if let Some(p) = self.pending.get_mut(pos) {
            match &mut p.expect {
                Expect::PortalDescription { shaping: s } | Expect::ExecuteResult { shaping: s } => {
                    *s = shaping
                }
                _ => {}
            }
        }
    }

    /// `shape`, as the server just described pool statement `name`, or the pool's own copy of
    /// the same shape. Every client of a pool records the shapes of its statements (contracts,
    /// the projection cache); one copy per shape instead of one per description keeps that
    /// memory per shape, not per client and per connection (a result 500 columns wide is
    /// 40 KiB decoded).
    pub(crate) fn shared_shape(&self, name: &[u8], shape: Arc<[Field]>) -> Arc<[Field]> {
        let Naming::Pooled { names, .. } = &self.naming else {
            return shape;
        };
        match names.described(name) {
            Some(d) if *d.shape == *shape => d.shape.clone(),
            _ => shape,
        }
    }

    /// Statement `id`'s shape as this server connection last described it.
    pub(crate) fn server_shape(&self, id: StmtId, srv: &ServerPrepared) -> Option<Arc<[Field]>> {
        let name = &self.stmts.get(id)?.server_name;
        srv.shape(name).cloned()
    }

    /// The shaping of statement `id`'s rows in `shape` (none known: as they come).
    pub(crate) fn shaping_with(
        &mut self,
        id: StmtId,
        shape: Option<Arc<[Field]>>,
    ) -> PortalShaping {
        let Some(shape) = shape else {
            return PortalShaping::Plain;
        };
        match self.stmts.get_mut(id).map(|s| s.shaping_for(&shape)) {
            Some(Ok(s @ Shaping::Project { .. })) => PortalShaping::Known(id, s),
            Some(Err(_)) => {
                self.epoch.bump("a lazily prepared statement changed shape");
                PortalShaping::Broken
            }
            _ => PortalShaping::Plain,
        }
    }

    /// A RowDescription in the contract's terms, when the server's differs from it.
    pub(crate) fn contract_description(
        &mut self,
        id: StmtId,
        shape: &Arc<[Field]>,
        _frame: &Frame,
    ) -> Option<Bytes> {
        let s = self.stmts.get_mut(id)?;
        match s.shaping_for(shape) {
            Ok(Shaping::Project {
                projection,
                contract,
            }) => Some(projection.describe(&contract, shape).bytes),
            Ok(Shaping::Same) => None,
            Err(_) => {
                // The contract cannot be kept, and the client is told the new shape now (as
                // PostgreSQL, which re-plans on Describe, would tell it): it is the contract
                // from here on (found by the engine property test).
                self.stmts.adopt_shape(id, shape.clone());
                None
            }
        }
    }
}
