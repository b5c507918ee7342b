//! # pgheal
//!
//! A PostgreSQL wire-protocol proxy and connection pooler that heals
//! `ERROR 0A000 cached plan must not change result type` after migrations.
//!
//! The map of the crate:
//! - [`protocol`]: the pure codec. Framing, typed views of the few messages that are inspected,
//!   startup packets, error fields and SQLSTATE constants. No I/O, no panics on any input.
//! - [`auth`]: client-facing authentication (SCRAM-SHA-256, md5, cleartext, trust) and secrets.
//! - [`config`]: TOML + flags + environment, validated into one immutable [`config::Config`].
//! - [`net`]: the message stream over a socket (buffers, zero-copy framing, vectored writes).
//! - [`pool`]: server connections per (database, user), checkout guards, reset on check-in.
//! - [`session`]: one task per client, the startup handshake and the relay loop.
//! - [`heal`]: the sans-IO relay engine: response tracking, error recognition, replay, projection.
//! - [`statements`]: named statements, their result contracts and projections.
//! - [`metrics`]: Prometheus counters and the `/metrics` endpoint.
//! - [`watch`]: the schema watch (event trigger + LISTEN) that advances schema epochs.
//! - [`process`]: what the binary does around the proxy, as PgBouncer does: `-d`, pidfile,
//!   `-u` user switch, logfile, systemd readiness.
//! - [`cluster`]: throwaway PostgreSQL clusters from the system binaries (demo and tests).
//! - [`demo`]: `pgheal demo`, the migration incident replayed and healed.
//! - [`migration_check`]: `pgheal check-migration`, what a migration does to recorded statements.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod event_loops;
#[doc(hidden)]
pub mod fuzzing;
pub mod heal;
pub mod metrics;
pub mod migration_check;
pub mod net;
pub mod pool;
pub mod process;
pub mod protocol;
pub mod proxy;
pub mod reload;
pub mod session;
pub mod statements;
pub mod takeover;
pub mod watch;
