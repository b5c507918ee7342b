//! Configuration: a TOML file, then environment variables and flags on top, validated into one
//! immutable [`Config`] that is passed down explicitly (as an `Arc`) — nothing deep in the
//! logic reads global settings.
//!
//! Precedence: flag > `PGHEAL_*` environment variable > file > default. An invalid setting is a
//! [`ConfigError`] naming the key; `main` prints it and exits with code 2.
//!
//! - [`file`]: the serde structs of the TOML file (every key optional).
//! - [`cli`]: the command line (clap), with the environment variable of each flag.
//! - [`upstream`]: `postgres://user:password@host:port/db` URLs.
//! - [`ini`]: the pgbouncer.ini file format (sections, comments, `%include`), pure.
//! - [`connstr`]: the `key=value` strings of its `[databases]`, `[users]` and `[peers]`, pure.
//! - [`validate`]: file + flags → [`Config`], checking every value.

pub mod cli;
pub mod connstr;
pub mod file;
pub mod ini;
pub mod upstream;
pub mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{AuthMethod, Secret};
use crate::heal::RelayConfig;

pub use validate::load;

/// An invalid setting, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// How long a client keeps its server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// For the whole client session (like PgBouncer's `pool_mode = session`).
    Session,
    /// From the first message after ReadyForQuery `I` to the next ReadyForQuery `I`.
    Transaction,
}

impl std::str::FromStr for PoolMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "session" => Ok(PoolMode::Session),
            "transaction" => Ok(PoolMode::Transaction),
            _ => Err(format!("expected session or transaction, got {s:?}")),
        }
    }
}

/// How pgheal learns of schema changes made straight on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaWatch {
    /// Only from DDL through pgheal and from stale-plan errors.
    Off,
    /// Also from the event trigger installed by `pgheal install-schema-watch`.
    Listen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// Where one client-facing database lives and how pgheal logs into it.
#[derive(Clone, PartialEq, Eq)]
pub struct Database {
    /// The name clients connect to.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// The database name on the server.
    pub dbname: String,
    /// Log into the server as this user (with `password`) whatever the client's user is.
    pub user: Option<String>,
    pub password: Option<String>,
    pub pool_size: usize,
    pub min_pool_size: usize,
    pub pool_mode: PoolMode,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .field("pool_mode", &self.pool_mode)
            .finish()
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub databases: BTreeMap<String, Database>,
    /// Client users and their secrets (from `[users]` and `auth_file`).
    pub users: BTreeMap<String, Secret>,
    pub auth_type: AuthMethod,
    pub max_client_conn: usize,
    pub query_wait_timeout: Duration,
    pub server_connect_timeout: Duration,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_reset_query: String,
    pub server_reset_query_always: bool,
    pub max_message_len: usize,
    /// Statements kept prepared per server connection in transaction pooling (LRU).
    pub max_prepared_statements: usize,
    pub shutdown_timeout: Duration,
    /// Event loops, one thread each (see [`crate::event_loops`]).
    pub threads: usize,
    pub log_format: LogFormat,
    pub metrics_listen: Option<SocketAddr>,
    pub schema_watch: SchemaWatch,
    pub heal: RelayConfig,
    /// Where the file came from, for the log.
    pub source: Option<PathBuf>,
}

impl Config {
    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.get(name)
    }
}
