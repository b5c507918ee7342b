//! One task per client: the startup handshake, authentication, and the relay loop.
//!
//! - [`startup`]: SSLRequest/GSSENCRequest (answered `N`), CancelRequest, StartupMessage.
//! - [`client_auth`]: the client-facing authentication exchange over the socket; the
//!   cryptography lives in [`crate::auth`].
//! - [`hba_check`]: the method per connection from `auth_hba_file` (`auth_type = hba`).
//! - [`cancel`]: pgheal's own BackendKeyData and the map from it to the server connection a
//!   client is using.
//! - [`run`]: the life of one connection, from its opening to the hand-back of its server
//!   connection (or its move to a new process in an online restart); [`login`] is the part
//!   from the StartupMessage to the first ReadyForQuery.
//! - [`params`]: the client's startup parameters applied to its server connection.
//! - [`settings`], [`settings_watch`], [`settings_sql`]: session settings in transaction
//!   pooling, read back from the server and carried from one server connection to the next.
//! - [`relay_loop`]: frames between client and server through the [`crate::heal::Relay`],
//!   woken by [`wakers`]; [`checkout`] takes its server connection from the pool and gives
//!   it back (once per transaction in transaction pooling, and at the end of the session).
//!   In transaction pooling the loop runs one boxed step per transaction; between them the
//!   session waits in [`idle`], a future small enough to be what an idle client costs.
//! - Session state in transaction pooling: [`listen`] (LISTEN held by pgheal, notifications
//!   between transactions, with [`listen_sql`] reading the statements), [`pin`] (temporary
//!   objects, WITH HOLD cursors and advisory locks keep the client on its connection), and
//!   [`between`], where the relay loop calls into them.
//! - [`clients`]: every logged-in client, for the admin console (`SHOW CLIENTS`, `KILL`).
//! - [`error`]: [`SessionError`], and the deliberate choice of what a client is told.
//! - [`handover`]: when a session may move to a new process in an online restart, and what
//!   it takes along (see [`crate::takeover`]).
//! - [`timeouts`]: `client_idle_timeout`, `query_timeout`, `idle_transaction_timeout` and
//!   `transaction_timeout` in the relay loop.

mod between;
pub mod cancel;
mod checkout;
pub mod client_auth;
pub mod clients;
pub mod error;
mod handover;
pub mod hba_check;
mod idle;
pub mod kill;
pub mod listen;
pub mod listen_sql;
mod login;
pub mod params;
pub mod pin;
pub mod relay_loop;
pub mod run;
pub mod settings;
pub mod settings_sql;
pub mod settings_watch;
pub mod startup;
pub mod timeouts;
mod wakers;

pub use error::SessionError;
pub use run::{run_adopted, run_client, Shared};
