//! A bounded pool of server connections for one (database, user).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::PoolMode;
use crate::metrics::Metrics;
use crate::protocol::backend::TxStatus;

use super::reset::{reset, RESET_TIMEOUT};
use super::server::{ServerConn, ServerError, ServerLogin};

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
}

pub struct Pool {
    pub key: PoolKey,
    login: ServerLogin,
    settings: PoolSettings,
    /// One permit per open connection that is checked out, connecting, or being reset.
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<ServerConn>>,
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
        metrics: Arc<Metrics>,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            key,
            login,
            permits: Arc::new(Semaphore::new(settings.size)),
            settings,
            idle: Mutex::new(Vec::new()),
            params: Mutex::new(None),
            metrics,
        })
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
    pub fn login(&self) -> &ServerLogin {
        &self.login
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    fn expired(&self, c: &ServerConn, now: Instant) -> bool {
        let lifetime = self.settings.server_lifetime;
        !lifetime.is_zero() && now.duration_since(c.created) >= lifetime
    }

    /// Wait (up to `query_wait_timeout`) for a connection: an idle one if healthy, else a new
    /// one. Cancel-safe: a cancelled wait takes nothing.
    pub async fn checkout(self: &Arc<Self>) -> Result<Checkout, PoolError> {
        let wait = self.settings.query_wait_timeout;
        let permit = match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Err(_) => return Err(PoolError::WaitTimeout(wait)),
            Ok(Err(_)) => return Err(PoolError::Closed),
            Ok(Ok(p)) => p,
        };
        let now = Instant::now();
        loop {
            // The most recently used idle connection of this event loop, else any.
            let here = std::thread::current().id();
            let candidate = self.idle.lock().ok().and_then(|mut v| {
                match v.iter().rposition(|c| c.home() == here) {
                    Some(i) => Some(v.remove(i)),
                    None => v.pop(),
                }
            });
            match candidate {
                Some(c) if self.expired(&c, now) || c.is_broken_while_idle() => {
                    tracing::debug!(
                        server = c.id,
                        pid = c.backend_pid,
                        "closing an expired or broken idle server connection"
                    );
                    self.close(c);
                }
                Some(c) => match c.at_home() {
                    Ok((c, moved)) => {
                        if moved {
                            self.metrics.server_connection_moves.inc();
                        }
                        return Ok(self.guard(c, permit));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "closing a server connection that could not move to this event loop");
                        self.metrics.server_connections.dec();
                    }
                },
                None => {
                    let c = ServerConn::connect(&self.login).await?;
                    self.metrics.server_connections.inc();
                    self.remember_params(&c);
                    tracing::debug!(server = c.id, pid = c.backend_pid, pool = ?self, "opened a server connection");
                    return Ok(self.guard(c, permit));
                }
            }
        }
    }

    fn guard(self: &Arc<Self>, conn: ServerConn, permit: OwnedSemaphorePermit) -> Checkout {
        Checkout {
            conn: Some(conn),
            permit: Some(permit),
            pool: self.clone(),
        }
    }

    /// Close a connection for good (a polite Terminate if the socket takes it).
    pub(crate) fn close(&self, c: ServerConn) {
        let x = crate::protocol::encode::terminate();
        let mut w = c.writer.into_inner();
        let _ = w.try_write(&x.bytes);
        self.metrics.server_connections.dec();
    }

    fn put_idle(&self, mut c: ServerConn) {
        c.idle_since = Instant::now();
        if self.expired(&c, c.idle_since) {
            self.close(c);
            return;
        }
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
                .partition(|c| self.expired(c, now) || c.is_broken_while_idle());
            to_close.extend(gone);
            // Idle past server_idle_timeout: close, oldest first, down to min_size open.
            let idle_timeout = self.settings.server_idle_timeout;
            if !idle_timeout.is_zero() {
                let in_use = self.settings.size - self.permits.available_permits();
                keep.sort_by_key(|c| std::cmp::Reverse(c.idle_since));
                while in_use + keep.len() > self.settings.min_size
                    && keep
                        .last()
                        .is_some_and(|c| now.duration_since(c.idle_since) >= idle_timeout)
                {
                    to_close.extend(keep.pop());
                }
                keep.reverse();
            }
            *idle = keep;
        }
        for c in to_close {
            self.close(c);
        }
        let open = self.settings.size - self.permits.available_permits() + self.idle_count();
        for _ in open..self.settings.min_size {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break;
            };
            match ServerConn::connect(&self.login).await {
                Ok(c) => {
                    self.metrics.server_connections.inc();
                    self.put_idle(c);
                }
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

    /// Close every idle connection (shutdown).
    pub fn close_idle(&self) {
        let idle: Vec<ServerConn> = self
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
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Pool>,
}

impl Checkout {
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

    /// Return the connection. `quiet`: every message sent was answered up to ReadyForQuery;
    /// otherwise the connection is closed. In the background: ROLLBACK when a transaction
    /// is open, then `server_reset_query` (session mode, or always when configured).
    pub fn checkin(mut self, status: TxStatus, quiet: bool) {
        let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        let pool = self.pool.clone();
        if !quiet {
            tracing::debug!(
                server = conn.id,
                "closing a server connection left mid-batch"
            );
            pool.close(conn);
            return;
        }
        let s = &pool.settings;
        let run_reset = s.mode == PoolMode::Session || s.reset_query_always;
        if status == TxStatus::Idle && !run_reset {
            // Transaction pooling's fast path: nothing to send, straight back to the idle list.
            pool.put_idle(conn);
            drop(permit);
            return;
        }
        tokio::spawn(async move {
            let s = &pool.settings;
            let query = if run_reset {
                s.reset_query.as_str()
            } else {
                ""
            };
            let mut conn = conn;
            let done = tokio::time::timeout(RESET_TIMEOUT, reset(&mut conn, status, query)).await;
            match done.unwrap_or_else(|_| Err("the reset timed out".into())) {
                Ok(()) => pool.put_idle(conn),
                Err(why) => {
                    tracing::info!(server = conn.id, reason = %why, "closing a server connection that failed its reset");
                    pool.close(conn);
                }
            }
            drop(permit);
        });
    }

    /// Close the connection (it broke or its state is unknown).
    pub fn discard(mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.close(c);
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.close(c);
        }
    }
}
