//! Session errors and what a client may be told about each.
//!
//! Only the variants listed in [`SessionError::client_error`] produce a message for the client;
//! internal details (I/O errors, server addresses) stay in the log.

use crate::net::NetError;
use crate::pool::{PoolError, ServerError};
use crate::protocol::{encode, sqlstate, Frame, ProtocolError};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("password authentication failed for user {0:?}")]
    AuthFailed(String),
    /// `auth_type = trust` with users configured: the user is not one of them.
    #[error("role {0:?} is not a configured user")]
    UnknownUser(String),
    #[error("malformed authentication message")]
    AuthMalformed,
    /// Refused by `auth_hba_file` before any exchange (no line matches, a `reject` line, or
    /// `cert` without a matching certificate); the text is PostgreSQL's.
    #[error("{0}")]
    HbaRefused(String),
    #[error("no user name in the startup packet")]
    NoUser,
    #[error("database {0:?} does not exist")]
    UnknownDatabase(String),
    /// Statement pooling: the client opened a transaction block.
    #[error("transaction blocks not allowed in statement pooling mode")]
    TransactionBlockInStatementMode,
    /// `server_fast_close`: the session's server connection was made stale (RECONNECT, a
    /// reload that changed the login) and the session reached a transaction boundary.
    #[error("database configuration changed")]
    ConfigurationChanged,
    /// `DISABLE db` in the admin console.
    #[error("database {0:?} is disabled")]
    DatabaseDisabled(String),
    /// A user who is neither in `admin_users` nor in `stats_users` asked for the console.
    #[error("user {0:?} may not use the admin console")]
    ConsoleNotAllowed(String),
    #[error("max_client_conn reached")]
    TooManyClients,
    /// `max_db_client_connections` or `max_user_client_connections` reached.
    #[error("client connections exceeded ({})", .0.key())]
    ClientLimit(crate::pool::registry::ClientLimit),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("server parameter could not be set")]
    ParamRejected(Frame),
    #[error("unsupported startup parameter {0:?}")]
    UnsupportedParam(String),
    #[error("i/o: {0}")]
    Net(#[from] NetError),
    #[error("relay: {0}")]
    Relay(#[from] crate::heal::RelayError),
    /// `client_login_timeout` passed before the client was logged in (TLS handshake, startup
    /// packet or authentication).
    #[error("client_login_timeout")]
    LoginTimeout,
    /// The client's TLS handshake failed, or its TLS opening broke the rules (no ALPN with
    /// direct TLS, plain bytes after SSLRequest). Nothing is sent: there is no channel left.
    #[error("TLS: {0}")]
    Tls(String),
    /// A plain-text client while `client_tls_sslmode` requires TLS.
    #[error("TLS is required (client_tls_sslmode) but the client connected without it")]
    TlsRequired {
        host: String,
        user: String,
        database: String,
    },
    /// A session timeout fired in the relay (`query_timeout`, ...): PgBouncer's reason.
    #[error("{0}")]
    Timeout(crate::session::timeouts::Timeout),
    /// The client's session settings could not be read from or restored on a server
    /// connection (transaction pooling).
    #[error("session settings: {0}")]
    Settings(#[from] crate::session::settings::SettingsError),
}

impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        SessionError::Net(NetError::Io(e))
    }
}

impl SessionError {
    /// The `reason` label of `pgheal_clients_refused_total`, for errors before the relay.
    pub fn refusal_reason(&self) -> &'static str {
        match self {
            SessionError::AuthFailed(_)
            | SessionError::UnknownUser(_)
            | SessionError::AuthMalformed
            | SessionError::HbaRefused(_)
            | SessionError::NoUser => "auth_failed",
            SessionError::UnknownDatabase(_) => "unknown_database",
            SessionError::DatabaseDisabled(_) => "database_disabled",
            SessionError::ConsoleNotAllowed(_) => "auth_failed",
            SessionError::TooManyClients => "max_client_conn",
            SessionError::ClientLimit(l) => l.key(),
            SessionError::Pool(PoolError::WaitTimeout(_)) => "wait_timeout",
            SessionError::Pool(_) => "server_unavailable",
            SessionError::Protocol(_) => "protocol",
            SessionError::LoginTimeout => "login_timeout",
            SessionError::Timeout(_) => "timeout",
            SessionError::Tls(_) | SessionError::TlsRequired { .. } => "tls",
            _ => "other",
        }
    }

    /// The FATAL ErrorResponse for the client, if this error may be reported to it.
    pub fn client_error(&self) -> Option<Frame> {
        let fatal = |code: &str, msg: String| Some(encode::error_response("FATAL", code, &msg));
        match self {
            SessionError::Protocol(ProtocolError::UnsupportedProtocol { major, minor })
            | SessionError::Net(NetError::Protocol(ProtocolError::UnsupportedProtocol {
                major,
                minor,
            })) => fatal(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.{}",
                    crate::protocol::startup::NEWEST_MINOR
                ),
            ),
            SessionError::Protocol(e) => fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("invalid frontend message: {e}"),
            ),
            SessionError::AuthFailed(user) => fatal(
                sqlstate::INVALID_PASSWORD,
                format!("password authentication failed for user \"{user}\""),
            ),
            SessionError::UnknownUser(user) => fatal(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                format!("role \"{user}\" does not exist"),
            ),
            SessionError::AuthMalformed => fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "malformed authentication message".into(),
            ),
            SessionError::HbaRefused(msg) => {
                fatal(sqlstate::INVALID_AUTHORIZATION_SPECIFICATION, msg.clone())
            }
            SessionError::NoUser => fatal(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                "no PostgreSQL user name specified in startup packet".into(),
            ),
            SessionError::UnknownDatabase(db) => fatal(
                sqlstate::INVALID_CATALOG_NAME,
                format!("database \"{db}\" does not exist"),
            ),
            // PgBouncer's words and code (its pooler errors are 08P01).
            SessionError::DatabaseDisabled(db) => fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("database \"{db}\" is disabled"),
            ),
            SessionError::TransactionBlockInStatementMode => fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "transaction blocks not allowed in statement pooling mode".into(),
            ),
            // PgBouncer's words when server_fast_close closes the server and its client.
            SessionError::ConfigurationChanged => fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "database configuration changed".into(),
            ),
            SessionError::ConsoleNotAllowed(_) => {
                fatal(sqlstate::PROTOCOL_VIOLATION, "not allowed".into())
            }
            SessionError::ClientLimit(l) => fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("client connections exceeded ({})", l.key()),
            ),
            // PgBouncer's SQLSTATE (08P01, as for every error it sends itself) and words, so
            // apps and alerts that match PgBouncer's refusals keep working.
            SessionError::TooManyClients => fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "no more connections allowed (max_client_conn)".into(),
            ),
            SessionError::Pool(PoolError::WaitTimeout(_)) => {
                fatal(sqlstate::PROTOCOL_VIOLATION, "query_wait_timeout".into())
            }
            // The server refused pgheal's own login (its configured password, auth_user,
            // or pass-through keys): that is the pooler's failure, not the client's, whose
            // own password pgheal has checked already. A 28xxx passed on would tell the
            // client its password was wrong.
            SessionError::Pool(PoolError::Server(ServerError::Rejected { frame, message }))
                if is_auth_failure(frame) =>
            {
                fatal(
                    sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                    format!("pgheal could not log in to the server: {message}"),
                )
            }
            SessionError::Pool(PoolError::Server(ServerError::Rejected { frame, .. })) => {
                Some(frame.clone())
            }
            // A TLS failure is pgheal's configuration against the server's certificate (a
            // wrong CA or host name, a server without TLS), a SCRAM failure its credentials
            // against the server's (a verifier copied from another salt, no keys yet for
            // pass-through): worth telling, and no secret.
            SessionError::Pool(PoolError::Server(
                e @ (ServerError::Tls(_)
                | ServerError::TlsRefused(_)
                | ServerError::TlsBadAnswer(_)
                | ServerError::Scram(_)
                | ServerError::NoPassthroughKeys(_)
                | ServerError::Md5ForScram(_)
                | ServerError::ChannelBindingRequired),
            )) => fatal(
                sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                format!("pgheal: cannot connect to the database server: {e}"),
            ),
            // PgBouncer's words and code.
            SessionError::Pool(PoolError::Server(e @ ServerError::LoginFailing(_))) => {
                fatal(sqlstate::PROTOCOL_VIOLATION, e.to_string())
            }
            SessionError::Pool(PoolError::Server(e @ ServerError::ConnectQuery(_))) => fatal(
                sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                format!("pgheal: cannot connect to the database server: {e}"),
            ),
            SessionError::Pool(PoolError::Server(_)) => fatal(
                sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                "pgheal: cannot connect to the database server".into(),
            ),
            SessionError::Pool(PoolError::Closed) => fatal(
                sqlstate::CANNOT_CONNECT_NOW,
                "pgheal is shutting down".into(),
            ),
            SessionError::ParamRejected(frame) => Some(frame.clone()),
            SessionError::UnsupportedParam(p) => fatal(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("pgheal does not support the startup parameter \"{p}\""),
            ),
            SessionError::Relay(crate::heal::RelayError::Client(e)) => fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("invalid frontend message: {e}"),
            ),
            SessionError::Relay(crate::heal::RelayError::Server(_)) => fatal(
                sqlstate::CONNECTION_FAILURE,
                "pgheal: the server sent a malformed message; connection closed".into(),
            ),
            SessionError::Net(NetError::Protocol(e)) => fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("invalid frontend message: {e}"),
            ),
            // PgBouncer's words and code.
            SessionError::LoginTimeout => {
                fatal(sqlstate::PROTOCOL_VIOLATION, "client_login_timeout".into())
            }
            // PgBouncer's words and code (`disconnect_client`/`disconnect_server` reasons).
            SessionError::Timeout(t) => fatal(sqlstate::PROTOCOL_VIOLATION, t.reason().into()),
            SessionError::Settings(_) => fatal(
                sqlstate::CONNECTION_FAILURE,
                "pgheal: the session's settings could not be carried to a server connection; connection closed".into(),
            ),
            // PostgreSQL's wording for a hostssl-only pg_hba.conf (with "no encryption" at the
            // end), saying that pgheal's setting is what refuses.
            SessionError::TlsRequired {
                host,
                user,
                database,
            } => fatal(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                format!("pgheal requires TLS (client_tls_sslmode): connection refused for host \"{host}\", user \"{user}\", database \"{database}\", no encryption"),
            ),
            SessionError::Net(_) | SessionError::Tls(_) => None,
        }
    }
}

/// Whether a server's ErrorResponse is an authentication failure (SQLSTATE class 28).
fn is_auth_failure(frame: &Frame) -> bool {
    crate::protocol::backend::ErrorFields::decode(frame)
        .ok()
        .and_then(|e| e.code())
        .is_some_and(|c| c.starts_with("28"))
}
