//! Running pgheal: bind, accept clients, serve metrics, shut down gracefully.
//!
//! Shutdown (SIGTERM, or [`ProxyHandle::shutdown`]): stop accepting, let sessions finish for up
//! to `shutdown_timeout`, then tell the remaining ones to end (each client gets PostgreSQL's
//! `57P01 terminating connection due to administrator command`), and close idle server
//! connections.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::{Config, SchemaWatch};
use crate::event_loops::EventLoops;
use crate::metrics::{self, Metrics};
use crate::net::tls::{log_reload, reload_server_files, watch_tls_files, ClientTlsState};
use crate::pool::Pools;
use crate::session::cancel::CancelRegistry;
use crate::session::{run_client, Shared};

/// A running pgheal.
pub struct ProxyHandle {
    pub addr: SocketAddr,
    pub pools: Arc<Pools>,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
    client_tls: Option<Arc<ClientTlsState>>,
}

impl ProxyHandle {
    /// The schema epoch of a database (advances with every schema change pgheal learns of).
    pub fn schema_epoch(&self, database: &str) -> u64 {
        self.pools.epoch_for(database).current()
    }

    /// Ask for a graceful shutdown without waiting for it.
    pub fn trigger_shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Shut down gracefully and wait until every session has ended.
    pub async fn shutdown(self) {
        self.trigger_shutdown();
        let _ = self.done.await;
    }

    /// Reload the TLS certificate files now (SIGHUP), even if they look unchanged: the client
    /// ones (new handshakes use them; established sessions are untouched) and the
    /// `server_tls_*` ones (new server connections use them). A broken file is logged and the
    /// previous certificate stays in use.
    pub fn reload_tls(&self) {
        if let Some(state) = &self.client_tls {
            log_reload(state, true);
        }
        reload_server_files(true);
    }

    /// Wait until the proxy stops (after a shutdown was triggered).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Bind the listeners and start serving in the background.
pub async fn start(cfg: Config) -> std::io::Result<ProxyHandle> {
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let metrics = Metrics::new();
    let metrics_addr = match cfg.metrics_listen {
        Some(a) => {
            let l = metrics::bind(a).await?;
            let local = l.local_addr()?;
            tokio::spawn(metrics::serve(l, metrics.clone()));
            Some(local)
        }
        None => None,
    };
    let pools = Pools::new(cfg.clone(), metrics.clone());
    let handle_pools = pools.clone();
    pools.prewarm();
    let maintenance = tokio::spawn(pools.clone().maintain_forever());
    let mut watchers = Vec::new();
    if cfg.schema_watch == SchemaWatch::Listen {
        for db in cfg.databases.values() {
            if db.user.is_none() {
                tracing::warn!(db = %db.name, "schema_watch needs a server user for the database (user/password or --upstream); not watching it");
                continue;
            }
            watchers.push(tokio::spawn(crate::watch::watch_forever(
                db.clone(),
                pools.epoch_for(&db.name),
            )));
        }
    }
    let (force_tx, force_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        pools: pools.clone(),
        metrics: metrics.clone(),
        cancels: Arc::new(CancelRegistry::default()),
        client_slots: Arc::new(Semaphore::new(cfg.max_client_conn)),
        force_close: force_rx,
        startup_memo: Default::default(),
    });
    // Certificate files are polled for changes (see `crate::net::tls::watch_tls_files`).
    let client_tls = cfg.client_tls.state.clone();
    let tls_watch = tokio::spawn(watch_tls_files(client_tls.clone(), TLS_FILE_POLL));
    let (stop, mut stop_rx) = watch::channel(false);
    let loops = EventLoops::start(cfg.threads, &metrics)?;
    tracing::info!(%addr, databases = cfg.databases.len(), event_loops = loops.len(), "pgheal is accepting clients");
    let done = tokio::spawn(async move {
        let mut sessions = JoinSet::new();
        loop {
            tokio::select! {
                _ = stop_rx.changed() => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let shared = shared.clone();
                        loops.spawn_session(&mut sessions, stream, move |s| run_client(s, peer, shared));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        tracing::info!(sessions = sessions.len(), timeout = ?cfg.shutdown_timeout, "shutting down: waiting for sessions to finish");
        let drain = async { while sessions.join_next().await.is_some() {} };
        if tokio::time::timeout(cfg.shutdown_timeout, drain)
            .await
            .is_err()
        {
            tracing::info!(
                sessions = sessions.len(),
                "shutdown timeout passed: closing the remaining sessions"
            );
            let _ = force_tx.send(true);
            let drain = async { while sessions.join_next().await.is_some() {} };
            if tokio::time::timeout(std::time::Duration::from_secs(5), drain)
                .await
                .is_err()
            {
                sessions.abort_all();
            }
        }
        // Let background resets finish before closing idle connections.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        maintenance.abort();
        tls_watch.abort();
        for w in &watchers {
            w.abort();
        }
        pools.close_idle();
        loops.stop();
        tracing::info!("pgheal stopped");
    });
    Ok(ProxyHandle {
        addr,
        pools: handle_pools,
        metrics_addr,
        metrics,
        stop,
        done,
        client_tls,
    })
}

/// How often the client TLS files are checked for changes.
const TLS_FILE_POLL: std::time::Duration = std::time::Duration::from_secs(2);
