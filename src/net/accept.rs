//! A client connection as a listener hands it over: TCP (with the peer's address) or the Unix
//! socket (with the listen port, which PgBouncer reports as a Unix client's port).
//!
//! The session only learns here which kind it got; from the opening on it works with the
//! split halves of [`super::stream`], where TCP keeps its fast path.

use std::net::SocketAddr;

use tokio::net::{TcpStream, UnixStream};

/// An accepted client connection.
#[derive(Debug)]
pub enum Accepted {
    Tcp(TcpStream, SocketAddr),
    /// A client on the Unix socket of listen port `port`.
    Unix(UnixStream, u16),
}

/// Where a client is, as the admin console and the log show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAddr {
    Tcp(SocketAddr),
    /// The Unix socket: PgBouncer shows the address `unix` and the listen port; the client's
    /// process id (from its credentials) is in the log.
    Unix {
        port: u16,
        pid: Option<i32>,
    },
}

impl PeerAddr {
    /// The address column of `SHOW CLIENTS`: an IP address, or `unix`.
    pub fn host(&self) -> String {
        match self {
            PeerAddr::Tcp(a) => a.ip().to_string(),
            PeerAddr::Unix { .. } => "unix".into(),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            PeerAddr::Tcp(a) => a.port(),
            PeerAddr::Unix { port, .. } => *port,
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, PeerAddr::Unix { .. })
    }
}

impl std::fmt::Display for PeerAddr {
    /// As PgBouncer's log names clients: `1.2.3.4:5678`, `unix(4242):6432`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::Tcp(a) => write!(f, "{a}"),
            PeerAddr::Unix {
                port,
                pid: Some(pid),
            } => write!(f, "unix({pid}):{port}"),
            PeerAddr::Unix { port, pid: None } => write!(f, "unix:{port}"),
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> Self {
        PeerAddr::Tcp(a)
    }
}

/// A connection that can be moved from the accepting runtime to a session's event loop (see
/// [`crate::event_loops`]): deregistered as a standard socket, registered again there.
pub trait MoveToLoop: Sized + Send + 'static {
    type Std: Send + 'static;
    fn into_std(self) -> std::io::Result<Self::Std>;
    fn from_std(s: Self::Std) -> std::io::Result<Self>;
}

impl MoveToLoop for TcpStream {
    type Std = std::net::TcpStream;
    fn into_std(self) -> std::io::Result<Self::Std> {
        TcpStream::into_std(self)
    }
    fn from_std(s: Self::Std) -> std::io::Result<Self> {
        TcpStream::from_std(s)
    }
}

/// [`Accepted`] between runtimes.
pub enum AcceptedStd {
    Tcp(std::net::TcpStream, SocketAddr),
    Unix(std::os::unix::net::UnixStream, u16),
}

impl MoveToLoop for Accepted {
    type Std = AcceptedStd;
    fn into_std(self) -> std::io::Result<AcceptedStd> {
        Ok(match self {
            Accepted::Tcp(s, a) => AcceptedStd::Tcp(s.into_std()?, a),
            Accepted::Unix(s, p) => AcceptedStd::Unix(s.into_std()?, p),
        })
    }
    fn from_std(s: AcceptedStd) -> std::io::Result<Self> {
        Ok(match s {
            AcceptedStd::Tcp(s, a) => Accepted::Tcp(TcpStream::from_std(s)?, a),
            AcceptedStd::Unix(s, p) => Accepted::Unix(UnixStream::from_std(s)?, p),
        })
    }
}
