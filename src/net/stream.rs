//! The two halves of a connection: a plain TCP socket (today's path, unchanged: the writer's
//! `send` fast path works on it) or a TLS stream split with `tokio::io::split`; a client may
//! also be on the Unix socket (its halves written through the generic path, no TLS).
//!
//! An enum rather than a boxed trait object: a plain connection costs one predictable branch
//! per read or write, no allocation and no dynamic call, and the writer still sees the raw
//! socket ([`TcpSocket::tcp`]). A TLS connection has no raw socket to write to (the bytes must
//! be encrypted), so the writer takes its generic path and flushes.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{unix, TcpStream, UnixStream};

use super::writer::TcpSocket;
use super::{FrameReader, FrameWriter};

/// The TCP socket under a TLS stream, which can be taken out and put back to register it with
/// another event loop (see [`crate::pool::ServerConn::at_home`]) without tearing down the TLS
/// session.
#[derive(Debug)]
pub struct MovableTcp(Option<TcpStream>);

impl MovableTcp {
    pub fn new(tcp: TcpStream) -> Self {
        MovableTcp(Some(tcp))
    }

    /// Re-register the socket with the calling thread's event loop.
    pub fn rehome(&mut self) -> io::Result<()> {
        let tcp = self.0.take().ok_or_else(gone)?;
        self.0 = Some(TcpStream::from_std(tcp.into_std()?)?);
        Ok(())
    }

    fn get(&mut self) -> io::Result<&mut TcpStream> {
        self.0.as_mut().ok_or_else(gone)
    }
}

fn gone() -> io::Error {
    io::Error::other("the socket of a TLS connection was lost while moving it")
}

impl AsyncRead for MovableTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().get() {
            Ok(t) => Pin::new(t).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for MovableTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().get() {
            Ok(t) => Pin::new(t).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().get() {
            Ok(t) => Pin::new(t).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().get() {
            Ok(t) => Pin::new(t).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().get() {
            Ok(t) => Pin::new(t).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// A TLS connection to a server.
pub type ServerTlsStream = tokio_rustls::client::TlsStream<MovableTcp>;

/// The reading half of a server connection.
pub enum ServerRead {
    Plain(OwnedReadHalf),
    /// The TLS half and the socket's descriptor (to peek at an idle connection).
    Tls(ReadHalf<ServerTlsStream>, RawFd),
}

/// The writing half of a server connection.
pub type ServerWrite = WriteHalfOf<ServerTlsStream>;

/// Frames from a server connection.
pub type ServerReader = FrameReader<ServerRead>;
/// Frames to a server connection.
pub type ServerWriter = FrameWriter<ServerWrite>;

/// Split a plain socket.
pub fn split_plain(tcp: TcpStream) -> (ServerRead, ServerWrite) {
    let (r, w) = tcp.into_split();
    (ServerRead::Plain(r), ServerWrite::Plain(w))
}

/// Split a TLS stream.
pub fn split_tls(tls: ServerTlsStream) -> io::Result<(ServerRead, ServerWrite)> {
    let fd = tls
        .get_ref()
        .0
         .0
        .as_ref()
        .map(|t| t.as_raw_fd())
        .ok_or_else(gone)?;
    let (r, w) = tokio::io::split(tls);
    Ok((ServerRead::Tls(r, fd), ServerWrite::Tls(w)))
}

/// Put the halves back together and register the socket with the calling thread's event loop.
pub fn rehome(r: ServerRead, w: ServerWrite) -> io::Result<(ServerRead, ServerWrite)> {
    let mismatch = || io::Error::other("the halves of a server socket do not match");
    match (r, w) {
        (ServerRead::Plain(r), ServerWrite::Plain(w)) => {
            let tcp = r.reunite(w).map_err(|_| mismatch())?;
            Ok(split_plain(TcpStream::from_std(tcp.into_std()?)?))
        }
        (ServerRead::Tls(r, _), ServerWrite::Tls(w)) => {
            if !r.is_pair_of(&w) {
                return Err(mismatch());
            }
            let mut tls = r.unsplit(w);
            tls.get_mut().0.rehome()?;
            split_tls(tls)
        }
        _ => Err(mismatch()),
    }
}

impl ServerRead {
    /// Whether the server sent something (or closed) while the connection was idle. Reads
    /// (plain) or peeks at (TLS: the bytes belong to the TLS session) the socket without
    /// waiting.
    pub fn has_unasked_input(&self) -> bool {
        match self {
            ServerRead::Plain(r) => {
                let mut probe = [0u8; 1];
                match r.try_read(&mut probe) {
                    Ok(_) => true,
                    Err(e) => e.kind() != io::ErrorKind::WouldBlock,
                }
            }
            ServerRead::Tls(_, fd) => {
                let mut probe = [0u8; 1];
                // SAFETY: the descriptor belongs to the socket the TLS half owns (alive for
                // `&self`); recv only writes into `probe`.
                let n = unsafe {
                    libc::recv(
                        *fd,
                        probe.as_mut_ptr().cast(),
                        1,
                        libc::MSG_PEEK | libc::MSG_DONTWAIT,
                    )
                };
                if n >= 0 {
                    return true;
                }
                let e = io::Error::last_os_error();
                !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                )
            }
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ServerRead::Tls(..))
    }
}

impl AsyncRead for ServerRead {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerRead::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ServerRead::Tls(r, _) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// The writing half of a connection, either side: the plain socket (the writer's `send` fast
/// path uses it, see [`TcpSocket::tcp`]), the half of a TLS stream `T`, or (clients only) the
/// Unix socket, written with the writer's generic vectored path.
pub enum WriteHalfOf<T> {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<T>),
    Unix(unix::OwnedWriteHalf),
}

impl<T: AsyncRead + AsyncWrite> AsyncWrite for WriteHalfOf<T> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalfOf::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalfOf::Tls(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalfOf::Unix(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalfOf::Plain(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalfOf::Tls(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalfOf::Unix(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalfOf::Plain(w) => w.is_write_vectored(),
            WriteHalfOf::Tls(w) => w.is_write_vectored(),
            WriteHalfOf::Unix(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalfOf::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteHalfOf::Tls(w) => Pin::new(w).poll_flush(cx),
            WriteHalfOf::Unix(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalfOf::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalfOf::Tls(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalfOf::Unix(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

impl<T> TcpSocket for WriteHalfOf<T> {
    #[inline]
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            WriteHalfOf::Plain(w) => Some(w.as_ref()),
            WriteHalfOf::Tls(_) | WriteHalfOf::Unix(_) => None,
        }
    }
}

impl<T: AsyncRead + AsyncWrite> WriteHalfOf<T> {
    /// Write without waiting (a Terminate when closing): what the socket takes now, if
    /// anything. A TLS stream is polled once, encrypting and flushing what it can.
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalfOf::Plain(w) => w.try_write(buf),
            WriteHalfOf::Unix(w) => w.try_write(buf),
            WriteHalfOf::Tls(w) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let n = match Pin::new(&mut *w).poll_write(&mut cx, buf) {
                    Poll::Ready(r) => r?,
                    Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
                };
                let _ = Pin::new(w).poll_flush(&mut cx);
                Ok(n)
            }
        }
    }
}

/// A TLS connection from a client (pgheal is the TLS server). The client's socket never moves
/// once its session runs (the handshake happens on the session's own event loop), so the plain
/// `TcpStream` is enough underneath.
pub type ClientTlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The reading half of a client connection: plain TCP (the fast path, unchanged), TLS, or the
/// Unix socket (never TLS: PostgreSQL answers an SSLRequest there with `N`, and so does
/// pgheal).
pub enum ClientRead {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<ClientTlsStream>),
    Unix(unix::OwnedReadHalf),
}

/// The writing half of a client connection.
pub type ClientWrite = WriteHalfOf<ClientTlsStream>;

/// Frames from a client.
pub type ClientReader = FrameReader<ClientRead>;
/// Frames to a client.
pub type ClientWriter = FrameWriter<ClientWrite>;

impl ClientRead {
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientRead::Tls(_))
    }
}

/// Split a client's plain socket.
pub fn split_client_plain(tcp: TcpStream) -> (ClientRead, ClientWrite) {
    let (r, w) = tcp.into_split();
    (ClientRead::Plain(r), ClientWrite::Plain(w))
}

/// Split a client's Unix socket.
pub fn split_client_unix(s: UnixStream) -> (ClientRead, ClientWrite) {
    let (r, w) = s.into_split();
    (ClientRead::Unix(r), ClientWrite::Unix(w))
}

/// Split a client's TLS stream.
pub fn split_client_tls(tls: ClientTlsStream) -> (ClientRead, ClientWrite) {
    let (r, w) = tokio::io::split(tls);
    (ClientRead::Tls(r), ClientWrite::Tls(w))
}

/// The plain socket back from its halves (to start TLS on it after an SSLRequest).
pub fn reunite_client_plain(r: ClientRead, w: ClientWrite) -> io::Result<TcpStream> {
    match (r, w) {
        (ClientRead::Plain(r), ClientWrite::Plain(w)) => r
            .reunite(w)
            .map_err(|_| io::Error::other("the halves of a client socket do not match")),
        _ => Err(io::Error::other("the client connection is not plain TCP")),
    }
}

impl AsyncRead for ClientRead {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientRead::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ClientRead::Tls(r) => Pin::new(r).poll_read(cx, buf),
            ClientRead::Unix(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}
