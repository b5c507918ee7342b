//! The admin console: PgBouncer's virtual database `pgbouncer` (and `pgheal`, the same), where
//! `admin_users` run every command and `stats_users` the `SHOW` commands, over the simple
//! query protocol, as PgBouncer 1.25 does — so the runbooks (`RECONNECT mydb` after a
//! migration, `PAUSE`/`RESUME` around a failover), pgbouncer_exporter and dashboards built on
//! `SHOW POOLS`/`SHOW STATS` keep working when pgheal replaces PgBouncer.
//!
//! - [`command`]: the grammar (pure).
//! - [`table`]: result sets with PgBouncer's column types.
//! - [`show`]: every `SHOW`, read from the one accounting of pools ([`crate::pool::stats`]),
//!   clients ([`crate::session::clients`]) and pause state ([`crate::pool::control`]).
//! - [`control`]: the commands that change things (`PAUSE`, `RECONNECT`, `KILL`, ...).
//!
//! This file: who may log in, the welcome, and the session loop.

pub mod command;
pub mod control;
pub mod show;
pub mod table;

use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;

use crate::config::Config;
use crate::net::writer::TcpSocket;
use crate::net::{FrameReader, FrameWriter, NetError};
use crate::protocol::backend::TxStatus;
use crate::protocol::{encode, frontend, sqlstate, Frame};
use crate::session::clients::ClientTrack;
use crate::session::{SessionError, Shared};

use command::{Command, CommandError};

/// The database names that reach the console.
pub const CONSOLE_DATABASES: &[&str] = &["pgbouncer", "pgheal"];

/// The version the console reports: pgheal's, and the PgBouncer console it follows (tools
/// that look for "PgBouncer x.y.z" find 1.25.2).
pub fn version_string() -> String {
    format!(
        "pgheal {} (PgBouncer 1.25.2 admin console)",
        env!("CARGO_PKG_VERSION")
    )
}

pub fn is_console_database(name: &str) -> bool {
    CONSOLE_DATABASES.contains(&name)
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `admin_users`: everything.
    Admin,
    /// `stats_users`: `SHOW` (not `SHOW FDS`).
    Stats,
}

/// The console role of `user`, `None` when it may not use the console.
pub fn role_of(cfg: &Config, user: &str) -> Option<Role> {
    if cfg.admin_users.iter().any(|u| u == user) {
        Some(Role::Admin)
    } else if cfg.stats_users.iter().any(|u| u == user) {
        Some(Role::Stats)
    } else {
        None
    }
}

/// AuthenticationOk and the parameters PgBouncer's console announces.
pub async fn welcome<W: AsyncWrite + TcpSocket + Unpin>(
    writer: &mut FrameWriter<W>,
    me: &ClientTrack,
) -> Result<(), SessionError> {
    let mut hello = vec![encode::auth_ok().bytes];
    for (k, v) in [
        ("server_version", "1.25.2/pgheal"),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "GMT"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "on"),
        ("application_name", me.application_name.as_str()),
    ] {
        hello.push(encode::parameter_status(k, v).bytes);
    }
    // A key nothing matches: a cancel request for the console does nothing, as in PgBouncer.
    hello.push(encode::backend_key_data(0, &[0; 4]).bytes);
    hello.push(encode::ready_for_query(TxStatus::Idle).bytes);
    writer.write_parts(&mut hello).await?;
    Ok(())
}

/// An error for the console user, followed by ReadyForQuery (PgBouncer's pooler errors use
/// SQLSTATE 08P01).
pub fn error_frames(message: &str) -> Vec<Frame> {
    vec![
        encode::error_response("ERROR", sqlstate::PROTOCOL_VIOLATION, message),
        encode::ready_for_query(TxStatus::Idle),
    ]
}

/// Serve one console session until the client leaves (or is told to). Not cancel-safe.
pub async fn serve<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    shared: &Shared,
    role: Role,
    me: &ClientTrack,
) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + TcpSocket + Unpin,
{
    tracing::info!(user = %me.user, ?role, "admin console session");
    loop {
        let frame = tokio::select! {
            f = reader.read_frame() => match f {
                Ok(f) => f,
                Err(NetError::Closed) => return Ok(()),
                Err(e) => return Err(e.into()),
            },
            _ = me.wait_killed() => {
                let f = encode::error_response(
                    "FATAL",
                    sqlstate::ADMIN_SHUTDOWN,
                    "terminating connection due to administrator command",
                );
                let _ = writer.write_frame(&f).await;
                return Ok(());
            }
        };
        match frame.tag {
            frontend::QUERY => {
                let query = frontend::decode_query(&frame)?;
                let frames = run(query, shared, role, me).await;
                let mut parts: Vec<_> = frames.into_iter().map(|f| f.bytes).collect();
                writer.write_parts(&mut parts).await?;
            }
            frontend::TERMINATE => return Ok(()),
            frontend::PARSE | frontend::BIND | frontend::EXECUTE => {
                let f = encode::error_response(
                    "FATAL",
                    sqlstate::PROTOCOL_VIOLATION,
                    "extended query protocol not supported by admin console",
                );
                writer.write_frame(&f).await?;
                return Ok(());
            }
            other => {
                let f = encode::error_response(
                    "FATAL",
                    sqlstate::PROTOCOL_VIOLATION,
                    format!(
                        "unsupported packet type for admin console: {}",
                        char::from(other)
                    ),
                );
                writer.write_frame(&f).await?;
                return Ok(());
            }
        }
    }
}

/// One query: parse, check the role, run. Always ends with ReadyForQuery.
async fn run(query: &[u8], shared: &Shared, role: Role, me: &ClientTrack) -> Vec<Frame> {
    let cmd = match command::parse(query) {
        Ok(c) => c,
        Err(e) => {
            if let CommandError::Invalid(_) = e {
                tracing::debug!("invalid admin console command");
            }
            return error_frames(&e.to_string());
        }
    };
    if cmd.needs_admin() && role != Role::Admin {
        return error_frames("admin access needed");
    }
    let mut frames = match cmd {
        Command::Show(what) => show::show(what, shared, role, me),
        other => match control::execute(other, shared, me).await {
            // SHUTDOWN: no answer, the session ends with the process.
            Ok(frames) if frames.is_empty() => return frames,
            Ok(frames) => frames,
            Err(message) => return error_frames(&message),
        },
    };
    frames.push(encode::ready_for_query(TxStatus::Idle));
    frames
}
