//! Server connections: logging in, pooling per (database, user), and resetting on check-in.
//!
//! - [`server`]: one server connection and the login to PostgreSQL (SCRAM, md5, cleartext, trust).
//! - [`capacity`]: a limit whose size a reload can change (pool sizes, `max_client_conn`).
//! - [`bounded`]: a bounded pool. A semaphore permit is a right to *one open connection*; idle
//!   connections hold none. The [`bounded::Checkout`] guard gives the connection back on
//!   [`bounded::Checkout::checkin`]; dropped without it, the connection is closed (its state is
//!   unknown, so it is never reused).
//! - [`shared_limit`]: `max_db_connections` / `max_user_connections`, caps on the open
//!   connections of several pools, each held by the connection for its life.
//! - [`hosts`]: which host of a database's list a new connection goes to, and failover.
//! - [`check`]: `server_check_query` on a connection idle longer than `server_check_delay`.
//! - [`reset`]: ROLLBACK of an open transaction and `server_reset_query` before re-use.
//! - [`registry`]: the pools of every (database, user), created on first use.
//! - [`listen`]: one listening connection per database, outside the pools, that holds the
//!   LISTENs of transaction-pooling clients; [`mailbox`]: each client's queue of notifications.

pub mod auth_query;
pub mod bounded;
pub mod capacity;
pub mod check;
pub mod control;
pub mod hosts;
pub mod listen;
pub mod mailbox;
pub mod registry;
pub mod reset;
pub mod server;
pub mod shared_limit;
pub mod stats;

pub use bounded::{Checkout, Pool, PoolError, PoolKey};
pub use registry::Pools;
pub use server::{ServerConn, ServerError};
