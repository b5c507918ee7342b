//! A bounded pool of server connections for one (database, user).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::PoolMode;
use crate::metrics::Metrics;
use crate::protocol::backend::TxStatus;

use super::capacity::{Capacity, Slot};
use super::control::PoolControl;
use super::reset::{reset, RESET_TIMEOUT};
use super::server::{ServerConn, ServerError, ServerLogin};
use super::shared_limit::{self, SharedLimit, SharedSlots};
use super::stats::{PoolStats, ServerState, ServerTrack};

/// Pools are per client-facing database and server user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no server connection became available within query_wait_timeout ({0:?})")]
    WaitTimeout(Duration),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("pgheal is shutting down")]
    Closed,
}

/// Settings of one pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub mode: PoolMode,
    pub size: usize,
    pub min_size: usize,
    pub query_wait_timeout: Duration,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub reset_query: String,
    pub reset_query_always: bool,
    /// `reserve_pool_size`: connections beyond `size` for clients that waited
    /// `reserve_timeout` (0 = none).
    pub reserve_size: usize,
    /// `reserve_pool_timeout` (zero disables the reserve, as in PgBouncer).
    pub reserve_timeout: Duration,
    /// `server_check_*`, `server_round_robin` (see [`super::check`]).
    pub servers: crate::config::servers::ServerSettings,
}

/// The caps a pool shares with the other pools of its database and of its server user.
#[derive(Debug, Clone)]
pub struct SharedLimits {
    pub db: Arc<SharedLimit>,
    pub user: Arc<SharedLimit>,
}

/// How long a checkout over `max_db_connections` / `max_user_connections` sleeps between
/// tries (a slot comes back when a connection of another pool closes; see
/// [`super::shared_limit`]).
const SHARED_LIMIT_TICK: Duration = Duration::from_millis(20);

/// An idle connection and its entry in the pool's list.
struct Pooled {
    conn: ServerConn,
    track: Arc<ServerTrack>,
    /// Its place under `max_db_connections` and `max_user_connections`, freed when it closes.
    _shared: SharedSlots,
}

pub struct Pool {
    pub key: PoolKey,
    /// How new connections log in; replaced by a reload that changes it (the connections
    /// opened before are then closed as they come back, see [`Pool::reconfigure`]).
    login: RwLock<Arc<ServerLogin>>,
    /// Sizes and timeouts, changed in place by a reload.
    settings: RwLock<Arc<PoolSettings>>,
    /// One slot per open connection that is checked out, connecting, or being reset; its size
    /// is `pool_size`.
    permits: Capacity,
    /// `reserve_pool_size` more slots, for clients that waited `reserve_pool_timeout`.
    reserve: Capacity,
    /// `max_db_connections` and `max_user_connections`.
    pub shared: SharedLimits,
    idle: Mutex<Vec<Pooled>>,
    /// Every open connection of the pool, for `SHOW SERVERS` (changes on open and close).
    servers: Mutex<std::collections::BTreeMap<u64, Arc<ServerTrack>>>,
    /// The pool's figures (see [`super::stats`]).
    pub stats: Arc<PoolStats>,
    /// Pause and reconnect of its database and of the process.
    pub control: PoolControl,
    /// The server's ParameterStatus values, from the first connection: transaction pooling
    /// answers logins with them instead of waiting for a server connection.
    params: Mutex<Option<std::collections::BTreeMap<String, String>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({}/{})", self.key.database, self.key.user)
    }
}

impl Pool {
    pub fn new(
        key: PoolKey,
        login: ServerLogin,
        settings: PoolSettings,
        control: PoolControl,
        shared: SharedLimits,
        metrics: Arc<Metrics>,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            key,
            login: RwLock::new(Arc::new(login)),
            permits: Capacity::new(settings.size),
            reserve: Capacity::new(settings.reserve_size),
            shared,
            settings: RwLock::new(Arc::new(settings)),
            idle: Mutex::new(Vec::new()),
            servers: Mutex::new(Default::default()),
            stats: Arc::new(PoolStats::default()),
            control,
            params: Mutex::new(None),
            metrics,
        });
        pool.shared.db.register(&pool);
        pool.shared.user.register(&pool);
        pool
    }

    /// The server parameters seen on this pool's connections, if any connection was opened.
    pub fn cached_params(&self) -> Option<std::collections::BTreeMap<String, String>> {
        self.params.lock().ok().and_then(|p| p.clone())
    }

    fn remember_params(&self, c: &ServerConn) {
        if let Ok(mut p) = self.params.lock() {
            if p.is_none() {
                *p = Some(c.params.clone());
            }
        }
    }

    /// How this pool's connections log in (the listening connection logs in the same way).
    pub fn login(&self) -> Arc<ServerLogin> {
        match self.login.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn settings(&self) -> Arc<PoolSettings> {
        match self.settings.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Close every connection as it comes back (idle ones now): those opened from now on
    /// belong to a newer generation.
    pub fn reconnect(&self) {
        self.control.own.reconnect();
        self.close_idle();
    }

    /// Apply a reloaded configuration: new sizes and timeouts take effect at once (a smaller
    /// pool shrinks as its connections come back). A new `login` (the database's host, port,
    /// user, password, TLS, ... changed) is used by new connections; `reconnect` closes the
    /// existing ones as they are given back, as PgBouncer does when a database's connection
    /// settings change. Idle connections over the new size are closed by the next
    /// [`Pool::maintain`].
    pub fn reconfigure(&self, login: Option<ServerLogin>, settings: PoolSettings) {
        self.permits.resize(settings.size);
        self.reserve.resize(settings.reserve_size);
        if let Ok(mut s) = self.settings.write() {
            *s = Arc::new(settings);
        }
        if let Some(mut login) = login {
            if let Ok(mut l) = self.login.write() {
                // Keys a client's SCRAM login lent stay usable while the user is the same.
                if login.user == l.user {
                    login.passthrough = l.passthrough.clone();
                }
                *l = Arc::new(login);
            }
        }
    }

    /// Close the idle connection unused the longest (to make room under a shared limit).
    pub fn close_oldest_idle(&self) -> bool {
        let oldest = self.idle.lock().ok().and_then(|mut v| {
            let i = v
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.conn.idle_since)
                .map(|(i, _)| i)?;
            Some(v.remove(i))
        });
        match oldest {
            Some(c) => {
                self.close(c);
                true
            }
            None => false,
        }
    }

    /// Connections of the reserve in use now.
    pub fn reserve_in_use(&self) -> usize {
        self.reserve.in_use()
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// How many idle connections hold the statement prepared under `name`.
    pub fn idle_holding(&self, name: &[u8]) -> usize {
        self.idle
            .lock()
            .map(|v| v.iter().filter(|c| c.conn.prepared.contains(name)).count())
            .unwrap_or(0)
    }

    /// Every open connection of the pool, by id.
    pub fn servers(&self) -> Vec<Arc<ServerTrack>> {
        self.servers
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether a connection must not be reused: past `server_lifetime`, opened before a
    /// `RECONNECT`, or its database is paused.
    fn retire(&self, c: &Pooled, now: Instant) -> bool {
        let lifetime = self.settings().server_lifetime;
        (!lifetime.is_zero() && now.duration_since(c.conn.created) >= lifetime)
            || self.control.is_stale(c.track.generation)
            || self.control.is_paused()
    }

    /// Wait (up to `query_wait_timeout`, a pause included) for a connection: an idle one if
    /// healthy, else a new one. Cancel-safe: a cancelled wait takes nothing.
    pub async fn checkout(self: &Arc<Self>) -> Result<Checkout, PoolError> {
        let start = Instant::now();
        let fast = if self.control.is_paused() {
            None
        } else {
            self.permits.try_acquire()
        };
        let permit = match fast {
            Some(p) => p,
            None => {
                let settings = self.settings();
                let wait = settings.query_wait_timeout;
                let _waiting = self.stats.waiter();
                let acquire = async {
                    loop {
                        self.control.until_running().await;
                        let p = tokio::select! {
                            p = self.permits.acquire() => p,
                            p = self.reserve_after(&settings, start) => p,
                        };
                        // A pause that began while this client waited for a permit.
                        if p.is_err() || !self.control.is_paused() {
                            return p;
                        }
                    }
                };
                match tokio::time::timeout(wait, acquire).await {
                    Err(_) => return Err(PoolError::WaitTimeout(wait)),
                    Ok(Err(_)) => return Err(PoolError::Closed),
                    Ok(Ok(p)) => p,
                }
            }
        };
        self.stats.assigned(start.elapsed());
        let now = Instant::now();
        loop {
            // The most recently used idle connection of this event loop, else any; with
            // server_round_robin, the least recently used.
            let here = std::thread::current().id();
            let fifo = self.settings().servers.round_robin;
            let candidate = self.idle.lock().ok().and_then(|mut v| {
                let mine = |c: &Pooled| c.conn.home() == here;
                let i = if fifo {
                    v.iter().position(mine).or((!v.is_empty()).then_some(0))
                } else {
                    v.iter().rposition(mine).or(v.len().checked_sub(1))
                };
                i.map(|i| v.remove(i))
            });
            match candidate {
                Some(c) if self.retire(&c, now) || c.conn.is_broken_while_idle() => {
                    tracing::debug!(
                        server = c.conn.id,
                        pid = c.conn.backend_pid,
                        "closing an expired, stale or broken idle server connection"
                    );
                    self.close(c);
                }
                Some(Pooled {
                    conn,
                    track,
                    _shared,
                }) => match conn.at_home() {
                    Ok((conn, moved)) => {
                        if moved {
                            self.metrics.server_connection_moves.inc();
                        }
                        let Some(c) = self
                            .check_if_due(
                                Pooled {
                                    conn,
                                    track,
                                    _shared,
                                },
                                now,
                            )
                            .await
                        else {
                            continue;
                        };
                        return Ok(self.guard(c, permit));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "closing a server connection that could not move to this event loop");
                        self.forget(&track);
                    }
                },
                None => {
                    let Some(shared) = self.shared_slots(start).await? else {
                        // An idle connection came back while waiting for the shared limits.
                        continue;
                    };
                    let c = self.open(shared).await?;
                    return Ok(self.guard(c, permit));
                }
            }
        }
    }

    /// A reserve slot once the client has waited `reserve_pool_timeout` (PgBouncer's
    /// `taking connection from reserve_pool`); never without a reserve.
    async fn reserve_after(
        &self,
        settings: &PoolSettings,
        start: Instant,
    ) -> Result<Slot, tokio::sync::AcquireError> {
        if settings.reserve_size == 0 || settings.reserve_timeout.is_zero() {
            return std::future::pending().await;
        }
        tokio::time::sleep_until((start + settings.reserve_timeout).into()).await;
        let slot = self.reserve.acquire().await?;
        tracing::warn!(db = %self.key.database, user = %self.key.user, waited_ms = start.elapsed().as_millis() as u64, "taking connection from reserve_pool");
        self.stats.reserve_used();
        Ok(slot)
    }

    /// Places under `max_db_connections` and `max_user_connections` for a new connection:
    /// taken at once, else after closing an idle connection of another pool of the database
    /// or user, else after waiting (within `query_wait_timeout` from `start`). `None`: one of
    /// this pool's own connections became idle meanwhile (take it instead).
    async fn shared_slots(&self, start: Instant) -> Result<Option<SharedSlots>, PoolError> {
        let (db, user) = (&self.shared.db, &self.shared.user);
        if let Some(s) = shared_limit::try_take(db, user) {
            return Ok(Some(s));
        }
        let wait = self.settings().query_wait_timeout;
        let _waiting = self.stats.waiter();
        tracing::debug!(pool = ?self, db_limit = ?db, user_limit = ?user, "server connection limit reached; waiting");
        loop {
            // Make room under the limit that is reached: an idle connection of another pool
            // of the same database, or of the same user.
            let full = |l: &SharedLimit| l.limit() > 0 && l.in_use() >= l.limit();
            let evicted = (full(db) && db.evict_one(self)) || (full(user) && user.evict_one(self));
            if let Some(s) = shared_limit::try_take(db, user) {
                return Ok(Some(s));
            }
            if self.idle_count() > 0 {
                return Ok(None);
            }
            if start.elapsed() >= wait {
                return Err(PoolError::WaitTimeout(wait));
            }
            if !evicted {
                tokio::time::sleep(SHARED_LIMIT_TICK).await;
            }
        }
    }

    /// `server_check_query` on a connection idle past `server_check_delay` (see
    /// [`super::check`]); `None` when the check failed and the connection was closed.
    /// Cancel-safe: a cancelled check closes the connection.
    async fn check_if_due(&self, c: Pooled, now: Instant) -> Option<Pooled> {
        let s = self.settings();
        let Some(sql) = super::check::due(&s.servers, c.conn.idle_since, now) else {
            return Some(c);
        };
        let sql = sql.to_owned();
        struct CloseOnDrop<'a>(&'a Pool, Option<Pooled>);
        impl Drop for CloseOnDrop<'_> {
            fn drop(&mut self) {
                if let Some(c) = self.1.take() {
                    self.0.close(c);
                }
            }
        }
        let mut g = CloseOnDrop(self, Some(c));
        let c = g.1.as_mut()?;
        c.track.set_state(ServerState::Tested);
        let result = {
            let _testing = self.stats.testing();
            super::check::run(&mut c.conn, &sql).await
        };
        self.stats.checked(result.is_ok());
        match result {
            Ok(()) => g.1.take(),
            Err(why) => {
                tracing::info!(server = c.conn.id, pid = c.conn.backend_pid, reason = %why, "closing an idle server connection that failed server_check_query");
                None
            }
        }
    }

    /// Open a connection and add it to the pool's list (not yet idle nor checked out).
    async fn open(&self, shared: SharedSlots) -> Result<Pooled, ServerError> {
        let generation = self.control.generation();
        let conn = {
            let _login = self.stats.connecting();
            ServerConn::connect(&self.login()).await?
        };
        self.metrics.server_connections.inc();
        self.remember_params(&conn);
        tracing::debug!(server = conn.id, pid = conn.backend_pid, pool = ?self, "opened a server connection");
        let tls = if conn.reader.get_ref().is_tls() {
            "TLS".to_owned()
        } else {
            String::new()
        };
        let track = ServerTrack::new(conn.id, conn.addr, None, conn.backend_pid, tls, generation);
        if let Ok(mut m) = self.servers.lock() {
            m.insert(conn.id, track.clone());
        }
        Ok(Pooled {
            conn,
            track,
            _shared: shared,
        })
    }

    fn guard(self: &Arc<Self>, c: Pooled, permit: Slot) -> Checkout {
        c.track.set_state(ServerState::Active);
        self.stats.checked_out();
        Checkout {
            conn: Some(c.conn),
            track: Some(c.track),
            shared: Some(c._shared),
            permit: Some(permit),
            pool: self.clone(),
        }
    }

    /// Take a connection off the pool's list (it is closed or lost).
    fn forget(&self, track: &ServerTrack) {
        if let Ok(mut m) = self.servers.lock() {
            m.remove(&track.id);
        }
        self.metrics.server_connections.dec();
    }

    /// Close a connection for good (a polite Terminate if the socket takes it).
    fn close(&self, c: Pooled) {
        let x = crate::protocol::encode::terminate();
        let mut w = c.conn.writer.into_inner();
        let _ = w.try_write(&x.bytes);
        self.forget(&c.track);
    }

    fn put_idle(&self, mut c: Pooled) {
        c.conn.idle_since = Instant::now();
        c.track.set_prepared(c.conn.prepared.len());
        // Over a max_db_connections / max_user_connections a reload lowered: close it.
        if self.retire(&c, c.conn.idle_since) || self.shared.db.over() || self.shared.user.over() {
            self.close(c);
            return;
        }
        c.track.set_state(ServerState::Idle);
        match self.idle.lock() {
            Ok(mut v) => v.push(c),
            Err(_) => self.close(c),
        }
    }

    /// Close idle connections past `server_idle_timeout` or `server_lifetime` (keeping
    /// `min_size`), and open connections up to `min_size`. Run every second by the registry.
    pub async fn maintain(self: &Arc<Self>) {
        let now = Instant::now();
        let mut to_close = Vec::new();
        if let Ok(mut idle) = self.idle.lock() {
            let (gone, mut keep): (Vec<_>, Vec<_>) = idle
                .drain(..)
                .partition(|c| self.retire(c, now) || c.conn.is_broken_while_idle());
            to_close.extend(gone);
            let settings = self.settings();
            // Reserve connections come back idle over the size and are closed here.
            let in_use = self.permits.in_use() + self.reserve.in_use();
            keep.sort_by_key(|c| std::cmp::Reverse(c.conn.idle_since));
            // Over the pool's size (after a reload made it smaller): close the oldest.
            while in_use + keep.len() > settings.size && !keep.is_empty() {
                to_close.extend(keep.pop());
            }
            // Idle past server_idle_timeout: close, oldest first, down to min_size open.
            let idle_timeout = settings.server_idle_timeout;
            if !idle_timeout.is_zero() {
                while in_use + keep.len() > settings.min_size
                    && keep
                        .last()
                        .is_some_and(|c| now.duration_since(c.conn.idle_since) >= idle_timeout)
                {
                    to_close.extend(keep.pop());
                }
            }
            keep.reverse();
            *idle = keep;
        }
        for c in to_close {
            self.close(c);
        }
        if self.control.is_paused() {
            return;
        }
        let open = self.permits.in_use() + self.idle_count();
        for _ in open..self.settings().min_size {
            let Some(permit) = self.permits.try_acquire() else {
                break;
            };
            // min_pool_size does not wait for (nor evict under) the shared limits.
            let Some(shared) = shared_limit::try_take(&self.shared.db, &self.shared.user) else {
                break;
            };
            match self.open(shared).await {
                Ok(c) => self.put_idle(c),
                // Pass-through pools wait for a client's SCRAM login to lend its keys: not
                // worth a warning every second until then.
                Err(e @ ServerError::NoPassthroughKeys(_)) => {
                    tracing::debug!(pool = ?self, error = %e, "cannot open a minimum-pool connection yet");
                    break;
                }
                Err(e) => {
                    tracing::warn!(pool = ?self, error = %e, "cannot open a minimum-pool connection");
                    break;
                }
            }
            drop(permit);
        }
    }

    /// Close every idle connection (shutdown, `PAUSE`, `KILL`, `RECONNECT`).
    pub fn close_idle(&self) {
        let idle: Vec<Pooled> = self
            .idle
            .lock()
            .map(|mut v| v.drain(..).collect())
            .unwrap_or_default();
        for c in idle {
            self.close(c);
        }
    }
}

/// A checked-out server connection. Give it back with [`Checkout::checkin`]; dropping the guard
/// closes the connection (its state is unknown) and frees its place in the pool.
pub struct Checkout {
    conn: Option<ServerConn>,
    track: Option<Arc<ServerTrack>>,
    /// The connection's places under the shared limits (it keeps them while open).
    shared: Option<SharedSlots>,
    permit: Option<Slot>,
    pool: Arc<Pool>,
}

impl Checkout {
    /// Whether a RECONNECT (or a reload that changed the login) made this connection stale:
    /// it will be closed rather than pooled when it comes back.
    pub fn is_stale(&self) -> bool {
        self.track
            .as_ref()
            .is_some_and(|t| self.pool.control.is_stale(t.generation))
    }

    pub fn conn(&mut self) -> &mut ServerConn {
        self.conn
            .as_mut()
            .expect("a checkout holds its connection until checkin")
    }

    pub fn conn_ref(&self) -> &ServerConn {
        self.conn
            .as_ref()
            .expect("a checkout holds its connection until checkin")
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Record which client this connection now serves (`SHOW SERVERS`' link).
    pub fn link_to(&self, client_id: u64) {
        if let Some(t) = &self.track {
            t.link_to(client_id);
        }
    }

    /// Both halves, for giving back or closing.
    fn take(&mut self) -> Option<Pooled> {
        let conn = self.conn.take()?;
        let track = self.track.take()?;
        let shared = self.shared.take().unwrap_or_default();
        self.pool.stats.given_back();
        Some(Pooled {
            conn,
            track,
            _shared: shared,
        })
    }

    /// Return the connection. `quiet`: every message sent was answered up to ReadyForQuery;
    /// otherwise the connection is closed. In the background: ROLLBACK when a transaction
    /// is open, then `server_reset_query` (session mode, or always when configured).
    pub fn checkin(mut self, status: TxStatus, quiet: bool) {
        let (Some(conn), Some(permit)) = (self.take(), self.permit.take()) else {
            return;
        };
        let pool = self.pool.clone();
        if !quiet {
            tracing::debug!(
                server = conn.conn.id,
                "closing a server connection left mid-batch"
            );
            pool.close(conn);
            return;
        }
        if pool.control.is_paused() || pool.control.is_stale(conn.track.generation) {
            tracing::debug!(
                server = conn.conn.id,
                "closing a server connection given back while its database is paused or after a RECONNECT"
            );
            pool.close(conn);
            return;
        }
        let s = pool.settings();
        let run_reset = s.mode == PoolMode::Session || s.reset_query_always;
        if status == TxStatus::Idle && !run_reset {
            // Transaction pooling's fast path: nothing to send, straight back to the idle list.
            pool.put_idle(conn);
            drop(permit);
            return;
        }
        conn.track.set_state(ServerState::Used);
        tokio::spawn(async move {
            let _resetting = pool.stats.resetting();
            let query = if run_reset {
                s.reset_query.as_str()
            } else {
                ""
            };
            let mut c = conn;
            let done = tokio::time::timeout(RESET_TIMEOUT, reset(&mut c.conn, status, query)).await;
            match done.unwrap_or_else(|_| Err("the reset timed out".into())) {
                Ok(()) => pool.put_idle(c),
                Err(why) => {
                    tracing::info!(server = c.conn.id, reason = %why, "closing a server connection that failed its reset");
                    pool.close(c);
                }
            }
            drop(permit);
        });
    }

    /// Close the connection (it broke or its state is unknown).
    pub fn discard(mut self) {
        if let Some(c) = self.take() {
            self.pool.close(c);
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(c) = self.take() {
            self.pool.close(c);
        }
    }
}
