//! Talking to PostgreSQL for the check: pgheal's own server connection ([`ServerConn`]) and
//! protocol codec, so descriptions come back as the engine sees them (names, type OIDs, typmods
//! and origins: what a driver's Describe gets, and what the engine's contracts hold).
//!
//! Every exchange reads up to ReadyForQuery and is bounded by a timeout.

use std::time::Duration;

use crate::config::tls::{ServerTls, ServerTlsOptions};
use crate::config::upstream::Upstream;
use crate::pool::server::{ServerConn, ServerLogin};
use crate::protocol::backend::{self, decode_row_description, ErrorFields, TxStatus};
use crate::protocol::frontend::Target;
use crate::protocol::{encode, Frame};

use super::classify::After;
use super::CheckError;

/// Longest wait for one statement's description or a short command.
const SHORT: Duration = Duration::from_secs(60);
/// Longest wait for the migration itself.
pub(super) const MIGRATION: Duration = Duration::from_secs(600);

/// How to log into the upstream (or a scratch database beside it).
pub(super) fn login(up: &Upstream, dbname: &str) -> Result<ServerLogin, CheckError> {
    let mut o = ServerTlsOptions::default();
    if let Some(m) = up.tls.sslmode {
        o.mode = m;
    }
    if let Some(cb) = up.tls.channel_binding {
        o.channel_binding = cb;
    }
    for (slot, v) in [
        (&mut o.ca_file, &up.tls.sslrootcert),
        (&mut o.cert_file, &up.tls.sslcert),
        (&mut o.key_file, &up.tls.sslkey),
    ] {
        if let Some(v) = v {
            *slot = Some(v.into());
        }
    }
    let tls = ServerTls::new(o).map_err(CheckError::Usage)?;
    Ok(ServerLogin {
        host: up.host.clone(),
        port: up.port,
        dbname: dbname.to_owned(),
        user: up.user.clone(),
        password: up.password.clone(),
        connect_timeout: Duration::from_secs(15),
        keepalive: Default::default(),
        max_message_len: 256 << 20,
        max_prepared: usize::MAX,
        tls,
        passthrough: Default::default(),
        extras: Default::default(),
    })
}

/// A connection the check runs its commands on.
pub(super) struct Conn {
    inner: ServerConn,
    /// Inside a transaction block: each description runs under a savepoint, so a statement that
    /// no longer parses does not abort the block.
    pub in_block: bool,
}

/// An ErrorResponse, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PgError {
    pub sqlstate: String,
    pub message: String,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ERROR {}: {}", self.sqlstate, self.message)
    }
}

fn pg_error(f: &Frame) -> PgError {
    let e = ErrorFields::decode(f).ok();
    PgError {
        sqlstate: e
            .as_ref()
            .and_then(|e| e.code())
            .unwrap_or("?????")
            .to_owned(),
        message: e
            .and_then(|e| e.message())
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .unwrap_or_default(),
    }
}

/// What an exchange got back.
pub(super) struct Answer {
    pub frames: Vec<Frame>,
    pub error: Option<PgError>,
    pub status: TxStatus,
}

impl Conn {
    pub async fn connect(login: &ServerLogin) -> Result<Conn, CheckError> {
        let inner = ServerConn::connect(login)
            .await
            .map_err(|e| CheckError::Connect(format!("database {:?}: {e}", login.dbname)))?;
        Ok(Conn {
            inner,
            in_block: false,
        })
    }

    /// Send `frames` and read up to ReadyForQuery.
    pub async fn exchange(
        &mut self,
        frames: &[Frame],
        wait: Duration,
    ) -> Result<Answer, CheckError> {
        let run = async {
            for f in frames {
                self.inner
                    .writer
                    .write_frame(f)
                    .await
                    .map_err(|e| CheckError::Connection(e.to_string()))?;
            }
            let mut out = Vec::new();
            let mut error = None;
            loop {
                let f = self
                    .inner
                    .reader
                    .read_frame()
                    .await
                    .map_err(|e| CheckError::Connection(e.to_string()))?;
                match f.tag {
                    backend::READY_FOR_QUERY => {
                        let status = backend::decode_ready_for_query(&f)
                            .map_err(|e| CheckError::Connection(e.to_string()))?;
                        return Ok(Answer {
                            frames: out,
                            error,
                            status,
                        });
                    }
                    backend::ERROR_RESPONSE if error.is_none() => error = Some(pg_error(&f)),
                    _ => out.push(f),
                }
            }
        };
        tokio::time::timeout(wait, run)
            .await
            .map_err(|_| CheckError::Connection(format!("no answer within {wait:?}")))?
    }

    /// Run SQL through the simple protocol; an error is returned as such.
    pub async fn simple(&mut self, sql: &str, wait: Duration) -> Result<Answer, CheckError> {
        self.exchange(&[encode::query(sql)], wait).await
    }

    /// Run SQL that must succeed.
    pub async fn command(&mut self, sql: &str) -> Result<(), CheckError> {
        let a = self.simple(sql, SHORT).await?;
        match a.error {
            None => Ok(()),
            Some(e) => Err(CheckError::Command {
                what: sql.to_owned(),
                error: e.to_string(),
            }),
        }
    }

    /// Parse + Describe the text as a client would prepare it (unnamed statement).
    pub async fn describe(&mut self, sql: &str, param_types: &[u32]) -> Result<After, CheckError> {
        if self.in_block {
            self.command("SAVEPOINT pgheal_check").await?;
        }
        let a = self
            .exchange(
                &[
                    encode::parse("", sql, param_types),
                    encode::describe(Target::Statement(b"")),
                    encode::sync(),
                ],
                SHORT,
            )
            .await?;
        let after = match a.error {
            Some(e) => {
                if self.in_block {
                    self.command("ROLLBACK TO SAVEPOINT pgheal_check").await?;
                }
                After::Error {
                    sqlstate: e.sqlstate,
                    message: e.message,
                }
            }
            None => {
                let mut fields = Vec::new();
                for f in &a.frames {
                    if f.tag == backend::ROW_DESCRIPTION {
                        fields = decode_row_description(f)
                            .map_err(|e| CheckError::Connection(e.to_string()))?;
                    }
                }
                After::Described(fields)
            }
        };
        if self.in_block {
            self.command("RELEASE SAVEPOINT pgheal_check").await?;
        }
        Ok(after)
    }

    /// Close the connection politely.
    pub async fn close(mut self) {
        let _ = self.inner.writer.write_frame(&encode::terminate()).await;
        let _ = self.inner.writer.flush().await;
    }
}
