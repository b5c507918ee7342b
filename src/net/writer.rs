//! Writing lists of `Bytes` with as few system calls, and as few segments per call, as possible.
//!
//! On a TCP socket, the parts of a batch that lie next to each other in memory (the frames of
//! one read are slices of one buffer, so a batch forwarded untouched usually is one run) are
//! handed to the kernel as one segment: one `send` for a single run, one `sendmsg` for several.
//! Nothing is copied in user space. A multi-segment `writev` costs measurably more in the kernel
//! (the VFS layer, a hardened-usercopy check and an iterator step per segment) than a `send` of
//! the same bytes, and the relay writes twice per transaction.

use std::io::IoSlice;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use crate::protocol::Frame;

/// Slices handed to one `write_vectored` call (kept on the stack).
const MAX_SLICES: usize = 64;

/// Batches up to this many parts (the usual case: a handful of messages per step) are written
/// from a small array, so the large one is not initialised for them.
const SMALL_SLICES: usize = 8;

/// Memory runs handed to one `sendmsg` (kept on the stack; a batch with more runs takes
/// several calls).
#[cfg(target_os = "linux")]
const MAX_RUNS: usize = 16;

/// Streams whose TCP socket can be written directly.
pub trait TcpSocket {
    /// The socket underneath, if the stream is one.
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl TcpSocket for OwnedWriteHalf {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl TcpSocket for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl TcpSocket for tokio::io::DuplexStream {}

pub struct FrameWriter<W> {
    inner: W,
}

impl<W: AsyncWrite + TcpSocket + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter { inner }
    }

    /// Write all parts, in order, and clear the list (keeping its capacity).
    ///
    /// Not cancel-safe: a cancelled write may have sent a prefix of the parts.
    pub async fn write_parts(&mut self, parts: &mut Vec<Bytes>) -> std::io::Result<()> {
        let mut first = 0; // index of the first part not fully written
        let mut offset = 0; // bytes of parts[first] already written

        // Linux only (`MSG_NOSIGNAL`); elsewhere the vectored writes below.
        #[cfg(target_os = "linux")]
        if let Some(tcp) = self.inner.tcp() {
            while first < parts.len() {
                let r = tcp.try_io(tokio::io::Interest::WRITABLE, || {
                    send_runs(tcp, &parts[first..], offset)
                });
                match r {
                    Ok(0)
                        if parts[first].len() == offset
                            && parts[first + 1..].iter().all(|p| p.is_empty()) =>
                    {
                        break
                    }
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(written) => (first, offset) = advance(parts, first, offset, written),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => tcp.writable().await?,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            parts.clear();
            return Ok(());
        }
        while first < parts.len() {
            let written = self.write_batch(&parts[first..], offset).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            (first, offset) = advance(parts, first, offset, written);
        }
        parts.clear();
        // A TLS stream may keep encrypted records buffered until flushed.
        self.inner.flush().await
    }

    /// One write of `batch` (its first part from `offset` on): a plain `send` for a single
    /// slice, `writev` for several. The slices are built inside each poll, so no array of them
    /// lives in the future across a wait: the relay's future, which a session holds while its
    /// client is idle, stays small (issue 14).
    async fn write_batch(&mut self, batch: &[Bytes], offset: usize) -> std::io::Result<usize> {
        let inner = &mut self.inner;
        std::future::poll_fn(|cx| {
            let inner = std::pin::Pin::new(&mut *inner);
            if batch.len() <= SMALL_SLICES {
                let mut slices = [IoSlice::new(&[]); SMALL_SLICES];
                match fill(&mut slices, batch, offset) {
                    1 => inner.poll_write(cx, &slices[0]),
                    n => inner.poll_write_vectored(cx, &slices[..n]),
                }
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let n = fill(&mut slices, batch, offset);
                inner.poll_write_vectored(cx, &slices[..n])
            }
        })
        .await
    }

    /// Write one frame (handshake and error paths).
    pub async fn write_frame(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.inner.write_all(&frame.bytes).await?;
        self.inner.flush().await
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes).await?;
        self.inner.flush().await
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().await
    }

    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.inner.shutdown().await
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(target_os = "linux")]
/// Send the parts (the first one from `offset` on) with one system call: runs of parts that lie
/// next to each other in memory are one segment. Returns the bytes sent.
fn send_runs(tcp: &TcpStream, parts: &[Bytes], offset: usize) -> std::io::Result<usize> {
    const EMPTY: libc::iovec = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut runs = [EMPTY; MAX_RUNS];
    let mut n = 0;
    for (i, p) in parts.iter().enumerate() {
        let s: &[u8] = if i == 0 { &p[offset..] } else { p };
        if s.is_empty() {
            continue;
        }
        // Addresses are compared, never offset from: a run is only ever given to the kernel,
        // and every byte in it belongs to a part alive for the whole call.
        if n > 0 {
            let last = &mut runs[n - 1];
            if last.iov_base as usize + last.iov_len == s.as_ptr() as usize {
                last.iov_len += s.len();
                continue;
            }
            if n == MAX_RUNS {
                break;
            }
        }
        runs[n] = libc::iovec {
            iov_base: s.as_ptr() as *mut libc::c_void,
            iov_len: s.len(),
        };
        n += 1;
    }
    let fd = tcp.as_raw_fd();
    // SAFETY: every run points at initialised bytes of `parts`, which outlive the call; the
    // kernel only reads them.
    let sent = unsafe {
        match n {
            0 => return Ok(0),
            1 => libc::send(fd, runs[0].iov_base, runs[0].iov_len, libc::MSG_NOSIGNAL),
            _ => {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = runs.as_mut_ptr();
                msg.msg_iovlen = n as _;
                libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
            }
        }
    };
    if sent < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Point `slices` at the parts (the first one from `offset` on); returns how many are set.
fn fill<'a>(slices: &mut [IoSlice<'a>], parts: &'a [Bytes], offset: usize) -> usize {
    let n = slices.len().min(parts.len());
    for (slot, p) in slices.iter_mut().zip(&parts[..n]) {
        *slot = IoSlice::new(p);
    }
    if n > 0 {
        slices[0] = IoSlice::new(&parts[0][offset..]);
    }
    n
}

/// Where writing resumes after `written` more bytes: (first part not fully written, bytes of it
/// already written).
fn advance(
    parts: &[Bytes],
    mut first: usize,
    mut offset: usize,
    mut written: usize,
) -> (usize, usize) {
    while written > 0 && first < parts.len() {
        let left = parts[first].len() - offset;
        if written >= left {
            written -= left;
            first += 1;
            offset = 0;
        } else {
            offset += written;
            written = 0;
        }
    }
    (first, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_through_parts() {
        let parts: Vec<Bytes> = vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"de"),
            Bytes::from_static(b"f"),
        ];
        assert_eq!(advance(&parts, 0, 0, 2), (0, 2));
        assert_eq!(advance(&parts, 0, 2, 1), (1, 0));
        assert_eq!(advance(&parts, 0, 0, 4), (1, 1));
        assert_eq!(advance(&parts, 1, 1, 2), (3, 0));
        assert_eq!(advance(&parts, 0, 0, 6), (3, 0));
    }

    #[test]
    fn fill_starts_at_the_offset_and_stops_at_the_array() {
        let parts: Vec<Bytes> = (0..10u8).map(|i| Bytes::from(vec![i; 3])).collect();
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(fill(&mut slices, &parts, 1), 4);
        assert_eq!(&*slices[0], &[0, 0][..]);
        assert_eq!(&*slices[3], &[3, 3, 3][..]);
        let mut slices = [IoSlice::new(&[]); 16];
        assert_eq!(fill(&mut slices, &parts[8..], 0), 2);
    }

    /// Parts in every arrangement: slices of one buffer (sent as one run), separate buffers,
    /// empty parts, more runs than one call takes, and far more bytes than the socket buffer
    /// holds (partial sends, waiting for the socket to drain).
    #[tokio::test]
    async fn sends_every_part_in_order_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut server, _) = accepted.unwrap();
        let (_r, w) = client.unwrap().into_split();
        let mut w = FrameWriter::new(w);
        let big = Bytes::from(
            (0..4_000_000u32)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        );
        let mut parts = Vec::new();
        let mut at = 0;
        for i in 0..2000usize {
            let len = (i * 7919) % 3000;
            let end = (at + len).min(big.len());
            parts.push(big.slice(at..end)); // adjacent to the previous one
            at = end;
            if i % 3 == 0 {
                parts.push(Bytes::from(vec![i as u8; i % 17])); // a separate buffer
            }
            if i % 50 == 0 {
                at += 1; // a gap: a new run
            }
        }
        parts.push(Bytes::new());
        let want: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut got)
                .await
                .unwrap();
            got
        });
        w.write_parts(&mut parts).await.unwrap();
        assert!(parts.is_empty());
        let mut empty = vec![Bytes::new()];
        w.write_parts(&mut empty).await.unwrap();
        let mut one = vec![Bytes::from_static(b"end")];
        w.write_parts(&mut one).await.unwrap();
        drop(w);
        drop(_r);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), want.len() + 3);
        assert!(got[..want.len()] == want[..], "bytes differ");
        assert_eq!(&got[want.len()..], b"end");
    }

    #[tokio::test]
    async fn writes_every_part_in_order() {
        let (a, mut b) = tokio::io::duplex(7); // small buffer: many partial writes
        let mut w = FrameWriter::new(a);
        let mut parts: Vec<Bytes> = (0..100u8)
            .map(|i| Bytes::from(vec![i; (i % 5) as usize + 1]))
            .collect();
        let want: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut got)
                .await
                .unwrap();
            got
        });
        w.write_parts(&mut parts).await.unwrap();
        assert!(parts.is_empty());
        let mut one = vec![Bytes::from_static(b"xyz")];
        w.write_parts(&mut one).await.unwrap();
        drop(w);
        let mut want = want;
        want.extend_from_slice(b"xyz");
        assert_eq!(reader.await.unwrap(), want);
    }
}
