//! The relay loop: read whatever arrives from either side, run it through the engine, write
//! what the engine produced. One `poll_fn` over both sockets per wake-up, whole batches of
//! frames per step.
//!
//! In session pooling the server connection stays attached for the whole session. In
//! transaction pooling it is attached when the client sends its first message after
//! ReadyForQuery `I` and released at the next ReadyForQuery `I` with nothing in flight (a
//! Flush-terminated segment keeps it). A client that listens or may hold session state goes
//! through `session::between` at that point instead: LISTENs held by pgheal, notifications
//! written between transactions, and a connection kept while session state remains on it.
//!
//! The attach, the release and the end-of-session hand-back of the server connection are in
//! [`super::checkout`]; the wakers that tell the loop which socket woke it, in
//! [`super::wakers`].

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::config::PoolMode;
use crate::heal::{HealEvent, Outbox, Relay};
use crate::metrics::Metrics;
use crate::net::{ClientReader, ClientWriter, NetError};
use crate::pool::stats::Activity;
use crate::pool::{Checkout, Pool};
use crate::protocol::backend::TxStatus;
use crate::protocol::{backend, encode, frontend, sqlstate, Frame};

use super::cancel::{CancelKey, CancelTarget};
use super::clients::ClientTrack;
use super::idle::Wake;
use super::kill::KillWatch;
use super::listen::ClientListen;
use super::pin::Pin;
use super::settings::{self, ClientSettings, Reported};
use super::settings_watch::{self, SettingsWatch};
use super::timeouts::{Phase, Timeout, Watch};
use super::wakers::{Wakers, Woke};
use super::SessionError;

/// Client messages pgheal holds back (a pipelining client waiting on a heal or on an earlier
/// Sync) before it stops reading from that client.
const MAX_BACKLOG: usize = 4096;

/// Kept at its old path: it moved to [`super::checkout`] with the hand-back it bounds.
pub use super::checkout::SERVER_DRAIN_TIMEOUT;

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
    /// Notifications could not keep reaching the client (it was told why).
    NotificationsLost,
    /// An online restart: the client moves to the new process (see `session::handover`).
    HandedOver,
}

/// How one step of the relay ended.
enum Step {
    /// The session may wait between transactions ([`Conversation::may_idle`]).
    Idle,
    End(End),
}

/// One client's conversation with its server connection(s).
pub struct Conversation<'a> {
    pub engine: Relay,
    /// Boxed: a transaction-pooled client is idle most of the time, and the session then
    /// holds only the pointer (issue 14).
    pub attached: Option<Box<Checkout>>,
    pub pool: Arc<Pool>,
    pub mode: PoolMode,
    /// The client's session settings (transaction pooling), as last read from the server.
    pub settings: ClientSettings,
    /// Transaction pooling: the client's LISTENs, held by pgheal (see `session::listen`).
    pub listen: ClientListen,
    /// Transaction pooling: session state that keeps the client on its connection.
    pub pin: Pin,
    /// What may have changed them in the current transaction.
    pub watch: SettingsWatch,
    /// The ParameterStatus values the client was told.
    pub reported: Reported,
    /// The client sent `DISCARD ALL` while attached: reset the connection at the detach.
    pub discard_pending: bool,
    pub cancel: &'a CancelKey,
    pub metrics: Arc<Metrics>,
    /// This client in the admin console's list.
    pub client: Arc<ClientTrack>,
    /// Queries, transactions and traffic not yet added to the pool's figures.
    pub activity: Activity,
    /// When the current query and transaction began (the first client message after
    /// ReadyForQuery, and after ReadyForQuery `I`).
    pub query_start: Option<std::time::Instant>,
    pub xact_start: Option<std::time::Instant>,
    /// `client_idle_timeout`, `query_timeout`, `idle_transaction_timeout`,
    /// `transaction_timeout` (see [`super::timeouts`]).
    pub timers: Watch,
    /// `server_fast_close` in session pooling: a once-a-second look (PgBouncer's janitor
    /// period) at whether RECONNECT made the session's connection stale; `None` otherwise.
    /// Boxed: most sessions have none (issue 14).
    pub fast_close: Option<Box<tokio::time::Interval>>,
}

/// The `fast_close` ticker of a session: `Some` in session pooling with `server_fast_close`.
pub fn fast_close_ticker(mode: PoolMode, enabled: bool) -> Option<Box<tokio::time::Interval>> {
    (mode == PoolMode::Session && enabled).then(|| {
        let mut t = tokio::time::interval(std::time::Duration::from_secs(1));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Box::new(t)
    })
}

impl Conversation<'_> {
    /// Transaction pooling: notice what may change settings.
    fn inspect_client(&mut self, f: &Frame) {
        self.watch.client_frame(f);
        if f.tag == frontend::QUERY {
            if let Ok(sql) = frontend::decode_query(f) {
                if self.engine.status() == TxStatus::Idle && settings_watch::is_discard_all(sql) {
                    self.discard_settings();
                }
            }
        }
    }

    /// The client's `DISCARD ALL`, which the engine answers without the server: its settings
    /// are now none. Before a connection is attached (the usual case: it is the first message
    /// of a transaction), the attach brings the connection to none before anything runs on
    /// it; on an attached connection, the detach does (statements pipelined behind the
    /// `DISCARD ALL` in the same batch then still see the old settings).
    fn discard_settings(&mut self) {
        self.settings = ClientSettings::default();
        self.engine.set_search_path(None);
        self.watch.discarded();
        self.discard_pending = self.attached.is_some();
    }

    /// Count a client message: its bytes, a Parse or Bind, and the start of a query or
    /// transaction.
    fn account_client(&mut self, f: &Frame) {
        self.activity.client_bytes += f.len() as u64;
        match f.tag {
            frontend::PARSE => self.activity.client_parses += 1,
            frontend::BIND => self.activity.binds += 1,
            _ => {}
        }
        if self.query_start.is_none() {
            let now = std::time::Instant::now();
            self.query_start = Some(now);
            self.xact_start.get_or_insert(now);
        }
    }

    /// Relay until one side ends. Not cancel-safe (writes are awaited inside).
    pub async fn relay(
        &mut self,
        client_r: &mut ClientReader,
        client_w: &mut ClientWriter,
        force: &mut KillWatch<ClientTrack>,
    ) -> Result<End, SessionError> {
        let end = self.relay_steps(client_r, client_w, force).await;
        if let (Err(SessionError::Timeout(_)), Some(c)) = (&end, &self.attached) {
            // A query in flight is cancelled before its connection is closed: a backend busy
            // in a long query notices a closed socket only when it writes, and would run on.
            if self.timers.phase() == Phase::InFlight {
                let conn = c.conn_ref();
                let target = CancelTarget {
                    addr: conn.addr,
                    pid: conn.backend_pid,
                    key: conn.backend_key,
                };
                // `cancel_wait_timeout`, as the session's timeouts have it (the configuration
                // at its last change of phase).
                let limit = self.timers.timeouts().cancel_wait_timeout;
                Box::pin(super::cancel::send_cancel(target, limit)).await;
            }
        }
        // A connection that may hold the client's session state is never pooled.
        self.pin.release(&mut self.attached);
        end
    }

    /// In transaction pooling, one step of the loop per transaction, each in a box of its own,
    /// and between them the small wait of [`super::idle`]; otherwise one step for the session.
    async fn relay_steps(
        &mut self,
        client_r: &mut ClientReader,
        client_w: &mut ClientWriter,
        force: &mut KillWatch<ClientTrack>,
    ) -> Result<End, SessionError> {
        loop {
            let first = if self.may_idle() {
                Some(self.idle(client_r, force).await)
            } else {
                None
            };
            match Box::pin(self.relay_frames(client_r, client_w, force, first)).await? {
                Step::End(end) => return Ok(end),
                Step::Idle => {}
            }
        }
    }

    /// Relay until one side ends or, in transaction pooling, until the session may wait
    /// between transactions ([`Self::may_idle`]). `first`: what woke that wait, handled before
    /// anything is polled.
    async fn relay_frames(
        &mut self,
        client_r: &mut ClientReader,
        client_w: &mut ClientWriter,
        force: &mut KillWatch<ClientTrack>,
        first: Option<Wake>,
    ) -> Result<Step, SessionError> {
        // No capacity up front: they grow to the batches this client sends, and an idle client
        // does not pay for a relay-sized batch it may never send (issue 14).
        let (mut first, mut cframes) = match first {
            Some(Wake { woke, cframes }) => (Some(woke), cframes),
            None => (None, Vec::new()),
        };
        let mut sframes = Vec::new();
        let mut out = Outbox::default();
        // Shutdown: one future for the whole step (creating `changed()` anew on every wake-up
        // would register and unregister a waiter on the kill switch each time; once per
        // transaction is the price of the small idle wait). Once polled it stays registered,
        // and it is polled again only when the switch was fired (a cheap check of a clone
        // that never marks anything seen), since polling a registered waiter takes a lock. `unconstrained`: a poll with the task's
        // budget used up would return without registering, and the first poll must register.
        //
        // The two sockets are read with wakers of their own (see [`Wakers`]), so a wake-up
        // reads the socket it came from instead of polling both every time.
        let probe = force.clone();
        let changed = tokio::task::unconstrained(force.changed());
        tokio::pin!(changed);
        let mut shutdown_armed = false;
        let mut wakers: Option<Wakers> = None;
        // Whether a socket's read is registered with the runtime (it returned Pending since
        // its last Ready): such a socket is read again only once its own waker fired.
        let mut server_armed = false;
        let mut client_armed = false;
        // Online restart: asked to move, waiting for a boundary; `rekill` then watches for a
        // real kill (the first wake-up of `changed` was the request).
        let mut handover_pending = false;
        let mut rekill: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = None;
        loop {
            let mut end = None;
            let read_client = self.engine.backlog() < MAX_BACKLOG;
            // Notifications are written between transactions only.
            let read_mail = self.mode.per_transaction()
                && self.listen.has_mailbox()
                && self.engine.at_transaction_boundary();
            let woke = if let Some(w) = first.take() {
                w
            } else {
                std::future::poll_fn(|cx| {
                    if let Some(r) = &mut rekill {
                        if r.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Woke::Shutdown);
                        }
                    } else if !shutdown_armed || probe.has_changed() {
                        shutdown_armed = true;
                        if changed.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Woke::Shutdown);
                        }
                    }
                    let w = match &mut wakers {
                        Some(w) if w.task.will_wake(cx.waker()) => w,
                        w => {
                            server_armed = false;
                            client_armed = false;
                            w.insert(Wakers::new(cx.waker()))
                        }
                    };
                    // Server first, as before: its answers may unblock held client messages.
                    match self.attached.as_mut() {
                        None => server_armed = false,
                        Some(c) => {
                            if w.server.take() || !server_armed {
                                let mut scx = Context::from_waker(&w.server_waker);
                                let read = c.conn().reader.read_frames(&mut sframes);
                                match std::pin::pin!(read).poll(&mut scx) {
                                    Poll::Ready(r) => {
                                        server_armed = false;
                                        return Poll::Ready(Woke::Server(r));
                                    }
                                    Poll::Pending => server_armed = true,
                                }
                            }
                        }
                    }
                    if read_client && (w.client.take() || !client_armed) {
                        let mut ccx = Context::from_waker(&w.client_waker);
                        match std::pin::pin!(client_r.read_frames(&mut cframes)).poll(&mut ccx) {
                            Poll::Ready(r) => {
                                client_armed = false;
                                return Poll::Ready(Woke::Client(r));
                            }
                            Poll::Pending => client_armed = true,
                        }
                    }
                    if read_mail && self.listen.poll_mail(cx).is_ready() {
                        return Poll::Ready(Woke::Mail);
                    }
                    if self.timers.poll_fired(cx).is_ready() {
                        return Poll::Ready(Woke::Timer);
                    }
                    if let Some(t) = &mut self.fast_close {
                        if t.poll_tick(cx).is_ready() {
                            return Poll::Ready(Woke::FastClose);
                        }
                    }
                    Poll::Pending
                })
                .await
            };
            match woke {
                Woke::Shutdown if rekill.is_none() && self.client.handover_requested() => {
                    rekill = Some(super::handover::rekill_watch(&probe));
                    handover_pending = true;
                }
                Woke::Shutdown => {
                    let f = encode::error_response(
                        "FATAL",
                        sqlstate::ADMIN_SHUTDOWN,
                        "terminating connection due to administrator command",
                    );
                    let _ = client_w.write_frame(&f).await;
                    return Ok(Step::End(End::Shutdown));
                }
                Woke::Server(r) => {
                    let mut lost = None;
                    match r {
                        Ok(true) => {}
                        Ok(false) | Err(NetError::Closed) => end = Some(End::ServerGone),
                        // A dead peer found by keepalive or tcp_user_timeout (not a close the
                        // server chose, which sends FATAL first, nor a reset after one): the
                        // client is told, after whatever the server sent before.
                        Err(NetError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                            tracing::info!(parent: &self.engine.span, error = %e, "server connection lost");
                            lost = Some(e);
                            end = Some(End::ServerGone)
                        }
                        Err(NetError::Io(_)) => end = Some(End::ServerGone),
                        Err(e) => return Err(e.into()),
                    }
                    self.take_server_frames(&mut sframes, &mut out)?;
                    if let Some(e) = lost {
                        let f = encode::error_response(
                            "FATAL",
                            sqlstate::CONNECTION_FAILURE,
                            format!("pgheal: the server connection was lost: {e}"),
                        );
                        out.to_client.push(f.bytes);
                    }
                }
                Woke::Client(r) => match r {
                    Ok(true) => {}
                    Ok(false) | Err(NetError::Io(_)) | Err(NetError::Closed) => {
                        end = Some(End::ClientGone)
                    }
                    Err(e) => return Err(e.into()),
                },
                // Written below, once this step is done.
                Woke::Mail => {}
                Woke::FastClose => {
                    // PgBouncer closes such a server connection once it has no outstanding
                    // request, and its client with it, so the client notices.
                    if self.engine.at_transaction_boundary()
                        && self.attached.as_ref().is_some_and(|c| c.is_stale())
                    {
                        return Err(SessionError::ConfigurationChanged);
                    }
                }
                Woke::Timer => {
                    if let Some(t) = self.timers.expired() {
                        return Err(self.timed_out(t));
                    }
                }
            }
            for f in cframes.drain(..) {
                if f.tag == frontend::TERMINATE {
                    end = Some(End::Terminated);
                    break;
                }
                self.account_client(&f);
                if self.mode.per_transaction() {
                    if f.tag == frontend::QUERY && Box::pin(self.answer_listen(&f, &mut out)).await
                    {
                        continue;
                    }
                    self.inspect_client(&f);
                    self.pin.observe(&f, self.engine.status());
                }
                if self.attached.is_none() {
                    if self.engine.try_local(&f, &mut out)? {
                        continue;
                    }
                    Box::pin(self.attach(&mut out.to_client, client_w)).await?;
                }
                if let Some(c) = self.attached.as_mut() {
                    self.engine.on_client(f, &mut c.conn().prepared, &mut out)?;
                }
            }
            if let Some(c) = self.attached.as_mut() {
                if !out.to_server.is_empty() && end != Some(End::ServerGone) {
                    if let Err(e) = c.conn().writer.write_parts(&mut out.to_server).await {
                        tracing::info!(parent: &self.engine.span, error = %e, "server connection lost while writing");
                        end = Some(End::ServerGone);
                        self.read_last_words(&mut sframes, &mut out).await?;
                    }
                }
            }
            out.to_server.clear();
            // Counted before the client is answered: whoever reads the counters after the
            // answer (a test, a dashboard) sees the heal the answer came from.
            if !out.events.is_empty() {
                let (server_id, server_pid) = self
                    .attached
                    .as_ref()
                    .map(|c| (c.conn_ref().id, c.conn_ref().backend_pid))
                    .unwrap_or_default();
                for ev in out.events.drain(..) {
                    let _in_span = self.engine.span.enter();
                    report(&ev, &self.pool, server_id, server_pid, &self.metrics);
                }
            }
            if out.guards > 0 || out.guard_heals > 0 {
                self.metrics.savepoint_guards.inc_by(u64::from(out.guards));
                (self.pool.stats).guarded(u64::from(out.guards), u64::from(out.guard_heals));
                self.metrics
                    .savepoint_guard_heals
                    .inc_by(u64::from(out.guard_heals));
                out.guards = 0;
                out.guard_heals = 0;
            }
            if !out.to_client.is_empty()
                && end != Some(End::ClientGone)
                && client_w.write_parts(&mut out.to_client).await.is_err()
            {
                end = Some(end.unwrap_or(End::ClientGone));
            }
            out.to_client.clear();
            if self.watch.changed() {
                if let Some(c) = self.attached.as_mut() {
                    // Until a snapshot says otherwise, nobody knows what this connection
                    // carries: should it go back to the pool without one (the session ends
                    // mid-segment), it is restored before its next use.
                    c.conn().applied_settings = settings::UNKNOWN;
                }
            }
            if let Some(end) = end {
                return Ok(Step::End(end));
            }
            if self.mode.per_transaction() {
                if self.has_session_state() {
                    // It may read the server socket itself (the session-state check), which
                    // takes the socket's registered waker: poll the socket afresh next time.
                    server_armed = false;
                    if let Some(end) =
                        Box::pin(self.between_transactions(client_w, &mut out)).await?
                    {
                        return Ok(Step::End(end));
                    }
                } else if self.attached.is_some() && self.engine.at_transaction_boundary() {
                    Box::pin(self.detach()).await?;
                    // Idle until the client's next transaction: what this one grew goes back
                    // to the allocator (issue 14: memory per idle client).
                    self.engine.shed();
                }
            }
            if handover_pending && self.movable(client_r) && self.client.claim_handover() {
                return Ok(Step::End(End::HandedOver));
            }
            let users = super::timeouts::Users {
                client: &self.client.user,
                server: &self.pool.key.user,
            };
            self.timers.step(self.phase(), users);
            // The batches, the outbox and the wakers go with this step's box. A session asked
            // to move stays here, watching for a real kill, until it can.
            if !handover_pending && self.may_idle() {
                return Ok(Step::Idle);
            }
        }
    }

    /// Server frames just read: accounted, observed and passed through the heal engine.
    fn take_server_frames(
        &mut self,
        sframes: &mut Vec<Frame>,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        if let Some(c) = self.attached.as_mut() {
            let conn = c.conn();
            for f in sframes.drain(..) {
                self.activity.server_bytes += f.len() as u64;
                if f.tag == backend::READY_FOR_QUERY {
                    if self.mode == PoolMode::Statement
                        && f.body().first() != Some(&TxStatus::Idle.byte())
                    {
                        return Err(SessionError::TransactionBlockInStatementMode);
                    }
                    account_ready(
                        &mut self.activity,
                        &mut self.query_start,
                        &mut self.xact_start,
                        &f,
                        &self.pool,
                    );
                }
                if self.mode.per_transaction() {
                    self.watch.server_frame(&f);
                    if f.tag == backend::PARAMETER_STATUS {
                        self.reported.forwarded(&f);
                    }
                }
                if f.tag == backend::PARAMETER_STATUS {
                    conn.note_parameter(&f);
                }
                if self.listen.watches_server() {
                    self.listen.observe_server(&f);
                }
                self.engine.on_server(f, &mut conn.prepared, out)?;
            }
        }
        Ok(())
    }

    /// After a failed write to the server: what the server sent before it reset the
    /// connection, passed on. PostgreSQL resets a connection it closes with unread input (a
    /// backend terminated while the client's next messages were on their way), and its FATAL
    /// then waits in the socket behind a write that fails; without this read the client would
    /// see a bare close instead of, say, `57P01`. The socket is dead, so the read ends at once;
    /// the bound only guards against a kernel that says otherwise.
    async fn read_last_words(
        &mut self,
        sframes: &mut Vec<Frame>,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        let Some(c) = self.attached.as_mut() else {
            return Ok(());
        };
        let read = c.conn().reader.read_frames(sframes);
        // Only the frames matter: the error or close that follows them is already known.
        let _ = tokio::time::timeout(LAST_WORDS_WAIT, read).await;
        self.take_server_frames(sframes, out)
    }

    /// A session timeout fired: counted (`pgheal_timeouts_total`), and the error that ends the
    /// session.
    pub(super) fn timed_out(&self, t: Timeout) -> SessionError {
        self.metrics
            .timeouts
            .with_label_values(&[&self.pool.key.database, &self.pool.key.user, t.key()])
            .inc();
        SessionError::Timeout(t)
    }

    /// Where the session stands for its timeouts.
    fn phase(&self) -> Phase {
        if self.engine.at_transaction_boundary() {
            Phase::Idle
        } else if self.engine.is_quiet() && self.engine.status() != TxStatus::Idle {
            Phase::IdleInTransaction
        } else {
            Phase::InFlight
        }
    }
}

/// How long [`Conversation::read_last_words`] may wait for a dead socket to say so.
const LAST_WORDS_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// A ReadyForQuery from the server ends a query, and with status `I` a transaction: count
/// them and their times, and add what the session did since its last report to the pool.
fn account_ready(
    activity: &mut Activity,
    query_start: &mut Option<std::time::Instant>,
    xact_start: &mut Option<std::time::Instant>,
    ready: &Frame,
    pool: &Pool,
) {
    let now = std::time::Instant::now();
    if let Some(start) = query_start.take() {
        activity.queries += 1;
        activity.query_time += now - start;
    }
    if ready.body().first() == Some(&TxStatus::Idle.byte()) {
        if let Some(start) = xact_start.take() {
            activity.transactions += 1;
            activity.xact_time += now - start;
        }
    }
    pool.stats.record(activity);
    *activity = Activity::default();
}

/// One log line and one counter per heal event.
pub fn report(ev: &HealEvent, pool: &Pool, server_id: u64, server_pid: i32, metrics: &Metrics) {
    metrics.heal(ev.outcome, &pool.key.database);
    metrics
        .heals
        .push(&pool.key.database, &pool.key.user, ev, server_pid);
    crate::metrics::heal_log::log(ev, server_id, server_pid);
}
