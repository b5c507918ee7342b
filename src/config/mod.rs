//! Configuration: a file (pgheal's TOML, or PgBouncer's `pgbouncer.ini` as it is), then
//! environment variables and flags on top, validated into one immutable [`Config`] that is
//! passed down explicitly (as an `Arc`) — nothing deep in the logic reads global settings.
//!
//! Precedence: flag > `PGHEAL_*` environment variable > file > default. An invalid setting is a
//! [`ConfigError`] naming the key (and, in a pgbouncer.ini, the file and line); `main` prints it
//! and exits with code 2.
//!
//! - [`file`]: the serde structs of the TOML file (every key optional), which a pgbouncer.ini is
//!   mapped onto as well.
//! - [`cli`]: the command line (clap), with the environment variable of each flag, and
//!   PgBouncer's own options (`pgheal pgbouncer.ini -d -q -v -u USER`).
//! - [`upstream`]: `postgres://user:password@host:port/db?sslmode=...` URLs.
//! - [`tls`]: `sslmode` and the other TLS settings.
//! - [`ini`]: the pgbouncer.ini file format (sections, comments, `%include`), pure.
//! - [`connstr`]: the `key=value` strings of its `[databases]`, `[users]` and `[peers]`, pure.
//! - [`pgbouncer_keys`]: every `[pgbouncer]` key of PgBouncer 1.25 and what pgheal does with it.
//! - [`pgbouncer`]: a parsed pgbouncer.ini → [`file::FileConfig`], with PgBouncer's defaults.
//! - [`load`]: reading the file (either format, with the console's `SET` values).
//! - [`validate`]: file + flags → [`Config`], checking every value; the TLS keys, whose
//!   files are read then, in [`validate_tls`].
//! - [`live`]: the configuration in force, swapped whole by `RELOAD`, SIGHUP and `SET`.

pub mod cli;
pub mod connstr;
pub mod file;
pub mod ini;
pub mod keepalive;
pub mod limits;
pub mod live;
pub mod load;
pub mod pgbouncer;
pub mod pgbouncer_keys;
pub mod servers;
pub mod timeouts;
pub mod tls;
pub mod unix_socket;
pub mod upstream;
pub mod validate;
mod validate_tls;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::hba::HbaRules;
use crate::auth::{AuthMethod, Secret};
use crate::heal::RelayConfig;

pub use load::load;

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

/// The `auth_type` setting: one method for every client, or `hba`, the method per connection
/// from the rules of `auth_hba_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum AuthType {
    Method(AuthMethod),
    Hba,
}

impl TryFrom<String> for AuthType {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        use serde::Deserialize;
        if name == "hba" {
            return Ok(AuthType::Hba);
        }
        let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(&name);
        AuthMethod::deserialize(de)
            .map(AuthType::Method)
            .map_err(|_| {
                format!(
                    "unknown auth_type {name:?}: expected scram-sha-256, md5, plain, trust or hba"
                )
            })
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
    /// As transaction pooling, with PgBouncer's rule that a transaction block (ReadyForQuery
    /// `T` or `E`) is refused: the client is disconnected and the block rolled back.
    Statement,
}

impl PoolMode {
    /// Whether the server connection goes back to the pool between transactions
    /// (transaction and statement pooling).
    pub fn per_transaction(self) -> bool {
        !matches!(self, PoolMode::Session)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

impl std::str::FromStr for PoolMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "session" => Ok(PoolMode::Session),
            "transaction" => Ok(PoolMode::Transaction),
            "statement" => Ok(PoolMode::Statement),
            _ => Err(format!(
                "expected session, transaction or statement, got {s:?}"
            )),
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
    /// The server's host, or several separated by commas (`load_balance_hosts` chooses; see
    /// [`crate::pool::hosts`]). Every host uses `port`.
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
    /// TLS to the server.
    pub tls: tls::ServerTls,
    /// Clients missing from the auth_file are looked up with `auth_query` as this user (the
    /// entry's `auth_user`, else the global one).
    pub auth_user: Option<String>,
    /// The query (the entry's, else the global one, else PgBouncer's default).
    pub auth_query: String,
    /// The database the query runs in (default: this entry's server database).
    pub auth_dbname: Option<String>,
    /// `reserve_pool_size`, `max_db_connections`, `max_db_client_connections` (this entry's,
    /// else the global ones; a `[users]` `reserve_pool_size` wins in [`Config::database_for`]).
    pub limits: limits::DbLimits,
    /// Host choice, startup parameters and `connect_query` of new server connections.
    pub connect: servers::DbConnect,
}

/// PgBouncer's classic default `auth_query`.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";

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
            .field("tls", &self.tls)
            .field("auth_user", &self.auth_user)
            .field("auth_dbname", &self.auth_dbname)
            .field("limits", &self.limits)
            .field("connect", &self.connect)
            .finish()
    }
}

/// The `*` database of a pgbouncer.ini (or `[databases."*"]` in TOML): used for any database
/// name that is not configured, as if it were configured with this entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackDatabase {
    /// `name` is `*`; `dbname` is only used when `dbname_given`.
    pub template: Database,
    /// The entry names a server database: every name goes there. Otherwise the server database
    /// is the name the client asked for (PgBouncer's rule).
    pub dbname_given: bool,
}

/// Pool settings of one server user (pgbouncer.ini `[users]`), winning over the database's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSettings {
    pub pool_mode: Option<PoolMode>,
    pub pool_size: Option<usize>,
    pub reserve_pool_size: Option<usize>,
    /// Server connections of every pool of this server user (see [`limits`]).
    pub max_user_connections: Option<usize>,
    /// Client connections logged in as this user (see [`limits`]).
    pub max_user_client_connections: Option<usize>,
    /// `client_idle_timeout`, `query_timeout`, `idle_transaction_timeout`,
    /// `transaction_timeout` of this user (see [`timeouts::UserTimeouts`]).
    pub timeouts: timeouts::UserTimeouts,
}

/// One `[peers]` entry: another instance of the fleet, where cancel requests carrying its
/// `peer_id` are forwarded. A `host` starting with `/` is a Unix socket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub pool_size: Option<usize>,
}

/// What the process does around the proxy: log file, pid file, OS user, verbosity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessSettings {
    pub logfile: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    /// Switch to this OS user once the listener is bound.
    pub user: Option<String>,
    /// pgbouncer.ini `verbose`: 0 info, 1 debug, 2+ trace.
    pub verbose: u8,
}

/// The pool settings of databases that do not set their own (`default_pool_size`,
/// `min_pool_size`, `pool_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolDefaults {
    pub pool_size: usize,
    pub min_pool_size: usize,
    pub pool_mode: PoolMode,
}

/// Which operator log lines are written (PgBouncer's `log_*` keys, all on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// `login attempt: db=... user=... tls=...` for each client login.
    pub connections: bool,
    /// `closing because: ... (age=...s)` for each client session's end.
    pub disconnections: bool,
    /// `pooler error: ...` for each error pgheal itself sends a client.
    pub pooler_errors: bool,
    /// `stats: ...` per database every `stats_period`.
    pub stats: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            connections: true,
            disconnections: true,
            pooler_errors: true,
            stats: true,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Pool settings for databases that do not set their own.
    pub defaults: PoolDefaults,
    /// The first address to accept clients on (its port is the one the console reports).
    pub listen: SocketAddr,
    /// More addresses (`listen_addr = *`, several addresses, or a name with several).
    pub listen_also: Vec<SocketAddr>,
    /// `so_reuseport`: listen with SO_REUSEPORT, so a new pgheal can listen on the same port
    /// while the old one drains (a rolling restart).
    pub so_reuseport: bool,
    /// TCP keepalive and user timeout on client and server sockets (see [`keepalive`]).
    pub keepalive: keepalive::TcpKeepalive,
    pub databases: BTreeMap<String, Database>,
    /// The `*` database, for names not in `databases`.
    pub fallback_database: Option<FallbackDatabase>,
    /// Pool settings per server user.
    pub user_settings: BTreeMap<String, UserSettings>,
    /// The other instances of the fleet by peer id (`[peers]`).
    pub peers: BTreeMap<u16, Peer>,
    /// This instance's peer id, carried in its cancel keys (0: no peering).
    pub peer_id: u16,
    /// Client users and their secrets (from `[users]` and `auth_file`).
    pub users: BTreeMap<String, Secret>,
    /// The method for every client; ignored when `hba` is set.
    pub auth_type: AuthMethod,
    /// `auth_type = hba`: the rules of `auth_hba_file`, which choose the method per connection
    /// (see [`crate::auth::hba`]).
    pub hba: Option<Arc<HbaRules>>,
    pub max_client_conn: usize,
    /// Reserve pool and per-database / per-user caps (see [`limits`]).
    pub limits: limits::Limits,
    pub query_wait_timeout: Duration,
    pub server_connect_timeout: Duration,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_reset_query: String,
    pub server_reset_query_always: bool,
    pub max_message_len: usize,
    /// Statements kept prepared per server connection in transaction pooling (LRU).
    pub max_prepared_statements: usize,
    /// Statement texts a pool's registry keeps in transaction pooling before it forgets the
    /// ones no client and no server connection holds (`statements::names`).
    pub max_pool_statements: usize,
    pub shutdown_timeout: Duration,
    /// `client_login_timeout`: the opening (TLS handshake, startup packet) and authentication
    /// of a client must be over within this time.
    pub client_login_timeout: Duration,
    /// The session-side timeouts (`client_idle_timeout`, `query_timeout`, ...; see
    /// [`timeouts`]).
    pub timeouts: timeouts::Timeouts,
    /// Users who may run every admin console command (`admin_users`).
    pub admin_users: Vec<String>,
    /// Users who may run the admin console's `SHOW` commands (`stats_users`).
    pub stats_users: Vec<String>,
    /// The period of the admin console's averages (`stats_period`).
    pub stats_period: Duration,
    /// Operator log lines, PgBouncer's keys (see `crate::metrics::oplog`).
    pub log: LogSettings,
    /// Event loops, one thread each (see [`crate::event_loops`]).
    pub threads: usize,
    pub log_format: LogFormat,
    pub metrics_listen: Option<SocketAddr>,
    pub schema_watch: SchemaWatch,
    pub heal: RelayConfig,
    /// Where the file came from, for the log.
    pub source: Option<PathBuf>,
    pub process: ProcessSettings,
    /// Settings that were read but are not honoured, one line each (file:line, key, why); `main`
    /// logs them once logging is set up.
    pub warnings: Vec<String>,
    /// TLS from clients (`client_tls_*`).
    pub client_tls: tls::ClientTls,
    /// The Unix socket listener (`unix_socket_dir`, `unix_socket_mode`, `unix_socket_group`);
    /// `None`: no Unix socket (see [`unix_socket`]).
    pub unix_socket: Option<unix_socket::UnixSocket>,
    /// Login retry, idle checks, reuse order, `application_name_add_host` (see [`servers`]).
    pub servers: servers::ServerSettings,
}

impl Config {
    /// A configured database (the `*` fallback is not consulted).
    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.get(name)
    }

    /// The database a client asking for `name` as `client_user` gets: a configured one, else
    /// one made from the `*` fallback. Pool settings of the server user (the database's `user`,
    /// else the client's) win over the database's, as in PgBouncer.
    pub fn database_for(&self, name: &str, client_user: &str) -> Option<Cow<'_, Database>> {
        let db = match self.databases.get(name) {
            Some(d) => Cow::Borrowed(d),
            None => {
                let f = self.fallback_database.as_ref()?;
                let mut d = f.template.clone();
                d.name = name.to_owned();
                if !f.dbname_given {
                    d.dbname = name.to_owned();
                }
                Cow::Owned(d)
            }
        };
        let server_user = db.user.as_deref().unwrap_or(client_user);
        let Some(u) = self.user_settings.get(server_user) else {
            return Some(db);
        };
        if u.pool_mode.is_none() && u.pool_size.is_none() && u.reserve_pool_size.is_none() {
            return Some(db);
        }
        let mut d = db.into_owned();
        if let Some(m) = u.pool_mode {
            d.pool_mode = m;
        }
        if let Some(n) = u.pool_size {
            d.pool_size = n;
            d.min_pool_size = d.min_pool_size.min(n);
        }
        if let Some(n) = u.reserve_pool_size {
            d.limits.reserve_pool_size = n;
        }
        Some(Cow::Owned(d))
    }

    /// The `max_user_connections` and `max_user_client_connections` of `user` (its
    /// `[users]` values, else the global ones).
    pub fn user_limits(&self, user: &str) -> limits::UserLimits {
        self.limits.for_user(self.user_settings.get(user))
    }
}
