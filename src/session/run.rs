//! The life of one client connection: opening, login (authentication and server
//! assignment, in [`super::login`]), relay, and the hand-back of the server connection; and
//! the same life for a client an old process handed over in an online restart.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::Instrument;

use crate::config::live::LiveConfig;
use crate::config::{Config, PoolMode};
use crate::heal::relay::Naming;
use crate::heal::Relay;
use crate::metrics::Metrics;
use crate::net::{Accepted, ClientReader, ClientWriter, PeerAddr};
use crate::pool::capacity::{Capacity, Slot};
use crate::pool::Pools;

use super::cancel::CancelRegistry;
use super::clients::{ClientInfo, ClientList, Registered};
use super::listen::ClientListen;
use super::login::{login, Client, ClientGauge, LoggedIn, Login};
use super::params::StartupMemo;
use super::pin::Pin;
use super::relay_loop::Conversation;
use super::settings::{ClientSettings, Reported};
use super::settings_watch::SettingsWatch;
use super::startup::open;
use super::SessionError;

/// What every session shares.
pub struct Shared {
    /// The configuration in force; each session reads it once, at its start.
    pub config: Arc<LiveConfig>,
    pub pools: Arc<Pools>,
    pub metrics: Arc<Metrics>,
    pub cancels: Arc<CancelRegistry>,
    /// `max_client_conn`.
    pub client_slots: Arc<Capacity>,
    /// Every logged-in client; shutdown and the admin console's KILL end sessions through it.
    pub clients: Arc<ClientList>,
    /// How the process is asked to stop (signals, the admin console's SHUTDOWN).
    pub stop: Arc<watch::Sender<Option<crate::proxy::Stop>>>,
    /// Startup settings the server accepted, per pool (transaction pooling).
    pub startup_memo: StartupMemo,
}

impl Shared {
    /// The configuration in force now.
    pub fn cfg(&self) -> Arc<Config> {
        self.config.current()
    }
}

/// Serve one client until it leaves. Never panics on client input; errors are reported to the
/// client when they may be, and logged.
pub async fn run_client(stream: Box<Accepted>, shared: Arc<Shared>) {
    // Boxed, as the opening and the client below: this future is what a session holds for its
    // whole life, and every local of it keeps its place there even once moved out (issue 14).
    let addrs = Box::new(addresses(&stream));
    if let Accepted::Tcp(s, _) = &*stream {
        if let Err(e) = crate::net::keepalive::apply(s, &shared.cfg().keepalive) {
            tracing::debug!(error = %e, "cannot set TCP keepalive on a client socket");
        }
    }
    let span = tracing::info_span!("client", peer = %addrs.0, db = tracing::field::Empty, user = tracing::field::Empty);
    let cfg = shared.config.current();
    let deadline = tokio::time::Instant::now() + cfg.client_login_timeout;
    let opened_at = std::time::Instant::now();
    let opened = Box::pin(
        open(
            *stream,
            cfg.client_tls.state.as_ref(),
            cfg.max_message_len,
            deadline,
        )
        .instrument(span.clone()),
    )
    .await
    .map(Box::new);
    let (mut writer, result) = match opened {
        Ok(opened) => {
            // Moved out of their boxes field by field: no local holds the opening.
            let mut reader = opened.reader;
            let mut writer = opened.writer;
            let client = Box::new(Client {
                deadline,
                peer: addrs.0,
                local: addrs.1,
                os_uid: addrs.2,
                opening: opened.opening,
                end_point: opened.end_point,
                client_cert_name: opened.client_cert_name,
            });
            match session(client, &mut reader, &mut writer, &shared, &cfg, &span).await {
                Ok(Some(moving)) => {
                    hand_off(reader, writer, *moving, &span);
                    return;
                }
                r => (Some(writer), r.map(|_| ())),
            }
        }
        Err((writer, e)) => (writer, Err(e)),
    };
    end_session(&shared, &cfg, &span, opened_at, writer.as_mut(), result).await;
    if let Some(mut writer) = writer {
        let _ = writer.shutdown().await;
    }
}

/// Where a client is, where it connected, and its OS user (Unix socket).
fn addresses(stream: &Accepted) -> (PeerAddr, Option<PeerAddr>, Option<u32>) {
    match stream {
        Accepted::Tcp(s, peer) => {
            let _ = s.set_nodelay(true);
            (
                PeerAddr::Tcp(*peer),
                s.local_addr().ok().map(PeerAddr::Tcp),
                None,
            )
        }
        Accepted::Unix(s, port) => {
            let cred = s.peer_cred();
            if let Err(e) = &cred {
                tracing::warn!(error = %e, "cannot read the credentials of a Unix socket client");
            }
            let cred = cred.ok();
            let peer = PeerAddr::Unix {
                port: *port,
                pid: cred.as_ref().and_then(|c| c.pid()),
            };
            let local = PeerAddr::Unix {
                port: *port,
                pid: Some(std::process::id() as i32),
            };
            (peer, Some(local), cred.map(|c| c.uid()))
        }
    }
}

/// A moving client leaves: its socket goes to the new process with its state. Nothing more is
/// written to it, and the socket is closed here without a shutdown.
fn hand_off(reader: ClientReader, writer: ClientWriter, moving: Moving, span: &tracing::Span) {
    let (state, claim) = moving;
    let (r, unread) = reader.into_parts();
    if !unread.is_empty() {
        // `movable` rules this out; a client must never lose bytes.
        tracing::warn!(parent: span, "a moving client had unread bytes; closing it");
        return;
    }
    match super::handover::into_fd(r, writer.into_inner()) {
        Ok(fd) => {
            tracing::debug!(parent: span, "client moved to the new process");
            claim.send(crate::takeover::Handed { state, fd });
        }
        Err(e) => tracing::warn!(parent: span, error = %e, "cannot hand a client over"),
    }
}

/// A client the old process handed over in an online restart: it is logged in already and
/// between transactions; its session goes on here as if it had never left.
pub async fn run_adopted(adopted: crate::takeover::Adopted, shared: Arc<Shared>) {
    let crate::takeover::Adopted { stream, state } = adopted;
    let (peer, local, _) = addresses(&stream);
    let span = tracing::info_span!("client", %peer, db = %state.database, user = %state.user);
    let cfg = shared.config.current();
    let opened_at = std::time::Instant::now();
    let (r, w) = match stream {
        Accepted::Tcp(s, _) => {
            let _ = s.set_nodelay(true);
            crate::net::stream::split_client_plain(s)
        }
        Accepted::Unix(s, _) => crate::net::stream::split_client_unix(s),
    };
    let mut reader = crate::net::FrameReader::new(r, cfg.max_message_len);
    // As for a client that logged in here: idle, it holds no read buffer.
    reader.release_when_idle();
    let mut writer = crate::net::FrameWriter::new(w);
    let result = match adopt(&state, peer, local, &shared, &cfg)
        .instrument(span.clone())
        .await
    {
        Ok(login) => {
            tracing::debug!(parent: &span, "client adopted from the old process");
            match converse(login, &mut reader, &mut writer, &shared, &cfg, &span).await {
                Ok(Some(moving)) => {
                    hand_off(reader, writer, *moving, &span);
                    return;
                }
                r => r.map(|_| ()),
            }
        }
        Err(e) => {
            tracing::info!(parent: &span, error = %e, "cannot adopt a client from the old process");
            Err(e)
        }
    };
    end_session(&shared, &cfg, &span, opened_at, Some(&mut writer), result).await;
    let _ = writer.shutdown().await;
}

/// Rebuild a moved client's login: limits, pool, cancel key, settings and statements.
async fn adopt(
    state: &crate::takeover::ClientState,
    peer: PeerAddr,
    local: Option<PeerAddr>,
    shared: &Arc<Shared>,
    cfg: &Config,
) -> Result<Box<LoggedIn>, SessionError> {
    let user = state.user.clone();
    let db = cfg
        .database_for(&state.database, &user)
        .ok_or_else(|| SessionError::UnknownDatabase(state.database.clone()))?;
    let _slot = Some(
        shared
            .client_slots
            .try_acquire()
            .ok_or(SessionError::TooManyClients)?,
    );
    let _admitted = shared
        .pools
        .admit_client(cfg, &db, &user)
        .map_err(SessionError::ClientLimit)?;
    let looked_up;
    let secret = match cfg.users.get(&user) {
        Some(s) => Some(s),
        None if db.auth_user.is_some() => {
            looked_up = shared
                .pools
                .auth_query_secret(&db, &user)
                .await
                .map_err(|e| SessionError::Pool(crate::pool::PoolError::Server(e)))?;
            looked_up.as_ref()
        }
        None => None,
    };
    let pool = shared.pools.pool_for(&db, &user, secret, None);
    let in_pool = pool.stats.client();
    let registered = shared.clients.register(ClientInfo {
        user: user.clone(),
        database: state.database.clone(),
        addr: peer,
        local_addr: local,
        application_name: state.application_name.clone(),
        tls: false,
        admin: false,
    });
    let cancel_key = shared
        .cancels
        .adopt(state.cancel_pid, &state.cancel_key)
        .unwrap_or_else(|| shared.cancels.register(0));
    let settings = ClientSettings::new(
        state
            .settings
            .iter()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect(),
        state.session_authorization.clone(),
        state.role.clone(),
        None,
    );
    let names: Vec<(String, String)> = state
        .custom_names
        .iter()
        .map(|n| (n.clone(), String::new()))
        .collect();
    pool.stats.login();
    shared.metrics.client_connections.inc();
    let _gauge = ClientGauge(shared.metrics.clone());
    let naming = Naming::Pooled {
        names: shared.pools.names_for(&pool.key),
        search_path: settings.statement_key(),
    };
    Ok(Box::new(LoggedIn {
        _slot,
        _admitted,
        _gauge,
        epoch: shared.pools.epoch_for(&db.name),
        pool,
        mode: PoolMode::Transaction,
        naming,
        attached: None,
        cancel_key,
        settings,
        watch: SettingsWatch::with_startup(&names),
        reported: Reported::new(Arc::new(state.reported.clone())),
        registered,
        _in_pool: in_pool,
        statements: state.statements.clone(),
    }))
}

/// A client moving to a new process: its state, and its place in the hand-over.
type Moving = (crate::takeover::ClientState, crate::takeover::Claim);

/// Report how a session ended: to the client when it may be told, in the log and the metrics.
async fn end_session(
    shared: &Shared,
    cfg: &Config,
    span: &tracing::Span,
    opened_at: std::time::Instant,
    writer: Option<&mut ClientWriter>,
    result: Result<(), SessionError>,
) {
    if let Err(e) = result {
        if let (Some(frame), Some(writer)) = (e.client_error(), writer) {
            let _ = writer.write_frame(&frame).await;
        }
        // A session timeout is counted by pgheal_timeouts_total, not as a refusal.
        if !matches!(e, SessionError::Timeout(_)) {
            shared
                .metrics
                .clients_refused
                .with_label_values(&[e.refusal_reason()])
                .inc();
        }
        match &e {
            SessionError::Net(_) => {
                tracing::debug!(parent: span, error = %e, "client connection ended")
            }
            _ => tracing::debug!(parent: span, error = %e, "client session failed"),
        }
        let to_client = e.client_error().is_some();
        crate::metrics::oplog::session_end(
            &cfg.log,
            span,
            Some(&e),
            to_client,
            opened_at.elapsed(),
        );
    } else {
        crate::metrics::oplog::session_end(&cfg.log, span, None, false, opened_at.elapsed());
    }
}

/// The client's session: its login runs inside the client span; the relay does not (entering a
/// span on every poll of the session task costs as much as a tenth of a forwarded
/// transaction), and its few log lines name the span as their parent instead.
async fn session(
    client: Box<Client>,
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    shared: &Arc<Shared>,
    cfg: &Config,
    span: &tracing::Span,
) -> Result<Option<Box<Moving>>, SessionError> {
    let login = match Box::pin(login(client, reader, writer, shared, cfg).instrument(span.clone()))
        .await?
    {
        None => return Ok(None),
        Some(Login::Console(c)) => {
            return Box::pin(
                crate::admin::serve(reader, writer, shared, c.role, &c.registered.track)
                    .instrument(span.clone()),
            )
            .await
            .map(|()| None);
        }
        Some(Login::Pooled(l)) => l,
    };
    converse(login, reader, writer, shared, cfg, span).await
}

/// The relay of a logged-in client, until it leaves or moves (an online restart).
async fn converse(
    login: Box<LoggedIn>,
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    shared: &Arc<Shared>,
    cfg: &Config,
    span: &tracing::Span,
) -> Result<Option<Box<Moving>>, SessionError> {
    // What the session holds while its client is idle is this future: the login's values are
    // unpacked inside a block, so that each is stored once (in `keep` or in the conversation)
    // and not a second time as a moved-from local of this future (issue 14).
    let keep;
    let mut conversation = {
        // Moved in here, its box is freed at the end of the block, not of the session.
        let login = login;
        let LoggedIn {
            _slot,
            _admitted,
            _gauge,
            pool,
            mode,
            naming,
            attached,
            cancel_key,
            settings,
            watch,
            reported,
            epoch,
            registered,
            _in_pool,
            statements,
        } = *login;
        if let Some(c) = &attached {
            registered.track.linked(c.conn_ref().id);
            c.link_to(registered.track.id);
        }
        let timers = super::timeouts::Watch::new(
            shared.config.clone(),
            super::timeouts::Users {
                client: &registered.track.user,
                server: &pool.key.user,
            },
        );
        let mut engine = Relay::new(cfg.heal.clone(), naming)
            .with_epoch(epoch)
            .with_span(span.clone())
            .with_database(&pool.key.database);
        for s in &statements {
            engine.adopt_statement(s);
        }
        registered.track.set_prepared(statements.len());
        keep = Keep {
            _in_pool,
            registered,
            cancel_key,
            _gauge,
            _admitted,
            _slot,
        };
        Conversation {
            engine,
            attached,
            pool,
            mode,
            settings,
            listen: ClientListen::new(shared.pools.listeners().clone(), shared.metrics.clone()),
            pin: Pin::new(shared.metrics.clone()),
            watch,
            reported,
            discard_pending: false,
            cancel: &keep.cancel_key,
            metrics: shared.metrics.clone(),
            client: keep.registered.track.clone(),
            activity: Default::default(),
            query_start: None,
            xact_start: None,
            timers,
            fast_close: super::relay_loop::fast_close_ticker(mode, cfg.servers.fast_close),
        }
    };
    // A new watcher has seen nothing: a kill (or a request to move, an online restart) that
    // came before the relay began wakes it at once.
    let mut force = keep.registered.track.killed();
    let end = conversation.relay(reader, writer, &mut force).await;
    let moving = match &end {
        Ok(super::relay_loop::End::HandedOver) => {
            let unix_port = match keep.registered.track.addr {
                PeerAddr::Unix { port, .. } => Some(port),
                PeerAddr::Tcp(_) => None,
            };
            let state = conversation.export(&keep.registered.track.application_name, unix_port);
            keep.registered
                .track
                .take_claim()
                .map(|c| Box::new((state, c)))
        }
        _ => None,
    };
    Box::pin(conversation.finish(&end).instrument(span.clone())).await;
    match moving {
        Some(m) => Ok(Some(m)),
        None => end.map(|_| None),
    }
}

/// What a session keeps beside its conversation, dropped after it in this order (the order
/// in which the unpacked login values were dropped).
struct Keep {
    _in_pool: crate::pool::stats::ClientCount,
    registered: Registered,
    cancel_key: super::cancel::CancelKey,
    _gauge: ClientGauge,
    _admitted: crate::pool::registry::ClientAdmission,
    _slot: Option<Slot>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn of two arguments returns (not polled, not built).
    fn future_size<A, B, F: std::future::Future>(_: impl Fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Issue 14: the session task (the future `run_client` returns, allocated once per client
    /// for its whole life) holds what an idle client needs, not the login's or a
    /// transaction's working state, which are boxed and freed when done. It was about 18 KiB,
    /// then 3.5 KiB with the relay loop's state in it, 2.6 KiB since; the bound leaves room
    /// for a field or two, not for an unboxed login or relay step.
    #[test]
    fn the_session_task_of_an_idle_client_stays_small() {
        let size = future_size(run_client);
        assert!(size <= 3 * 1024, "the session future is {size} bytes");
    }

    /// The wait between transactions is what a session holds beside its conversation while
    /// idle: a borrow of it, the client's read and the kill switch's waiter, not a relay step.
    #[test]
    fn the_wait_between_transactions_stays_small() {
        fn size<A, B, C, F: std::future::Future>(_: impl Fn(A, B, C) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = size(Conversation::idle);
        assert!(size <= 384, "the idle wait is {size} bytes");
    }
}
