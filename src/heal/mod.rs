//! The relay engine: a sans-IO state machine between one client and one server connection.
//!
//! The session task feeds it whole frames from either side ([`Relay::on_client`],
//! [`Relay::on_server`]) and writes out what it puts in the [`Outbox`]. Keeping I/O out of the
//! engine makes the heal logic testable message by message and lets every pool mode reuse it.
//!
//! How a heal works (see `docs/heal-engine.md` for the measured protocol facts):
//!
//! 1. **Tracking.** Every message sent to the server pushes a [`pending::Pending`] entry saying
//!    which responses it produces and what to do with them (forward, swallow, or suppress the
//!    first *n* because the client already has them). Responses are matched by order.
//! 2. **Contracts.** A named Parse gets an added `Describe 'S'` whose reply is swallowed and
//!    recorded as the statement's contract ([`crate::statements`]).
//! 3. **Window and hold-back.** Since the last ReadyForQuery, every frontend message is kept (as
//!    a cheap `Bytes` reference) in the [`window::Window`]. While a Bind or Describe of a
//!    row-returning named statement is unconfirmed, output is held back (bounded), so a result
//!    the server may roll back never reaches the client.
//! 4. **Repair.** On `0A000 cached plan must not change result type` ([`recognize`]) in a batch
//!    that began outside a transaction block, the error and everything up to ReadyForQuery is
//!    swallowed; a BEGIN inside the batch is rolled back; the statement is probed under a
//!    scratch name to learn its new shape; if the contract can be kept (or the client described
//!    the statement in this batch and will read the new shape) it is re-prepared and the whole
//!    window is replayed, suppressing what the client already has ([`repair`]). Otherwise the
//!    window is replayed without healing, so the client receives exactly what PostgreSQL says.
//! 5. **Inside a transaction block** the error would abort the transaction: the schema epoch
//!    ([`epoch`]) re-prepares stale statements before use ([`prepare`]), and the optional
//!    savepoint guard ([`guard`]) brackets Binds so that a late error can be rolled back to a
//!    savepoint and replayed from there.
//!
//! Files: [`relay`] holds the engine's state and entry points, [`client`] the handling of each
//! frontend message, [`route`] of each backend message, [`shaping`] which shape a portal's rows
//! take, [`repair`] the heal itself, [`leave`] bringing a server connection to rest when its
//! client leaves mid-batch.

pub mod client;
pub mod epoch;
pub mod event;
pub mod guard;
pub mod leave;
pub mod local;
pub mod outbox;
pub mod pending;
pub mod prepare;
pub mod recognize;
pub mod relay;
pub mod repair;
pub mod route;
pub mod shaping;
pub mod window;

pub use epoch::SchemaEpoch;
pub use event::{truncate_sql, HealEvent, Outcome};
pub use guard::SavepointGuard;
pub use leave::Rest;
pub use outbox::Outbox;
pub use relay::{Relay, RelayConfig, RelayError};
