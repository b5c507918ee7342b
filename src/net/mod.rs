//! Sockets to frames and back.
//!
//! [`FrameReader`] owns a read buffer and hands out whole messages as `Bytes` views of it;
//! [`FrameWriter`] writes lists of `Bytes` with vectored writes, so a batch of forwarded
//! messages goes out in one system call without being copied into an output buffer.
//! Neither implements `AsyncRead`/`AsyncWrite`: nothing can bypass framing by accident.
//! [`stream`] is what a client or server connection reads and writes (plain TCP, TLS, or the
//! Unix socket for clients), [`tls`] builds the rustls configurations, [`accept`] is what a
//! listener hands a session, [`unix`] makes the Unix socket, [`keepalive`] sets TCP keepalive.

pub mod accept;
pub mod keepalive;
pub mod reader;
pub mod stream;
pub mod tls;
pub mod unix;
pub mod writer;
pub mod x509;

pub use accept::{Accepted, PeerAddr};
pub use reader::FrameReader;
pub use stream::{
    ClientRead, ClientReader, ClientWrite, ClientWriter, ServerRead, ServerReader, ServerWrite,
    ServerWriter,
};
pub use writer::FrameWriter;

/// Errors of the message streams.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol violation: {0}")]
    Protocol(#[from] crate::protocol::ProtocolError),
    #[error("timed out")]
    Timeout,
    #[error("connection closed")]
    Closed,
}
