//! The configuration file as written by users: every key optional. A TOML file deserializes
//! straight into [`FileConfig`] (unknown keys rejected); a `pgbouncer.ini` is mapped onto the
//! same structs by [`super::pgbouncer`], which also fills [`FileConfig::pgbouncer`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{AuthType, LogFormat, PoolMode};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub pgheal: General,
    #[serde(default)]
    pub heal: Heal,
    #[serde(default)]
    pub databases: BTreeMap<String, FileDatabase>,
    /// user name → secret (plain text, `md5…` or `SCRAM-SHA-256$…`).
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Pool settings per server user (pgbouncer.ini's `[users]`): they win over the database's.
    #[serde(default)]
    pub user_settings: BTreeMap<String, FileUserSettings>,
    /// The other instances of a fleet by peer id (`[peers.2] host = "..." port = 6432`), where
    /// cancel requests carrying their id are forwarded (pgbouncer.ini's `[peers]`).
    #[serde(default)]
    pub peers: BTreeMap<String, FilePeer>,
    /// Set when the file was a pgbouncer.ini: what TOML cannot say, and PgBouncer's leniency.
    #[serde(skip)]
    pub pgbouncer: Option<PgBouncerExtras>,
}

/// What a pgbouncer.ini carries besides the settings TOML has too.
#[derive(Debug, Default, Clone)]
pub struct PgBouncerExtras {
    /// One line per key (or database, user, section) that is read but not honoured, each naming
    /// it with its file and line. Logged at startup.
    pub warnings: Vec<String>,
    /// `[peers]`: where cancel requests for other instances go.
    pub peers: BTreeMap<u16, super::Peer>,
    /// `verbose`: 0 info, 1 debug, 2+ trace.
    pub verbose: u8,
}

/// `[peers.ID]` (TOML).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePeer {
    /// A host name, an IP address, or a Unix socket directory (starting with `/`).
    pub host: String,
    pub port: Option<u16>,
}

/// `[user_settings.NAME]` (TOML) or a `[users]` line (pgbouncer.ini).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUserSettings {
    pub pool_mode: Option<PoolMode>,
    pub pool_size: Option<usize>,
    pub reserve_pool_size: Option<usize>,
    pub max_user_connections: Option<usize>,
    pub max_user_client_connections: Option<usize>,
    /// This user's session timeouts in seconds, winning over the global ones; 0 = the global
    /// value (see [`super::timeouts::UserTimeouts`]).
    pub client_idle_timeout: Option<f64>,
    pub query_timeout: Option<f64>,
    pub idle_transaction_timeout: Option<f64>,
    pub transaction_timeout: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct General {
    /// This instance's id in a fleet (1–65535; 0 or unset: no peering). It is carried in the
    /// cancel keys pgheal issues, so a cancel request reaching another instance is forwarded
    /// here (PgBouncer's `peer_id`).
    pub peer_id: Option<u16>,
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub pool_mode: Option<PoolMode>,
    pub pool_size: Option<usize>,
    pub min_pool_size: Option<usize>,
    pub max_client_conn: Option<usize>,
    /// Extra connections per pool for clients that waited `reserve_pool_timeout` (seconds).
    pub reserve_pool_size: Option<usize>,
    pub reserve_pool_timeout: Option<f64>,
    /// Server connections per database / per server user; 0 = no limit (clients wait).
    pub max_db_connections: Option<usize>,
    pub max_user_connections: Option<usize>,
    /// Client connections per database / per login user; 0 = no limit (logins refused).
    pub max_db_client_connections: Option<usize>,
    pub max_user_client_connections: Option<usize>,
    pub auth_type: Option<AuthType>,
    pub auth_file: Option<String>,
    /// The HBA rules when `auth_type = "hba"` (PgBouncer's subset of `pg_hba.conf`).
    pub auth_hba_file: Option<String>,
    /// Look up clients missing from the auth_file on the server: connect as `auth_user`
    /// (credentials from the auth_file) to `auth_dbname` (default: the client's database) and
    /// run `auth_query` with the user name as `$1`.
    pub auth_user: Option<String>,
    pub auth_query: Option<String>,
    pub auth_dbname: Option<String>,
    pub query_wait_timeout: Option<f64>,
    pub server_connect_timeout: Option<f64>,
    pub server_lifetime: Option<f64>,
    pub server_idle_timeout: Option<f64>,
    pub server_reset_query: Option<String>,
    pub server_reset_query_always: Option<bool>,
    pub max_message_len: Option<usize>,
    pub max_prepared_statements: Option<usize>,
    /// Statement texts a pool keeps (transaction pooling) before forgetting unused ones.
    pub max_pool_statements: Option<usize>,
    pub shutdown_timeout: Option<f64>,
    /// Seconds a client has to log in (TLS handshake, startup packet, authentication); 0 = no
    /// limit.
    pub client_login_timeout: Option<f64>,
    /// Session timeouts in seconds, 0 = off (see [`super::timeouts`]).
    pub client_idle_timeout: Option<f64>,
    pub query_timeout: Option<f64>,
    pub idle_transaction_timeout: Option<f64>,
    pub transaction_timeout: Option<f64>,
    pub query_wait_notify: Option<f64>,
    pub cancel_wait_timeout: Option<f64>,
    pub threads: Option<usize>,
    pub log_format: Option<LogFormat>,
    pub metrics_listen: Option<String>,
    pub schema_watch: Option<super::SchemaWatch>,
    /// Append log lines to this file (reopened on SIGHUP).
    pub logfile: Option<String>,
    /// Write the process id here once listening; required by `--daemon`.
    pub pidfile: Option<String>,
    /// Switch to this OS user once the listener is bound.
    pub user: Option<String>,
    /// TLS to the servers: disable, allow, prefer (default), require, verify-ca, verify-full.
    pub server_tls_sslmode: Option<super::tls::SslMode>,
    /// Root certificates (PEM) for verify-ca / verify-full (and require, as in libpq).
    pub server_tls_ca_file: Option<String>,
    /// Certificate and key (PEM) pgheal shows servers that ask for one.
    pub server_tls_cert_file: Option<String>,
    pub server_tls_key_file: Option<String>,
    /// PgBouncer's syntax: secure (default), all, tlsv1.2, tlsv1.3.
    pub server_tls_protocols: Option<String>,
    /// Listen with SO_REUSEPORT (PgBouncer's `so_reuseport`).
    pub so_reuseport: Option<bool>,
    /// TCP keepalive on client and server sockets (PgBouncer's keys and units: seconds,
    /// seconds, a count, milliseconds; 0 = the OS default).
    pub tcp_keepalive: Option<bool>,
    pub tcp_keepidle: Option<u64>,
    pub tcp_keepintvl: Option<u64>,
    pub tcp_keepcnt: Option<u64>,
    pub tcp_user_timeout: Option<u64>,
    /// Users who may run every admin console command.
    pub admin_users: Option<Vec<String>>,
    /// Users who may run the admin console's SHOW commands.
    pub stats_users: Option<Vec<String>>,
    /// Seconds between the snapshots the admin console's averages are computed over.
    pub stats_period: Option<f64>,
    /// Log each login (PgBouncer's `log_connections`).
    pub log_connections: Option<bool>,
    /// Log each client session's end and why (`log_disconnections`).
    pub log_disconnections: Option<bool>,
    /// Log each error pgheal itself sends a client (`log_pooler_errors`).
    pub log_pooler_errors: Option<bool>,
    /// Log a summary line per database every `stats_period` (`log_stats`).
    pub log_stats: Option<bool>,
    /// TLS from clients: disable (default), allow, prefer, require, verify-ca, verify-full
    /// (PgBouncer's meanings).
    pub client_tls_sslmode: Option<super::tls::SslMode>,
    /// pgheal's certificate and key (PEM) for clients; required unless disable.
    pub client_tls_cert_file: Option<String>,
    pub client_tls_key_file: Option<String>,
    /// Root certificates (PEM) client certificates must lead to (verify-ca / verify-full).
    pub client_tls_ca_file: Option<String>,
    /// PgBouncer's syntax: secure (default), all, tlsv1.2, tlsv1.3.
    pub client_tls_protocols: Option<String>,
    /// PgBouncer's `client_tls_ciphers` (see [`super::tls::TlsCiphers`]).
    pub client_tls_ciphers: Option<String>,
    /// The directory of the Unix socket `.s.PGSQL.<port>`; `""` for none (see
    /// [`super::unix_socket`]).
    pub unix_socket_dir: Option<String>,
    /// The socket file's mode (default 0777).
    pub unix_socket_mode: Option<super::unix_socket::SocketMode>,
    /// The socket file's group.
    pub unix_socket_group: Option<String>,
    /// Seconds a server whose connect or login failed is left alone (PgBouncer's
    /// `server_login_retry`, default 15).
    pub server_login_retry: Option<f64>,
    /// Seconds an idle server connection may sit unused before it is checked with
    /// `server_check_query` on its next use (default 30).
    pub server_check_delay: Option<f64>,
    /// The check: `"<empty>"` (default) sends an empty query, `""` turns checks off.
    pub server_check_query: Option<String>,
    /// Reuse idle server connections oldest first instead of most recent first.
    pub server_round_robin: Option<bool>,
    /// Append ` - host:port` of the client to its `application_name`.
    pub application_name_add_host: Option<bool>,
    /// Session pooling: end a session whose server connection RECONNECT made stale at its next
    /// transaction boundary instead of at its end.
    pub server_fast_close: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heal {
    pub enabled: Option<bool>,
    pub holdback_bytes: Option<usize>,
    pub replay_bytes: Option<usize>,
    pub max_heals: Option<u8>,
    pub savepoint_guard: Option<crate::heal::SavepointGuard>,
    pub savepoint_guard_window: Option<f64>,
    /// Record prepared statements for `pgheal check-migration` (a JSON-lines file).
    pub record_statements: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDatabase {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Instead of host/port/dbname/user/password.
    pub url: Option<String>,
    pub pool_size: Option<usize>,
    pub min_pool_size: Option<usize>,
    pub pool_mode: Option<PoolMode>,
    pub reserve_pool_size: Option<usize>,
    pub max_db_connections: Option<usize>,
    pub max_db_client_connections: Option<usize>,
    /// auth_query for clients not in the auth_file: run as this user (PgBouncer's
    /// `auth_user`), this query, in this database.
    pub auth_user: Option<String>,
    pub auth_query: Option<String>,
    pub auth_dbname: Option<String>,
    /// One port per host of `host` (instead of `port`), as libpq's `port=5432,5433`.
    pub ports: Option<Vec<u16>>,
    /// With several hosts in `host` (`"a,b"`): `round-robin` (default) or `disable`.
    pub load_balance_hosts: Option<String>,
    /// Run on each new server connection after login.
    pub connect_query: Option<String>,
    /// Startup parameters of new server connections.
    pub client_encoding: Option<String>,
    pub datestyle: Option<String>,
    pub timezone: Option<String>,
    pub application_name: Option<String>,
}

impl std::fmt::Debug for FileDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDatabase")
            .field("host", &self.host)
            .field("dbname", &self.dbname)
            .finish_non_exhaustive()
    }
}
