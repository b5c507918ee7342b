//! The pure PostgreSQL wire codec: bytes in, typed views or [`ProtocolError`] out.
//!
//! Nothing here does I/O or knows about tokio, so every function can be unit-tested with byte
//! literals and fuzzed. Two rules shape the module (see `docs/architecture.md`):
//!
//! 1. **Forward bytes untouched.** [`frame`] only peeks at the tag and the length of each message
//!    and hands out the whole message as a `Bytes` slice of the read buffer (no copy). Only the
//!    messages the relay must inspect are decoded, by the views in [`frontend`] and [`backend`].
//! 2. **Every length is checked before use.** [`cursor::Cursor`] is the only way views read
//!    fields; it returns errors instead of panicking, and a declared length above the configured
//!    maximum is a protocol error, never an allocation.
//!
//! Why not `pgwire` or `postgres-protocol` for decoding: pgwire's message decoders are written for
//! a server that trusts its framing and panic on some malformed input, and both crates decode into
//! owned structs, which is a copy per message on the forwarding path. We reuse
//! `postgres-protocol` where it is a good fit (the SCRAM client for logging into the server) and
//! keep our own checked, borrowing views here.
//!
//! Protocol reference: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

pub mod backend;
pub mod cursor;
pub mod encode;
pub mod error;
pub mod frame;
pub mod frontend;
pub mod sqlstate;
pub mod startup;

pub use error::ProtocolError;
pub use frame::{Frame, Header};
