//! What one step of the engine wants written, to each side, and reported.

use bytes::Bytes;

use super::HealEvent;

/// Buffers reused across steps: clearing keeps the capacity, so steady-state forwarding does not
/// allocate.
#[derive(Debug, Default)]
pub struct Outbox {
    pub to_server: Vec<Bytes>,
    pub to_client: Vec<Bytes>,
    pub events: Vec<HealEvent>,
    /// Binds bracketed by the savepoint guard in this step (for the metrics).
    pub guards: u32,
    /// Stale plans healed behind the guard's savepoint in this step.
    pub guard_heals: u32,
}

impl Outbox {
    /// Give back the lists' memory (they are empty between steps).
    pub fn shed(&mut self) {
        debug_assert!(self.is_empty());
        *self = Outbox::default();
    }

    pub fn is_empty(&self) -> bool {
        self.to_server.is_empty() && self.to_client.is_empty() && self.events.is_empty()
    }
}
