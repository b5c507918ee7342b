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
    #[error("no user name in the startup packet")]
    NoUser,
    #[error("database {0:?} does not exist")]
    UnknownDatabase(String),
    #[error("max_client_conn reached")]
    TooManyClients,
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
    #[error("timed out waiting for the startup packet")]
    StartupTimeout,
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
            | SessionError::NoUser => "auth_failed",
            SessionError::UnknownDatabase(_) => "unknown_database",
            SessionError::TooManyClients => "max_client_conn",
            SessionError::Pool(PoolError::WaitTimeout(_)) => "wait_timeout",
            SessionError::Pool(_) => "server_unavailable",
            SessionError::Protocol(_) | SessionError::StartupTimeout => "protocol",
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
                    "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"
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
            SessionError::NoUser => fatal(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                "no PostgreSQL user name specified in startup packet".into(),
            ),
            SessionError::UnknownDatabase(db) => fatal(
                sqlstate::INVALID_CATALOG_NAME,
                format!("database \"{db}\" does not exist"),
            ),
            SessionError::TooManyClients => fatal(
                sqlstate::TOO_MANY_CONNECTIONS,
                "sorry, too many clients already (pgheal max_client_conn)".into(),
            ),
            SessionError::Pool(PoolError::WaitTimeout(d)) => fatal(
                sqlstate::TOO_MANY_CONNECTIONS,
                format!(
                    "pgheal: no server connection became available within query_wait_timeout ({}s)",
                    d.as_secs_f64()
                ),
            ),
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
            SessionError::StartupTimeout => fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "timed out waiting for the startup packet".into(),
            ),
            SessionError::Settings(_) => fatal(
                sqlstate::CONNECTION_FAILURE,
                "pgheal: the session's settings could not be carried to a server connection; connection closed".into(),
            ),
            SessionError::Net(_) => None,
        }
    }
}
