//! What can go wrong with a throwaway cluster. One error type covers finding the binaries,
//! the OS user, the files, the programs and the server's start, so that `pgheal demo` and the
//! tests can report any failure with the context (and the server log) needed to act on it.

use std::io;
use std::path::PathBuf;

#[cfg(doc)]
use super::{ClusterOptions, TempCluster};

/// Everything that can go wrong while creating, driving or stopping a [`TempCluster`].
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No directory with `initdb` and `pg_ctl` was found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; searched {searched}. \
         Install PostgreSQL server binaries, e.g. apt-get install postgresql, \
         or point PGHEAL_PG_BINDIR at their directory"
    )]
    BinariesNotFound { searched: String },

    /// Running as root, and there is no `postgres` account to run the server as.
    #[error(
        "running as root, which PostgreSQL refuses, and there is no `postgres` OS user in \
         /etc/passwd to run the server as (apt-get install postgresql creates it)"
    )]
    NoServerUser,

    /// The `postgres` OS user cannot reach any temporary directory.
    #[error(
        "the `postgres` OS user cannot traverse the temporary directory {0} nor /tmp; \
         set TMPDIR to a world-searchable directory"
    )]
    TempDirNotReachable(PathBuf),

    /// A [`ClusterOptions`] value that cannot be written to `postgresql.conf`.
    #[error("invalid cluster option: {0}")]
    InvalidOption(String),

    /// A file system or process-spawning operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// A PostgreSQL program (initdb, pg_ctl) exited unsuccessfully.
    #[error("{program} failed ({status}): {output}")]
    CommandFailed {
        program: String,
        status: String,
        output: String,
    },

    /// The server did not come up; the tail of its log says why.
    #[error("PostgreSQL did not start on 127.0.0.1:{port}: {message}\n--- tail of {log} ---\n{log_tail}")]
    StartFailed {
        port: u16,
        message: String,
        log: String,
        log_tail: String,
    },

    /// Every port tried was taken by someone else before the server could bind it.
    #[error("PostgreSQL could not bind a free port in {attempts} attempts\n--- server log tail ---\n{log_tail}")]
    PortClash { attempts: u32, log_tail: String },

    /// `psql` reported an error (it runs with `ON_ERROR_STOP=1`).
    #[error("psql on database {db:?} failed ({status}): {stderr}")]
    Psql {
        db: String,
        status: String,
        stderr: String,
    },
}

impl ClusterError {
    pub(super) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ClusterError::Io {
            context: context.into(),
            source,
        }
    }
}
