//! Running pgheal: bind, accept clients, serve metrics, shut down gracefully.
//!
//! Shutdown ([`Stop`]): stop accepting, then
//! - graceful (SIGTERM, [`ProxyHandle::shutdown`]): let sessions finish for up to
//!   `shutdown_timeout`, then tell the remaining ones to end (each client gets PostgreSQL's
//!   `57P01 terminating connection due to administrator command`);
//! - the admin console's `SHUTDOWN`: end every session now; `SHUTDOWN WAIT_FOR_CLIENTS`: wait
//!   for every client to leave; `SHUTDOWN WAIT_FOR_SERVERS`: pause every pool and end once no
//!   server connection is in use (PgBouncer's meanings);
//!
//! and close idle server connections.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::live::LiveConfig;
use crate::config::{Config, SchemaWatch};
use crate::event_loops::EventLoops;
use crate::metrics::{self, Metrics};
use crate::net::accept::MoveToLoop;
use crate::net::tls::{log_reload, reload_server_files, watch_tls_files};
use crate::net::Accepted;
use crate::pool::capacity::Capacity;
use crate::pool::Pools;
use crate::session::cancel::CancelRegistry;
use crate::session::clients::ClientList;
use crate::session::{run_adopted, run_client, Shared};
use crate::takeover::{self, Adopted, Hub, Inherited, ListenerFd};
use std::os::fd::AsFd;

/// How pgheal is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Sessions get `shutdown_timeout` to finish.
    Graceful,
    /// Every session ends now.
    Immediate,
    /// Wait for every client to leave, however long.
    WaitForClients,
    /// Pause every pool; end once no server connection is in use.
    WaitForServers,
}

/// A running pgheal.
pub struct ProxyHandle {
    /// The first address clients connect to (see `addrs` for all).
    pub addr: SocketAddr,
    /// Every address pgheal listens on.
    pub addrs: Vec<SocketAddr>,
    /// The Unix socket file clients may connect to, if any (`unix_socket_dir`).
    pub unix_socket: Option<PathBuf>,
    pub pools: Arc<Pools>,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    /// Every logged-in client.
    pub clients: Arc<ClientList>,
    stop: Arc<watch::Sender<Option<Stop>>>,
    done: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
    /// A new process took the listeners over (`-R`).
    taken_over: Arc<std::sync::atomic::AtomicBool>,
}

impl ProxyHandle {
    /// The schema epoch of a database (advances with every schema change pgheal learns of).
    pub fn schema_epoch(&self, database: &str) -> u64 {
        self.pools.epoch_for(database).current()
    }

    /// Ask for a graceful shutdown without waiting for it.
    pub fn trigger_shutdown(&self) {
        self.stop_with(Stop::Graceful);
    }

    /// Ask to stop in the given way (a stop already asked for is not changed).
    pub fn stop_with(&self, how: Stop) {
        request_stop(&self.stop, how);
    }

    /// Whether a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// A stop is under way and must not wait any longer: end every session now (a second
    /// SIGTERM or SIGINT, as PgBouncer).
    pub fn hurry_stop(&self) {
        self.clone_stopper().hurry();
    }

    /// What a signal handler needs to hurry a stop, apart from the handle.
    pub fn clone_stopper(&self) -> Stopper {
        Stopper {
            stop: self.stop.clone(),
            clients: self.clients.clone(),
        }
    }

    /// `PAUSE` of the whole process (SIGUSR1): no server connection is handed out and each is
    /// closed as it is given back, until [`ProxyHandle::resume`]. Does not wait.
    pub fn pause(&self) {
        if self.pools.controls().global().set_paused(true) {
            for p in self.pools.all() {
                p.close_idle();
            }
        }
    }

    /// `RESUME` (SIGUSR2).
    pub fn resume(&self) {
        self.pools.controls().global().set_paused(false);
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
        if let Some(state) = &self.shared.cfg().client_tls.state {
            log_reload(state, true);
        }
        reload_server_files(true);
    }

    /// `RELOAD` (SIGHUP): read the configuration file again and apply it to the running
    /// pgheal (see [`crate::reload`]). An invalid file changes nothing.
    pub fn reload(&self) -> Result<(), crate::reload::ReloadError> {
        crate::reload::reload(&self.shared)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.shared.cfg()
    }

    /// Whether a new process took this one's listeners over (`-R`).
    pub fn was_taken_over(&self) -> bool {
        self.taken_over.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Returns once a stop was asked for (by a signal, the console, or an online restart
    /// that took this process's sockets over).
    pub async fn stopping(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| s.is_some()).await;
    }

    /// Wait until the proxy stops (after a shutdown was triggered).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Hurries a stop from another task (see [`ProxyHandle::hurry_stop`]).
pub struct Stopper {
    stop: Arc<watch::Sender<Option<Stop>>>,
    clients: Arc<ClientList>,
}

impl Stopper {
    /// End every session now, whatever stop was asked for.
    pub fn hurry(&self) {
        request_stop(&self.stop, Stop::Immediate);
        self.clients.kill_all();
    }
}

/// Ask to stop, unless a stop was already asked for.
pub fn request_stop(stop: &watch::Sender<Option<Stop>>, how: Stop) {
    stop.send_if_modified(|s| {
        if s.is_none() {
            *s = Some(how);
            true
        } else {
            false
        }
    });
}

/// A listening socket as PgBouncer makes one: SO_REUSEADDR, SO_REUSEPORT when asked, a backlog
/// of 1024. An IPv6 socket is made IPv6-only (`v6_only`) when IPv4 addresses are listened on
/// too (`*` listens on 0.0.0.0 and :: side by side); alone, `[::]` keeps the system's
/// dual-stack default and takes IPv4 clients as well.
fn bind(addr: SocketAddr, reuseport: bool, v6_only: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() && v6_only {
        let s = TcpSocket::new_v6()?;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor, and a pointer to an int of the size passed.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        s
    } else if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    if reuseport {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A listening socket: TCP, or the Unix socket of a listen port.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, u16),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer)),
            Listener::Unix(l, port) => l.accept().await.map(|(s, _)| Accepted::Unix(s, *port)),
        }
    }
}

/// Bind the listeners and start serving in the background, with a configuration that
/// `RELOAD` rebuilds from `cfg.source` alone (no flags).
pub async fn start(cfg: Config) -> std::io::Result<ProxyHandle> {
    start_live(Arc::new(LiveConfig::fixed(cfg))).await
}

/// Bind the listeners and start serving in the background.
pub async fn start_live(config: Arc<LiveConfig>) -> std::io::Result<ProxyHandle> {
    start_with(config, None).await
}

/// Start serving in the background: on the listeners an old pgheal handed over (`-R`, see
/// [`crate::takeover`]), adopting the clients it sends, or on listeners bound here.
pub async fn start_with(
    config: Arc<LiveConfig>,
    inherited: Option<Inherited>,
) -> std::io::Result<ProxyHandle> {
    let cfg = config.current();
    let mut listeners = Vec::new();
    let (inherited_unix, adopted) = match inherited {
        Some(i) => {
            tracing::info!(
                old_pid = i.old_pid,
                listeners = i.tcp.len(),
                unix = i.unix.is_some(),
                "online restart: listening on the sockets of the old process"
            );
            for l in i.tcp {
                listeners.push(TcpListener::from_std(l)?);
            }
            (i.unix, Some(i.adopted))
        }
        None => {
            let all: Vec<SocketAddr> = std::iter::once(cfg.listen)
                .chain(cfg.listen_also.iter().copied())
                .collect();
            let any_v4 = all.iter().any(SocketAddr::is_ipv4);
            for a in &all {
                let l = bind(*a, cfg.so_reuseport, any_v4).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot listen on {a}: {e}"))
                })?;
                listeners.push(l);
            }
            (None, None)
        }
    };
    if listeners.is_empty() {
        return Err(std::io::Error::other("no TCP listener"));
    }
    let addrs = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?;
    let addr = addrs[0];
    // The Unix socket is named after the first listener's port (the bound one for port 0).
    let (unix_listener, socket_file) = match (inherited_unix, &cfg.unix_socket) {
        (Some((l, port, path)), _) => {
            let l = UnixListener::from_std(l)?;
            let f = crate::net::unix::SocketFile::adopt(path)?;
            (Some(Listener::Unix(l, port)), Some(f))
        }
        (None, Some(u)) => {
            let (l, f) = crate::net::unix::bind(u, addr.port(), cfg.so_reuseport)?;
            (Some(Listener::Unix(l, addr.port())), Some(f))
        }
        (None, None) => (None, None),
    };
    // Copies of the listening sockets, for a takeover by a new process.
    let mut handover_fds = Vec::new();
    for l in &listeners {
        handover_fds.push(ListenerFd::Tcp(
            l.local_addr()?,
            l.as_fd().try_clone_to_owned()?,
        ));
    }
    if let (Some(Listener::Unix(l, port)), Some(f)) = (&unix_listener, &socket_file) {
        handover_fds.push(ListenerFd::Unix(
            *port,
            f.path().to_owned(),
            l.as_fd().try_clone_to_owned()?,
        ));
    }
    // The takeover socket, next to the Unix socket.
    let (takeover_tx, mut takeover_rx) = tokio::sync::mpsc::channel(1);
    let takeover_task = match &cfg.unix_socket {
        Some(u) => match takeover::bind(&u.dir, addr.port()) {
            Ok(sock) => Some(tokio::spawn(async move {
                loop {
                    match takeover::accept_request(&sock).await {
                        Ok(Ok(conn)) => {
                            if takeover_tx.send(conn).await.is_err() {
                                return;
                            }
                        }
                        Ok(Err(reason)) => {
                            tracing::warn!(reason, "online restart request refused")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "takeover socket: accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
            })),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen on the takeover socket: online restart (-R) cannot take over this process");
                None
            }
        },
        None => None,
    };
    let unix_socket = socket_file.as_ref().map(|f| f.path().to_owned());
    let metrics = Metrics::new();
    metrics.set_databases(cfg.databases.keys());
    let metrics_listener = match cfg.metrics_listen {
        Some(a) => Some(metrics::bind(a).await?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let pools = Pools::new(config.clone(), metrics.clone());
    let handle_pools = pools.clone();
    pools.prewarm();
    let maintenance = tokio::spawn(pools.clone().maintain_forever());
    let trimmer = tokio::spawn(crate::process::trim::trim_after_waves(
        metrics.client_connections.clone(),
    ));
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
                metrics.schema_watch_up.with_label_values(&[&db.name]),
            )));
        }
    }
    let clients = Arc::new(ClientList::default());
    let stop = Arc::new(watch::channel(None).0);
    let stop_inner = stop.clone();
    let taken_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let taken_over_inner = taken_over.clone();
    let mut stop_rx = stop.subscribe();
    metrics.register_pools(&pools, clients.clone(), config.clone());
    if let Some(l) = metrics_listener {
        let health = metrics::health::Health::new(&pools, config.clone(), stop.subscribe());
        tokio::spawn(metrics::serve(l, metrics.clone(), Some(health)));
    }
    let shared = Arc::new(Shared {
        config: config.clone(),
        pools: pools.clone(),
        metrics: metrics.clone(),
        cancels: Arc::new(CancelRegistry::new(cfg.peer_id)),
        client_slots: Arc::new(Capacity::new(cfg.max_client_conn)),
        clients: clients.clone(),
        stop: stop.clone(),
        startup_memo: Default::default(),
    });
    let handle_clients = clients.clone();
    let handle_shared = shared.clone();
    // Certificate files are polled for changes (see `crate::net::tls::watch_tls_files`).
    let tls_config = config.clone();
    let tls_watch = tokio::spawn(watch_tls_files(
        move || tls_config.current().client_tls.state.clone(),
        TLS_FILE_POLL,
    ));
    let loops = EventLoops::start(cfg.threads, &metrics)?;
    tracing::info!(%addr, listening = ?addrs, unix_socket = ?unix_socket, databases = cfg.databases.len(), event_loops = loops.len(), "pgheal is accepting clients");
    // One accepting task per listening socket, all feeding the loop below.
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::channel(64);
    let acceptors: Vec<_> = listeners
        .into_iter()
        .map(Listener::Tcp)
        .chain(unix_listener)
        .map(|listener| {
            let tx = accepted_tx.clone();
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok(conn) => {
                            if tx.send(conn).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        })
        .collect();
    drop(accepted_tx);
    let done = tokio::spawn(async move {
        let mut sessions = JoinSet::new();
        let (mut adopted_rx, mut adopting) = match adopted {
            Some(rx) => (rx, true),
            None => (tokio::sync::mpsc::unbounded_channel().1, false),
        };
        let mut taken = None;
        loop {
            tokio::select! {
                _ = stop_rx.changed() => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                Some(stream) = accepted_rx.recv() => {
                    let shared = shared.clone();
                    loops.spawn_session(&mut sessions, stream, move |s| run_client(Box::new(s), shared));
                }
                a = adopted_rx.recv(), if adopting => match a {
                    Some(a) => match Adopted::from_std(a) {
                        Ok(a) => {
                            let shared = shared.clone();
                            loops.spawn_session(&mut sessions, a, move |a| run_adopted(a, shared));
                        }
                        Err(e) => tracing::warn!(error = %e, "online restart: cannot adopt a client"),
                    },
                    None => adopting = false,
                },
                Some(conn) = takeover_rx.recv() => {
                    taken = Some(conn);
                    break;
                }
            }
        }
        // Stop listening: the acceptors own the sockets.
        for a in &acceptors {
            a.abort();
        }
        for a in acceptors {
            let _ = a.await;
        }
        // The takeover socket file goes with its task.
        if let Some(t) = takeover_task {
            t.abort();
            let _ = t.await;
        }
        match taken {
            Some(conn) => {
                // Connections accepted before the acceptors stopped are served (and moved once
                // logged in); the new process owns the socket file from now on.
                while let Ok(stream) = accepted_rx.try_recv() {
                    let shared = shared.clone();
                    loops.spawn_session(&mut sessions, stream, move |s| {
                        run_client(Box::new(s), shared)
                    });
                }
                if let Some(f) = socket_file {
                    f.keep();
                }
                taken_over_inner.store(true, std::sync::atomic::Ordering::Relaxed);
                request_stop(&stop_inner, Stop::Graceful);
                let conn = Arc::new(conn);
                match takeover::send_listeners(conn.clone(), handover_fds).await {
                    Ok(()) => {
                        let (hub, rx) = Hub::new();
                        clients.hand_over_all(hub.clone());
                        let list = clients.clone();
                        let list2 = clients.clone();
                        tokio::spawn(async move {
                            let none_left = move || list.all().iter().all(|c| c.admin);
                            let staying = move || list2.all().iter().filter(|c| !c.admin).count();
                            if let Err(e) =
                                takeover::send_clients(conn, hub, rx, none_left, staying).await
                            {
                                tracing::warn!(error = %e, "online restart: the client hand-over failed");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "online restart: cannot hand the listening sockets over; stopping as on SIGTERM")
                    }
                }
            }
            None => {
                // The copies kept for a takeover would keep the sockets listening (connections
                // queued that nobody accepts): closed with the listeners.
                drop(handover_fds);
                // The socket file goes with the listener (unless another process took it over).
                drop(socket_file);
            }
        }
        drop(accepted_rx);
        let how = (*stop_rx.borrow()).unwrap_or(Stop::Graceful);
        let cfg = config.current();
        let waited = match how {
            Stop::Graceful => {
                tracing::info!(sessions = sessions.len(), timeout = ?cfg.shutdown_timeout, "shutting down: waiting for sessions to finish");
                let drain = async { while sessions.join_next().await.is_some() {} };
                tokio::time::timeout(cfg.shutdown_timeout, drain)
                    .await
                    .is_ok()
            }
            Stop::Immediate => false,
            Stop::WaitForClients => {
                tracing::info!(
                    sessions = sessions.len(),
                    "shutting down: waiting for every client to leave"
                );
                while sessions.join_next().await.is_some() {}
                true
            }
            Stop::WaitForServers => {
                tracing::info!("shutting down: pausing every pool and waiting for server connections to be released");
                pools.controls().global().set_paused(true);
                pools.close_idle();
                let released = async {
                    while !pools.all().iter().all(|p| p.servers().is_empty()) {
                        tokio::select! {
                            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                        }
                    }
                };
                released.await;
                false
            }
        };
        if !waited {
            tracing::info!(sessions = sessions.len(), "closing the remaining sessions");
            clients.kill_all();
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
        trimmer.abort();
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
        addrs,
        unix_socket,
        pools: handle_pools,
        metrics_addr,
        metrics,
        clients: handle_clients,
        stop,
        done,
        shared: handle_shared,
        taken_over,
    })
}

/// How often the client TLS files are checked for changes.
const TLS_FILE_POLL: std::time::Duration = std::time::Duration::from_secs(2);
