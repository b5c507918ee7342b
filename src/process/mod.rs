//! What the `pgheal` process does around the proxy, the way PgBouncer does it, so a service
//! written for PgBouncer (an init script with `-d`, a systemd unit with `Type=notify`) runs
//! pgheal with only the binary path changed:
//!
//! - [`daemon`]: `-d` — detach into the background. The fork happens before any thread exists
//!   (before the runtime starts); the parent then waits until the detached process has bound its
//!   listener (or failed) and exits 0 (or 1 with the error), so `pgheal -d` returning 0 means
//!   "accepting clients".
//! - [`pidfile`]: refuse to start over a running instance; write the pid once listening; remove it
//!   at exit.
//! - [`user`]: `-u USER` / `user =` — switch to that OS user once the listener is bound (so a
//!   privileged port can be bound first).
//! - [`logfile`]: `logfile =` — append log lines to a file, reopened on SIGHUP for rotation.
//! - [`trim`]: free memory given back to the system after a wave of clients leaves.
//! - [`notify`]: systemd's `sd_notify` (`READY=1`, `STOPPING=1`) when `NOTIFY_SOCKET` is set.

pub mod daemon;
pub mod logfile;
pub mod notify;
pub mod pidfile;
pub mod trim;
pub mod user;
