//! The relay loop: read whatever arrives from either side, run it through the engine, write
//! what the engine produced. One `select!` per wake-up, whole batches of frames per step.

use std::sync::Arc;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use crate::heal::{HealEvent, Outbox, Outcome, Relay};
use crate::metrics::Metrics;
use crate::net::{FrameReader, FrameWriter, NetError};
use crate::pool::Checkout;
use crate::protocol::{backend, encode, frontend, sqlstate};

use super::SessionError;

/// How the relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed its socket.
    ClientGone,
    /// The client sent Terminate.
    Terminated,
    /// The server closed the connection (its error, if any, was forwarded).
    ServerGone,
    /// pgheal's shutdown timeout passed.
    Shutdown,
}

/// Relay until one side ends. Not cancel-safe (writes are awaited inside).
pub async fn relay(
    client_r: &mut FrameReader<OwnedReadHalf>,
    client_w: &mut FrameWriter<OwnedWriteHalf>,
    checkout: &mut Checkout,
    engine: &mut Relay,
    metrics: &Arc<Metrics>,
    force: &mut watch::Receiver<bool>,
) -> Result<End, SessionError> {
    let server_id = checkout.conn_ref().id;
    let server_pid = checkout.conn_ref().backend_pid;
    let conn = checkout.conn();
    let (server_r, server_w, params) = (&mut conn.reader, &mut conn.writer, &mut conn.params);
    let mut cframes = Vec::with_capacity(64);
    let mut sframes = Vec::with_capacity(64);
    let mut out = Outbox::default();
    loop {
        let mut end = None;
        tokio::select! {
            biased;
            changed = force.changed() => {
                if changed.is_err() || *force.borrow() {
                    let f = encode::error_response("FATAL", sqlstate::ADMIN_SHUTDOWN, "terminating connection due to administrator command");
                    let _ = client_w.write_frame(&f).await;
                    return Ok(End::Shutdown);
                }
            }
            r = server_r.read_frames(&mut sframes) => {
                match r {
                    Ok(true) => {}
                    Ok(false) | Err(NetError::Io(_)) | Err(NetError::Closed) => end = Some(End::ServerGone),
                    Err(e) => return Err(e.into()),
                }
                for f in sframes.drain(..) {
                    if f.tag == backend::PARAMETER_STATUS {
                        if let Ok((k, v)) = backend::decode_parameter_status(&f) {
                            params.insert(k.to_owned(), v.to_owned());
                        }
                    }
                    engine.on_server(f, &mut out)?;
                }
            }
            r = client_r.read_frames(&mut cframes) => {
                match r {
                    Ok(true) => {}
                    Ok(false) | Err(NetError::Io(_)) | Err(NetError::Closed) => end = Some(End::ClientGone),
                    Err(e) => return Err(e.into()),
                }
                for f in cframes.drain(..) {
                    if f.tag == frontend::TERMINATE {
                        end = Some(End::Terminated);
                        break;
                    }
                    engine.on_client(f, &mut out)?;
                }
            }
        }
        if !out.to_server.is_empty() && end != Some(End::ServerGone) {
            if let Err(e) = server_w.write_parts(&mut out.to_server).await {
                tracing::info!(error = %e, "server connection lost while writing");
                end = Some(End::ServerGone);
            }
        }
        if !out.to_client.is_empty() && end != Some(End::ClientGone) {
            if client_w.write_parts(&mut out.to_client).await.is_err() {
                end = Some(end.unwrap_or(End::ClientGone));
            }
        }
        for ev in out.events.drain(..) {
            report(&ev, server_id, server_pid, metrics);
        }
        if let Some(end) = end {
            return Ok(end);
        }
    }
}

/// One log line and one counter per heal event.
pub fn report(ev: &HealEvent, server_id: u64, server_pid: i32, metrics: &Metrics) {
    metrics.heal(ev.outcome);
    match ev.outcome {
        Outcome::Healed | Outcome::Projected => tracing::info!(
            outcome = ev.outcome.label(), statement = %ev.statement, sql = %ev.sql, change = %ev.detail,
            server = server_id, server_pid, "healed a stale prepared statement"
        ),
        Outcome::Refused | Outcome::ForwardedInTransaction => tracing::warn!(
            outcome = ev.outcome.label(), statement = %ev.statement, sql = %ev.sql, reason = %ev.detail,
            server = server_id, server_pid, "forwarded a cached-plan error to the client"
        ),
    }
}
