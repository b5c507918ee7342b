//! How a conversation takes its server connection from the pool and gives it back. In
//! transaction pooling that happens once per transaction: [`Conversation::attach`] brings the
//! connection to the client's settings (telling the client of PgBouncer's `query_wait_notify`
//! while it waits), and [`Conversation::detach`] reads back what the transaction changed. At
//! the end of every session, [`Conversation::finish`] brings a connection the client left
//! mid-batch to rest before it goes back to the pool. The relay loop in [`super::relay_loop`]
//! calls these at its boundaries.

use std::sync::Arc;

use crate::heal::{Outbox, Relay, Rest};
use crate::metrics::Metrics;
use crate::net::ClientWriter;
use crate::pool::{Checkout, Pool};
use crate::protocol::backend::TxStatus;
use crate::protocol::{backend, encode};

use super::cancel::CancelTarget;
use super::relay_loop::{report, Conversation, End};
use super::settings;
use super::timeouts::{Phase, Timeout};
use super::SessionError;

/// Server connections tried for one transaction when restoring the client's settings fails.
const RESTORE_ATTEMPTS: usize = 3;

impl Conversation<'_> {
    /// Get a server connection for the next transaction and bring it to this client's
    /// settings; tell the client about reported parameters that differ there (into
    /// `to_client`, before any answer). A connection whose restore fails is closed and
    /// another one tried. Not cancel-safe.
    ///
    /// Runs once per transaction in transaction pooling, so it does not enter the client span
    /// (the relay loop runs outside it, see `session::run`): its own lines name the span as
    /// their parent; the pool's lines are about server connections and carry their ids.
    pub(super) async fn attach(
        &mut self,
        to_client: &mut Vec<bytes::Bytes>,
        client_w: &mut ClientWriter,
    ) -> Result<(), SessionError> {
        let span = &self.engine.span;
        let mut attempt = 1;
        let notify = self.timers.timeouts().query_wait_notify;
        let limit = self.timers.timeouts().query_timeout;
        let mut checkout = loop {
            self.client.start_waiting();
            let wait = checkout_notified(&self.pool, notify, client_w, to_client);
            // PgBouncer's query_timeout also bounds a query waiting for a server connection.
            let got = match limit {
                None => wait.await.map_err(SessionError::from),
                Some(d) => match tokio::time::timeout(d, wait).await {
                    Ok(r) => r.map_err(SessionError::from),
                    Err(_) => Err(self.timed_out(Timeout::QueryWait)),
                },
            };
            let mut checkout = match got {
                Ok(c) => c,
                Err(e) => {
                    self.client.linked(0);
                    return Err(e);
                }
            };
            self.client.linked(checkout.conn_ref().id);
            checkout.link_to(self.client.id);
            let conn = checkout.conn();
            tracing::trace!(parent: span, server = conn.id, "attached a server connection");
            if conn.applied_settings == self.settings.fingerprint() {
                break checkout;
            }
            let err = match settings::restore(conn, &self.settings).await {
                Ok(()) => break checkout,
                Err(e) => e,
            };
            tracing::warn!(parent: span, server = conn.id, error = %err, attempt,
                "could not restore the client's settings on a server connection; closing it");
            checkout.discard();
            if attempt == RESTORE_ATTEMPTS {
                return Err(err.into());
            }
            attempt += 1;
        };
        let conn = checkout.conn();
        self.reported.sync(conn, to_client);
        self.cancel.set_target(Some(CancelTarget {
            addr: conn.addr,
            pid: conn.backend_pid,
            key: conn.backend_key,
        }));
        self.attached = Some(Box::new(checkout));
        Ok(())
    }

    /// Give the connection back after a transaction (transaction pooling). When the
    /// transaction may have changed settings, read them back first (the client's new
    /// settings). Not cancel-safe.
    pub(super) async fn detach(&mut self) -> Result<(), SessionError> {
        // A cancel request must not reach pgheal's own snapshot.
        self.cancel.set_target(None);
        let Some(mut c) = self.attached.take() else {
            return Ok(());
        };
        self.client.unlinked();
        tracing::trace!(parent: &self.engine.span, server = c.conn().id, "released a server connection");
        if std::mem::take(&mut self.discard_pending) {
            self.watch.take_changed();
            if let Err(e) = settings::restore(c.conn(), &self.settings).await {
                c.discard();
                return Err(e.into());
            }
        } else if self.watch.take_changed() {
            match settings::snapshot(c.conn(), &self.watch, &self.pool.key.user).await {
                Ok(s) => {
                    if s != self.settings {
                        self.engine.set_search_path(s.statement_key());
                        self.settings = s;
                    }
                }
                Err(e) => {
                    c.discard();
                    return Err(e.into());
                }
            }
        }
        c.checkin(TxStatus::Idle, true);
        Ok(())
    }

    /// Hand the connection back at the end of the session. When the client left with work in
    /// flight, the connection is first brought to rest (see [`crate::heal::leave`]) within
    /// [`SERVER_DRAIN_TIMEOUT`], or closed. Not cancel-safe.
    pub async fn finish(mut self, end: &Result<End, SessionError>) {
        self.pool.stats.record(&self.activity);
        let Some(mut c) = self.attached.take() else {
            return;
        };
        if let Err(SessionError::Timeout(t)) = end {
            if *t != Timeout::ClientIdle || self.timers.phase() != Phase::Idle {
                // Closed, as PgBouncer does (a query in flight was cancelled by `relay`): an
                // open transaction rolls back with the backend's exit.
                tracing::info!(parent: &self.engine.span, server = c.conn_ref().id, reason = t.reason(), "closing the server connection of a client closed by a timeout");
                c.discard();
                return;
            }
            // client_idle_timeout: the connection is at rest; it goes back to the pool.
        } else if !matches!(end, Ok(End::ClientGone) | Ok(End::Terminated)) {
            c.discard();
            return;
        }
        let settled = tokio::time::timeout(
            SERVER_DRAIN_TIMEOUT,
            bring_to_rest(&mut self.engine, &mut c, &self.metrics),
        )
        .await;
        match settled {
            Ok(Ok(status)) => {
                if self.mode.per_transaction() {
                    // The client left inside a transaction: whatever it set there is unknown.
                    c.conn().applied_settings = settings::UNKNOWN;
                }
                c.checkin(status, true)
            }
            Ok(Err(why)) => {
                tracing::info!(parent: &self.engine.span, server = c.conn_ref().id, reason = %why, "closing a server connection its client left mid-batch");
                c.discard()
            }
            Err(_) => {
                tracing::info!(parent: &self.engine.span, server = c.conn_ref().id, "closing a server connection that did not come to rest after its client left");
                c.discard()
            }
        }
    }
}

/// The NOTICE PgBouncer sends a client that waits `query_wait_notify` for a server connection
/// (`janitor.c`).
const QUERY_WAIT_NOTICE: &str =
    "No server connection available in postgres backend, client being queued";

/// A connection from the pool; a client that waits longer than `notify` (`query_wait_notify`)
/// is sent PgBouncer's NOTICE once, at once (the answers already prepared for it in `to_client`
/// go first, keeping their order).
async fn checkout_notified(
    pool: &Arc<Pool>,
    notify: Option<std::time::Duration>,
    client_w: &mut ClientWriter,
    to_client: &mut Vec<bytes::Bytes>,
) -> Result<Checkout, crate::pool::PoolError> {
    let got = pool.checkout();
    let Some(after) = notify else {
        return got.await;
    };
    tokio::pin!(got);
    match tokio::time::timeout(after, &mut got).await {
        Ok(r) => r,
        Err(_) => {
            to_client.push(
                encode::error_fields(
                    b'N',
                    &[
                        (b'S', b"NOTICE"),
                        (b'C', b"00000"),
                        (b'M', QUERY_WAIT_NOTICE.as_bytes()),
                    ],
                )
                .bytes,
            );
            // A client that stopped reading does not hold up the wait.
            let _ = client_w.write_parts(to_client).await;
            to_client.clear();
            got.await
        }
    }
}

/// How long a server connection whose client left mid-batch may take to come to rest
/// (answers in flight, a failed COPY, pgheal's own Sync) before it is closed instead.
pub const SERVER_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Run the engine without a client until the server connection is at rest (see
/// [`crate::heal::leave`]): its answers are read and dropped, what the engine still has to
/// send goes out. Returns the transaction status of the last ReadyForQuery. Not cancel-safe
/// (the caller's timeout drops the connection with it).
async fn bring_to_rest(
    engine: &mut Relay,
    c: &mut Checkout,
    metrics: &Metrics,
) -> Result<TxStatus, String> {
    let mut out = Outbox::default();
    let mut frames = Vec::with_capacity(16);
    let pool = c.pool().clone();
    loop {
        let conn = c.conn();
        let rest = engine
            .wind_down(&mut conn.prepared, &mut out)
            .map_err(|e| e.to_string())?;
        if !out.to_server.is_empty() {
            conn.writer
                .write_parts(&mut out.to_server)
                .await
                .map_err(|e| e.to_string())?;
            out.to_server.clear();
        }
        out.to_client.clear();
        for ev in out.events.drain(..) {
            report(&ev, &pool, conn.id, conn.backend_pid, metrics);
        }
        if let Rest::Ready(status) = rest {
            return Ok(status);
        }
        match conn.reader.read_frames(&mut frames).await {
            Ok(true) => {}
            Ok(false) => return Err("the server closed the connection".into()),
            Err(e) => return Err(e.to_string()),
        }
        for f in frames.drain(..) {
            if f.tag == backend::PARAMETER_STATUS {
                conn.note_parameter(&f);
            }
            engine
                .on_server(f, &mut conn.prepared, &mut out)
                .map_err(|e| e.to_string())?;
        }
    }
}
