//! The command line. Each setting flag has a `PGHEAL_*` environment variable; clap resolves
//! flag over environment, and [`super::validate`] puts both over the file.
//!
//! PgBouncer's command line works too, with PgBouncer's meanings:
//! `pgheal [-d] [-q] [-v]... [-u USER] CONFIG_FILE`, plus `-R` (online restart, see
//! [`crate::takeover`]), `-V` and `-h`. The configuration file may be a pgbouncer.ini or pgheal's
//! TOML, given as the argument or with `--config`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pgheal",
    version,
    about = "PostgreSQL proxy and pooler that heals 'cached plan must not change result type'",
    after_help = "A PgBouncer command line works as it is: pgheal [-d] [-q] [-v] [-u USER] /etc/pgbouncer/pgbouncer.ini"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration file: a pgbouncer.ini (PgBouncer's format, as it is) or pgheal's TOML. The
    /// type comes from the extension (.ini, .toml), else from the content (a [pgbouncer]
    /// section).
    #[arg(value_name = "CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// Run in the background once listening (needs a pidfile in the configuration); logs go
    /// to the logfile only.
    #[arg(short = 'd', long)]
    pub daemon: bool,
    /// Log nothing to stderr (a logfile still gets everything).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// More detail in the log: -v debug, -vv trace (overrides PGHEAL_LOG and `verbose`).
    #[arg(short = 'v', long, action = ArgAction::Count)]
    pub verbose: u8,
    /// Online restart, as PgBouncer's -R: take the listening sockets and idle clients over
    /// from the pgheal running with the same configuration (found through unix_socket_dir);
    /// boots normally when none runs.
    #[arg(short = 'R', long)]
    pub reboot: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a throwaway PostgreSQL, break a prepared statement with a migration, and show it
    /// failing directly and healed through pgheal.
    Demo,
    /// Install the event trigger that `--schema-watch listen` listens to (needs a superuser).
    InstallSchemaWatch {
        /// postgres://superuser:password@host:port/dbname of the database to watch.
        #[arg(long, env = "PGHEAL_UPSTREAM")]
        upstream: Option<String>,
        /// Print the SQL instead of running it.
        #[arg(long)]
        print: bool,
    },
    /// Ask a running pgheal whether it is ready (GET /readyz on its metrics listener), for
    /// Docker's HEALTHCHECK: exit 0 if so, 1 if not (the reasons go to stderr).
    Healthcheck {
        /// The metrics listener of the pgheal to ask (0.0.0.0 and [::] mean this host).
        #[arg(long, env = "PGHEAL_METRICS_LISTEN", default_value = "127.0.0.1:9930")]
        metrics_listen: String,
        /// Only ask whether the process serves (GET /healthz), not whether it is ready.
        #[arg(long)]
        live: bool,
        /// Databases allowed to be down (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        allow_down: Vec<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Tell what a migration does to the statements an app prepares (recorded with
    /// --record-statements): unchanged, healed by pgheal, breaks even through pgheal, fails.
    /// Nothing is changed: the migration runs in a transaction that is rolled back, or in a
    /// scratch database. Exit status 0: nothing breaks; 1: something breaks even through
    /// pgheal; 2: the check could not run.
    CheckMigration {
        /// postgres://user:password@host:port/dbname of a database with the current schema.
        #[arg(long, env = "PGHEAL_UPSTREAM")]
        upstream: String,
        /// The statements file written by --record-statements (JSON lines).
        #[arg(long)]
        statements: PathBuf,
        /// Only the statements recorded for this database (pgheal's name for it).
        #[arg(long)]
        database: Option<String>,
        /// text, markdown (a pull-request comment) or json.
        #[arg(long, value_enum, default_value = "text")]
        format: crate::migration_check::report::Format,
        /// The migration: a file of SQL statements.
        migration: PathBuf,
    },
}

/// Settings for running the proxy. Every flag overrides the file.
#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// Configuration file (TOML or pgbouncer.ini); the same as the CONFIG_FILE argument.
    #[arg(long, short = 'c', env = "PGHEAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// OS user to switch to once the listener is bound (only as root).
    #[arg(long, short = 'u', value_name = "USERNAME")]
    pub user: Option<String>,
    /// Address to accept clients on, e.g. 127.0.0.1:6432.
    #[arg(long, env = "PGHEAL_LISTEN")]
    pub listen: Option<String>,
    /// One upstream database: postgres://user:password@host:port/dbname.
    #[arg(long, env = "PGHEAL_UPSTREAM")]
    pub upstream: Option<String>,
    /// session, transaction or statement.
    #[arg(long, env = "PGHEAL_POOL_MODE")]
    pub pool_mode: Option<String>,
    /// Server connections per (database, user).
    #[arg(long, env = "PGHEAL_POOL_SIZE")]
    pub pool_size: Option<usize>,
    /// Server connections kept open even when idle.
    #[arg(long, env = "PGHEAL_MIN_POOL_SIZE")]
    pub min_pool_size: Option<usize>,
    /// Client connections accepted at once.
    #[arg(long, env = "PGHEAL_MAX_CLIENT_CONN")]
    pub max_client_conn: Option<usize>,
    /// scram-sha-256, md5, plain, trust or hba.
    #[arg(long, env = "PGHEAL_AUTH_TYPE")]
    pub auth_type: Option<String>,
    /// PgBouncer-style userlist.txt.
    #[arg(long, env = "PGHEAL_AUTH_FILE")]
    pub auth_file: Option<String>,
    /// The HBA rules file for `--auth-type hba` (PgBouncer's subset of pg_hba.conf).
    #[arg(long, env = "PGHEAL_AUTH_HBA_FILE")]
    pub auth_hba_file: Option<String>,
    /// Seconds a client waits for a server connection.
    #[arg(long, env = "PGHEAL_QUERY_WAIT_TIMEOUT")]
    pub query_wait_timeout: Option<f64>,
    /// Seconds after which a server connection is closed when it is next idle (0 = never).
    #[arg(long, env = "PGHEAL_SERVER_LIFETIME")]
    pub server_lifetime: Option<f64>,
    /// Seconds an idle server connection is kept (0 = forever).
    #[arg(long, env = "PGHEAL_SERVER_IDLE_TIMEOUT")]
    pub server_idle_timeout: Option<f64>,
    /// Query run when a server connection goes back to the pool (default DISCARD ALL).
    #[arg(long, env = "PGHEAL_SERVER_RESET_QUERY")]
    pub server_reset_query: Option<String>,
    /// Seconds to let sessions finish after SIGTERM.
    #[arg(long, env = "PGHEAL_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<f64>,
    /// human or json.
    #[arg(long, env = "PGHEAL_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Address of the Prometheus endpoint (/metrics), e.g. 127.0.0.1:9930 (the port the image uses).
    #[arg(long, env = "PGHEAL_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Largest message accepted from a client or server, in bytes.
    #[arg(long, env = "PGHEAL_MAX_MESSAGE_LEN")]
    pub max_message_len: Option<usize>,
    /// Statements kept prepared per server connection in transaction pooling.
    #[arg(long, env = "PGHEAL_MAX_PREPARED_STATEMENTS")]
    pub max_prepared_statements: Option<usize>,
    /// off or listen: learn of schema changes made straight on the server from the event
    /// trigger installed by `pgheal install-schema-watch`.
    #[arg(long, env = "PGHEAL_SCHEMA_WATCH")]
    pub schema_watch: Option<String>,
    /// off, after-schema-change or always: inside a transaction block, bracket the Bind of a
    /// row-returning prepared statement with a savepoint so a stale plan can be healed.
    #[arg(long, env = "PGHEAL_SAVEPOINT_GUARD")]
    pub savepoint_guard: Option<String>,
    /// Seconds after a schema change during which `after-schema-change` guards.
    #[arg(long, env = "PGHEAL_SAVEPOINT_GUARD_WINDOW")]
    pub savepoint_guard_window: Option<f64>,
    /// Event loops, one thread each; sessions are spread across them (1 = a single loop, like
    /// PgBouncer). Default: the CPUs available to pgheal (its cgroup quota included) when every
    /// database uses session pooling, else 1.
    #[arg(long, env = "PGHEAL_THREADS")]
    pub threads: Option<usize>,
    /// TLS to the servers: disable, allow, prefer (default), require, verify-ca or
    /// verify-full (libpq's sslmode; an upstream URL's sslmode wins).
    #[arg(long, env = "PGHEAL_SERVER_TLS_SSLMODE")]
    pub server_tls_sslmode: Option<String>,
    /// Root certificates (PEM) the servers' certificates must lead to.
    #[arg(long, env = "PGHEAL_SERVER_TLS_CA_FILE")]
    pub server_tls_ca_file: Option<String>,
    /// Certificate (PEM) pgheal shows servers that ask for one.
    #[arg(long, env = "PGHEAL_SERVER_TLS_CERT_FILE")]
    pub server_tls_cert_file: Option<String>,
    /// Private key (PEM) of --server-tls-cert-file.
    #[arg(long, env = "PGHEAL_SERVER_TLS_KEY_FILE")]
    pub server_tls_key_file: Option<String>,
    /// TLS versions to the servers: secure (default: 1.2 and 1.3), tlsv1.2, tlsv1.3.
    #[arg(long, env = "PGHEAL_SERVER_TLS_PROTOCOLS")]
    pub server_tls_protocols: Option<String>,
    /// TLS from clients: disable (default), allow, prefer, require, verify-ca or verify-full
    /// (PgBouncer's client_tls_sslmode).
    #[arg(long, env = "PGHEAL_CLIENT_TLS_SSLMODE")]
    pub client_tls_sslmode: Option<String>,
    /// pgheal's certificate (PEM) for clients.
    #[arg(long, env = "PGHEAL_CLIENT_TLS_CERT_FILE")]
    pub client_tls_cert_file: Option<String>,
    /// Private key (PEM) of --client-tls-cert-file.
    #[arg(long, env = "PGHEAL_CLIENT_TLS_KEY_FILE")]
    pub client_tls_key_file: Option<String>,
    /// Root certificates (PEM) client certificates must lead to (verify-ca, verify-full).
    #[arg(long, env = "PGHEAL_CLIENT_TLS_CA_FILE")]
    pub client_tls_ca_file: Option<String>,
    /// TLS versions for clients: secure (default: 1.2 and 1.3), tlsv1.2, tlsv1.3.
    #[arg(long, env = "PGHEAL_CLIENT_TLS_PROTOCOLS")]
    pub client_tls_protocols: Option<String>,
    /// Append each distinct statement clients prepare (text, parameter types, result columns)
    /// to this file, one JSON line each, for `pgheal check-migration`.
    #[arg(long, env = "PGHEAL_RECORD_STATEMENTS", value_name = "FILE")]
    pub record_statements: Option<String>,
    /// Directory of the Unix socket `.s.PGSQL.<port>` ("" for none). Default /tmp when the
    /// listen port is fixed, none with port 0.
    #[arg(long, env = "PGHEAL_UNIX_SOCKET_DIR")]
    pub unix_socket_dir: Option<String>,
    /// Turn healing off (a plain pooler).
    #[arg(long, env = "PGHEAL_NO_HEAL")]
    pub no_heal: bool,
}
