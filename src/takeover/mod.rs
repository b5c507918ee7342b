//! Online restart (`-R`/`--reboot`): a new pgheal takes the listening sockets and the idle
//! clients of the running one, without dropping them.
//!
//! **How.** The running pgheal listens on a private takeover socket next to its client socket,
//! `unix_socket_dir/.s.PGHEAL.<port>` (mode 0600, and the peer must be pgheal's own OS user,
//! checked with SO_PEERCRED). `pgheal -R` connects to it and sends `takeover`; the old process
//! 1. stops accepting, and sends every listening socket (TCP and Unix) as `SCM_RIGHTS`
//!    descriptors: the new process accepts on the very same sockets, so nothing is refused
//!    and the Unix socket file is neither unlinked nor bound again;
//! 2. asks every client session to move: a session moves at a transaction boundary
//!    (transaction pooling, no server connection attached, nothing unread from the client,
//!    not TLS, no LISTEN or pinned session state, no SQL-level PREPARE), with its state
//!    ([`state::ClientState`]: database, user, cancel key, settings, what it was told in
//!    ParameterStatus, its named prepared statements) and its socket. The old process writes
//!    nothing more to a moved client and closes its copy of the descriptor without
//!    `shutdown(2)`; the new process registers the same cancel key and prepares the
//!    statements lazily on its server connections, as transaction pooling always does;
//! 3. after [`CLIENT_WAIT`] (or once no client is left) sends `done`: clients that could not
//!    move (session pooling, a transaction still open, TLS whose rustls state cannot move)
//!    finish on the old process, which then stops as on SIGTERM (`shutdown_timeout`).
//!
//! **Why not PgBouncer's `SUSPEND` + `SHOW FDS` on the admin console.** The console is a
//! PostgreSQL-protocol stream read through tokio's buffered frame reader; descriptors must be
//! received with `recvmsg` at exact message boundaries, which that reader cannot do, and
//! `SUSPEND` would stop every client at once (PgBouncer flushes and freezes them) where pgheal
//! moves each client at its own transaction boundary while the others keep running. A private
//! socket with a tiny framed protocol ([`fds`]) keeps the console codec pure, and is only
//! reachable by pgheal's own OS user. The user-facing contract is PgBouncer's: `pgheal -R
//! <config>` with the same configuration takes over; without a running pgheal it boots
//! normally.

pub mod fds;
pub mod state;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::net::accept::{AcceptedStd, MoveToLoop};
use crate::net::Accepted;

pub use state::{ClientState, Message};

/// How long the old process waits for clients to reach a boundary and move.
pub const CLIENT_WAIT: Duration = Duration::from_secs(10);

/// How long either side waits for the other's next message during the listener exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong in a takeover.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("takeover socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("takeover: {0}")]
    Io(#[from] io::Error),
    #[error("takeover: malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("takeover: unexpected message from the running pgheal: {0}")]
    Unexpected(String),
    #[error("takeover: a {0} message came without its socket")]
    MissingFd(&'static str),
    #[error("takeover refused by the running pgheal: {0}")]
    Refused(String),
}

/// The takeover socket of a configuration's Unix socket directory and port.
pub fn socket_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGHEAL.{port}"))
}

// ---------------------------------------------------------------------------------------------
// The old process's side.

/// A client session leaving this process: its state and its socket.
pub struct Handed {
    pub state: ClientState,
    pub fd: OwnedFd,
}

/// Collects the sessions that move. A session first [`Hub::claim`]s a place (refused once the
/// hub closed), then leaves its relay loop and sends through the claim; the hub closes only
/// once every claimed place was used or given up, so a session never leaves its loop for a
/// hub that no longer forwards.
pub struct Hub {
    gate: Mutex<Gate>,
    tx: mpsc::UnboundedSender<Handed>,
}

struct Gate {
    open: bool,
    claimed: usize,
}

/// A place claimed by a session that is moving.
pub struct Claim {
    hub: Arc<Hub>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claim")
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hub")
    }
}

impl Claim {
    pub fn send(self, h: Handed) {
        let _ = self.hub.tx.send(h);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut g) = self.hub.gate.lock() {
            g.claimed -= 1;
        }
    }
}

impl Hub {
    pub fn new() -> (Arc<Hub>, mpsc::UnboundedReceiver<Handed>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub {
            gate: Mutex::new(Gate {
                open: true,
                claimed: 0,
            }),
            tx,
        });
        (hub, rx)
    }

    /// A place for a session that is about to move; `None` once the hub is closed.
    pub fn claim(self: &Arc<Self>) -> Option<Claim> {
        let mut g = self.gate.lock().ok()?;
        if !g.open {
            return None;
        }
        g.claimed += 1;
        Some(Claim { hub: self.clone() })
    }

    /// Close: no more claims. Waits (bounded) for the claimed places to be used.
    async fn close(&self) {
        if let Ok(mut g) = self.gate.lock() {
            g.open = false;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.gate.lock().map(|g| g.claimed).unwrap_or(0) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A listening socket as the old process hands it over.
pub enum ListenerFd {
    Tcp(std::net::SocketAddr, OwnedFd),
    Unix(u16, PathBuf, OwnedFd),
}

/// The takeover socket of a running pgheal: removed on drop if it is still this process's file.
pub struct TakeoverSocket {
    pub listener: tokio::net::UnixListener,
    path: PathBuf,
    ino: (u64, u64),
}

impl Drop for TakeoverSocket {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Listen on the takeover socket (replacing whatever socket file is at the path: a new
/// process takes the name over from the old one).
pub fn bind(dir: &Path, port: u16) -> io::Result<TakeoverSocket> {
    let path = socket_path(dir, port);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(&path)?
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{}: a file that is not a socket is in the way",
                    path.display()
                ),
            ))
        }
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let m = std::fs::symlink_metadata(&path)?;
    Ok(TakeoverSocket {
        listener,
        path,
        ino: (m.dev(), m.ino()),
    })
}

/// Accept a takeover request: pgheal's own OS user, a `takeover` message. Returns the
/// connection in blocking mode, ready for [`hand_over`].
pub async fn accept_request(sock: &TakeoverSocket) -> io::Result<Result<StdUnixStream, String>> {
    let (s, _) = sock.listener.accept().await?;
    let uid = s.peer_cred().map(|c| c.uid()).ok();
    if uid != Some(crate::net::unix::own_uid()) {
        return Ok(Err(format!(
            "takeover asked by uid {uid:?}, not pgheal's own OS user"
        )));
    }
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    let std = tokio::task::spawn_blocking(move || -> io::Result<Result<StdUnixStream, String>> {
        let Some((body, _)) = fds::recv(&s)? else {
            return Ok(Err("the connection closed before its request".into()));
        };
        match Message::from_json(&body) {
            Ok(Message::Takeover { version, pid }) if version == state::VERSION => {
                tracing::info!(new_pid = pid, "online restart asked for: handing over");
                Ok(Ok(s))
            }
            Ok(m) => {
                let reason = format!("unexpected request {m:?}");
                let _ = fds::send(
                    &s,
                    &Message::Refused {
                        reason: reason.clone(),
                    }
                    .to_json(),
                    None,
                );
                Ok(Err(reason))
            }
            Err(e) => Ok(Err(format!("malformed request: {e}"))),
        }
    })
    .await
    .map_err(io::Error::other)?;
    std
}

/// Send the listening sockets (the acceptors have stopped).
pub async fn send_listeners(
    conn: Arc<StdUnixStream>,
    listeners: Vec<ListenerFd>,
) -> Result<(), TakeoverError> {
    tokio::task::spawn_blocking(move || -> Result<(), TakeoverError> {
        for l in &listeners {
            let (m, fd) = match l {
                ListenerFd::Tcp(a, fd) => (
                    Message::TcpListener {
                        addr: a.to_string(),
                    },
                    fd,
                ),
                ListenerFd::Unix(port, path, fd) => (
                    Message::UnixListener {
                        port: *port,
                        path: path.display().to_string(),
                    },
                    fd,
                ),
            };
            fds::send(&conn, &m.to_json(), Some(fd.as_raw_fd()))?;
        }
        let done = Message::ListenersDone {
            old_pid: std::process::id(),
        };
        fds::send(&conn, &done.to_json(), None)?;
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
}

/// Forward moving clients until [`CLIENT_WAIT`] passed or `none_left` says no client is left,
/// then close the hub and tell the new process no more will come. Returns how many moved.
pub async fn send_clients(
    conn: Arc<StdUnixStream>,
    hub: Arc<Hub>,
    mut rx: mpsc::UnboundedReceiver<Handed>,
    none_left: impl Fn() -> bool,
    staying: impl Fn() -> usize,
) -> Result<usize, TakeoverError> {
    let deadline = tokio::time::Instant::now() + CLIENT_WAIT;
    let mut moved = 0;
    let send = |conn: Arc<StdUnixStream>, h: Handed| async move {
        tokio::task::spawn_blocking(move || {
            let m = Message::Client(Box::new(h.state));
            // The descriptor is closed (never shut down) once sent: the new process owns it.
            fds::send(&conn, &m.to_json(), Some(h.fd.as_raw_fd()))
        })
        .await
        .map_err(io::Error::other)?
    };
    loop {
        tokio::select! {
            h = rx.recv() => match h {
                Some(h) => { send(conn.clone(), h).await?; moved += 1; }
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                if none_left() || tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    hub.close().await;
    while let Ok(h) = rx.try_recv() {
        send(conn.clone(), h).await?;
        moved += 1;
    }
    let staying = staying();
    let c = conn.clone();
    tokio::task::spawn_blocking(move || fds::send(&c, &Message::Done { staying }.to_json(), None))
        .await
        .map_err(io::Error::other)??;
    tracing::info!(moved, staying, "online restart: client hand-over done");
    Ok(moved)
}

// ---------------------------------------------------------------------------------------------
// The new process's side.

/// A client the old process handed over, as it reaches the session loop.
pub struct Adopted {
    pub stream: Accepted,
    pub state: Box<ClientState>,
}

/// [`Adopted`] between runtimes.
pub struct AdoptedStd {
    pub stream: AcceptedStd,
    pub state: Box<ClientState>,
}

impl MoveToLoop for Adopted {
    type Std = AdoptedStd;
    fn into_std(self) -> io::Result<AdoptedStd> {
        Ok(AdoptedStd {
            stream: self.stream.into_std()?,
            state: self.state,
        })
    }
    fn from_std(s: AdoptedStd) -> io::Result<Self> {
        Ok(Adopted {
            stream: Accepted::from_std(s.stream)?,
            state: s.state,
        })
    }
}

/// What a new process inherits from the old one.
pub struct Inherited {
    pub tcp: Vec<std::net::TcpListener>,
    /// The Unix listener, its port and its socket file.
    pub unix: Option<(std::os::unix::net::UnixListener, u16, PathBuf)>,
    /// Clients as they move (the sender ends with the old process's `done`).
    pub adopted: mpsc::UnboundedReceiver<AdoptedStd>,
    pub old_pid: u32,
}

impl std::fmt::Debug for Inherited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inherited")
            .field("tcp", &self.tcp.len())
            .field("unix", &self.unix.as_ref().map(|u| &u.2))
            .field("old_pid", &self.old_pid)
            .finish()
    }
}

/// `-R`: ask the pgheal listening at `dir`/`port` for its sockets. `Ok(None)`: no pgheal runs
/// there (no socket, or nobody accepts on it): boot normally.
pub fn request(dir: &Path, port: u16) -> Result<Option<Inherited>, TakeoverError> {
    let path = socket_path(dir, port);
    let conn = match StdUnixStream::connect(&path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(source) => return Err(TakeoverError::Connect { path, source }),
    };
    conn.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    let hello = Message::Takeover {
        version: state::VERSION,
        pid: std::process::id(),
    };
    fds::send(&conn, &hello.to_json(), None)?;
    let mut tcp = Vec::new();
    let mut unix = None;
    let old_pid = loop {
        let Some((body, fd)) = fds::recv(&conn)? else {
            return Err(TakeoverError::Unexpected(
                "the connection closed before the listeners came".into(),
            ));
        };
        match Message::from_json(&body)? {
            Message::TcpListener { .. } => {
                let fd = fd.ok_or(TakeoverError::MissingFd("listener"))?;
                let l = std::net::TcpListener::from(fd);
                l.set_nonblocking(true)?;
                tcp.push(l);
            }
            Message::UnixListener { port, path } => {
                let fd = fd.ok_or(TakeoverError::MissingFd("listener"))?;
                let l = std::os::unix::net::UnixListener::from(fd);
                l.set_nonblocking(true)?;
                unix = Some((l, port, PathBuf::from(path)));
            }
            Message::ListenersDone { old_pid } => break old_pid,
            Message::Refused { reason } => return Err(TakeoverError::Refused(reason)),
            m => return Err(TakeoverError::Unexpected(format!("{m:?}"))),
        }
    };
    // Clients may take a transaction to reach a boundary: no read timeout from here on (the
    // old process sends `done` after CLIENT_WAIT, or exits).
    conn.set_read_timeout(Some(CLIENT_WAIT + Duration::from_secs(30)))?;
    let (tx, adopted) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("pgheal-takeover".into())
        .spawn(move || receive_clients(conn, tx))?;
    Ok(Some(Inherited {
        tcp,
        unix,
        adopted,
        old_pid,
    }))
}

/// The new process's thread reading moved clients until `done`.
fn receive_clients(conn: StdUnixStream, tx: mpsc::UnboundedSender<AdoptedStd>) {
    let mut moved = 0usize;
    loop {
        let (body, fd) = match fds::recv(&conn) {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "online restart: the client hand-over ended early");
                break;
            }
        };
        match Message::from_json(&body) {
            Ok(Message::Client(state)) => {
                let Some(fd) = fd else {
                    tracing::warn!("online restart: a client came without its socket");
                    continue;
                };
                match adopt_fd(fd, state.unix_port) {
                    Ok(stream) => {
                        moved += 1;
                        if tx.send(AdoptedStd { stream, state }).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "online restart: cannot adopt a client socket")
                    }
                }
            }
            Ok(Message::Done { staying }) => {
                tracing::info!(moved, staying, "online restart: every movable client came over; the rest finish on the old process");
                break;
            }
            Ok(m) => tracing::warn!(message = ?m, "online restart: unexpected message"),
            Err(e) => tracing::warn!(error = %e, "online restart: malformed message"),
        }
    }
}

fn adopt_fd(fd: OwnedFd, unix_port: Option<u16>) -> io::Result<AcceptedStd> {
    Ok(match unix_port {
        Some(port) => {
            let s = std::os::unix::net::UnixStream::from(fd);
            s.set_nonblocking(true)?;
            AcceptedStd::Unix(s, port)
        }
        None => {
            let s = std::net::TcpStream::from(fd);
            s.set_nonblocking(true)?;
            let peer = s.peer_addr()?;
            AcceptedStd::Tcp(s, peer)
        }
    })
}
