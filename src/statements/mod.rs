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

pub mod names;
pub mod projection;
pub mod registry;
pub mod server;
pub mod sql_prepare;

pub use names::{Described, StatementNames};
pub use projection::{Projection, ProjectionError};
pub use registry::{Shaping, Statement, StatementRegistry, StmtId};
pub use server::ServerPrepared;
