//! Throwaway PostgreSQL clusters from the system binaries, for `pgheal demo` and the tests.
//!
//! Why not a shared server or Docker: the proxy has to be tested against the behaviour it heals
//! (password auth with SCRAM and md5, `max_connections` exhaustion, server restarts and kills,
//! statements invalidated by DDL), and every test needs a server it may break without disturbing
//! the others. Docker is not available on the project's machines, but the Debian `postgresql`
//! package is, so each [`TempCluster`] is a fresh `initdb` in its own temporary directory, started
//! with `pg_ctl` on a free port of 127.0.0.1, tuned for speed over durability (`fsync=off`), and
//! stopped and deleted on drop.
//!
//! How:
//! - [`binaries`] finds `initdb`/`pg_ctl` (`$PGHEAL_PG_BINDIR`, `pg_config --bindir`,
//!   `/usr/lib/postgresql/*/bin`, `PATH`).
//! - [`os_user`]: PostgreSQL refuses to run as root; as root the server programs run as the
//!   `postgres` OS user and the cluster directory belongs to it.
//! - Parallel tests never collide: every cluster has its own directory (pid + counter + time), its
//!   own Unix socket directory (inside it), and its own port; a start that loses a port race to
//!   another process is retried on a new port.
//! - A tiny `sh` watchdog per cluster stops the server and deletes the directory if the owning
//!   process dies without running [`Drop`] (a `static` cluster, `panic = "abort"`, Ctrl-C), so
//!   interrupted test runs do not leave servers behind.
//!
//! The code: [`TempCluster`] in [`temp_cluster`], what a caller chooses in [`options`], what
//! can go wrong in [`error`], the directory, watchdog, port and program chores in [`system`],
//! and quoting for URLs, `postgresql.conf`, conninfo and SQL in [`quote`].
//!
//! Everything is synchronous `std` code so it can be used from plain `#[test]` functions, from
//! async tests (it blocks briefly) and from `pgheal demo` alike.

mod binaries;
mod error;
mod options;
mod os_user;
mod quote;
mod system;
mod temp_cluster;

pub use binaries::{find_bin_dir, BINDIR_ENV};
pub use error::ClusterError;
pub use options::{AuthMethod, ClusterOptions};
pub use temp_cluster::TempCluster;

/// The address every cluster listens on.
const HOST: &str = "127.0.0.1";
