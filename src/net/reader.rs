//! Reading frames from a socket into a reusable buffer.
//!
//! The buffer is allocated when there is something to read, not when the connection opens:
//! a client that has not logged in holds only what its startup packet and authentication
//! messages need (a few hundred bytes; at most PostgreSQL's caps), not a relay-sized buffer.

use bytes::BytesMut;
use std::future::Future;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::frame::{needed, split_frame, split_frames};
use crate::protocol::startup::{split_startup, StartupPacket};
use crate::protocol::Frame;

use super::NetError;

const INITIAL_CAPACITY: usize = 16 * 1024;

/// The least a read of a startup packet asks for (see [`FrameReader::read_startup`]).
const STARTUP_READ: usize = 1024;

pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_len: usize,
    /// See [`FrameReader::release_when_idle`].
    release_idle: bool,
}

/// One read into the spare capacity of `buf` (which has some): `Ok(0)` at the end of stream.
/// `read_buf`'s future polled once (it holds nothing across polls).
fn read_some<R: AsyncRead + Unpin>(
    inner: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    std::pin::pin!(inner.read_buf(buf)).poll(cx)
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_len: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::new(),
            max_len,
            release_idle: false,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Change the largest frame accepted from now on; returns the previous limit.
    pub fn set_max_len(&mut self, max_len: usize) -> usize {
        std::mem::replace(&mut self.max_len, max_len)
    }

    /// Append every complete frame already buffered to `out`; then, if none was, read once
    /// more. Returns `Ok(false)` on a clean end of stream with nothing buffered.
    ///
    /// Cancel-safe: bytes read are kept in the buffer, and frames are only split off after a
    /// read completes. With [`Self::release_when_idle`], a read that finds nothing to read
    /// with nothing buffered gives the buffer back (see there).
    pub async fn read_frames(&mut self, out: &mut Vec<Frame>) -> Result<bool, NetError> {
        std::future::poll_fn(|cx| self.poll_read_frames(cx, out)).await
    }

    fn poll_read_frames(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Frame>,
    ) -> Poll<Result<bool, NetError>> {
        loop {
            // An empty buffer (the usual case: the last read ended on a message boundary)
            // holds no frame and needs no header peeked at.
            if !self.buf.is_empty() {
                if split_frames(&mut self.buf, self.max_len, out)? > 0 || !out.is_empty() {
                    return Poll::Ready(Ok(true));
                }
            } else if !out.is_empty() {
                return Poll::Ready(Ok(true));
            }
            let want = needed(&self.buf, self.max_len);
            self.buf.reserve(
                want.saturating_sub(self.buf.len())
                    .max(INITIAL_CAPACITY / 2),
            );
            match read_some(&mut self.inner, &mut self.buf, cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(if self.buf.is_empty() {
                        Ok(false)
                    } else {
                        Err(NetError::Closed)
                    });
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {
                    if self.release_idle && self.buf.is_empty() {
                        // Nothing buffered and nothing to read: the peer is idle (between
                        // transactions, usually). Its buffer goes back to the allocator and
                        // the next read takes a new one.
                        self.buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Give the buffer back whenever a read finds the peer idle with nothing buffered: an idle
    /// client then holds no buffer at all (issue 14: memory per idle client). The trade: one
    /// allocation and one free per read that waits (once per transaction for a client that
    /// pauses between transactions), never per message. Client connections only: the few
    /// server connections keep theirs.
    pub fn release_when_idle(&mut self) {
        self.release_idle = true;
    }

    /// The buffer's capacity (what the reader holds while idle).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Read exactly one frame.
    pub async fn read_frame(&mut self) -> Result<Frame, NetError> {
        loop {
            if let Some(frame) = split_frame(&mut self.buf, self.max_len)? {
                return Ok(frame);
            }
            let want = needed(&self.buf, self.max_len);
            self.buf
                .reserve(want.saturating_sub(self.buf.len()).max(1024));
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(NetError::Closed);
            }
        }
    }

    /// Read one untagged startup packet. `Ok(None)` when the client closed before sending one.
    pub async fn read_startup(&mut self) -> Result<Option<StartupPacket>, NetError> {
        loop {
            if let Some(p) = split_startup(&mut self.buf)? {
                return Ok(Some(p));
            }
            // Room for the packet the length word announces (already checked against the
            // startup packet cap by `split_startup`), and at least 1 KiB: bytes a client sends
            // right behind an SSLRequest must land in the buffer, where the opening sees and
            // refuses them (CVE-2021-23222), as PostgreSQL's own buffer does.
            let want = match self.buf.get(..4) {
                Some(l) => i32::from_be_bytes([l[0], l[1], l[2], l[3]]).max(8) as usize,
                None => 8,
            };
            self.buf
                .reserve(want.max(STARTUP_READ).saturating_sub(self.buf.len()));
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(NetError::Closed)
                };
            }
        }
    }

    /// Bytes buffered but not yet framed (a well-behaved peer leaves none at hand-over points).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The stream and whatever is buffered but not yet framed.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    /// A reader over `inner` that first frames the bytes of `buf` (from [`Self::into_parts`]).
    pub fn with_buffer(inner: R, buf: BytesMut, max_len: usize) -> Self {
        FrameReader {
            inner,
            buf,
            max_len,
            release_idle: false,
        }
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that has not logged in holds about what it sent, not a relay buffer.
    #[tokio::test]
    async fn a_startup_packet_costs_about_its_own_size() {
        let startup =
            crate::protocol::encode::startup_message(&[("user", "app"), ("database", "db")]);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut r = FrameReader::new(server, 1 << 20);
        assert_eq!(
            r.buf.capacity(),
            0,
            "nothing allocated before anything arrives"
        );
        tokio::io::AsyncWriteExt::write_all(&mut client, &startup)
            .await
            .unwrap();
        let p = r.read_startup().await.unwrap();
        assert!(matches!(p, Some(StartupPacket::Startup(_))));
        assert!(
            r.buf.capacity() <= 1024,
            "a {}-byte startup packet left a {}-byte buffer",
            startup.len(),
            r.buf.capacity()
        );
    }

    /// Issue 14: a client reader that has relayed a message and found nothing more to read
    /// holds no buffer (it held 8 KiB or more per idle client).
    #[tokio::test]
    async fn an_idle_client_reader_gives_its_buffer_back() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut r = FrameReader::new(server, 1 << 20);
        r.release_when_idle();
        let query = crate::protocol::encode::query("SELECT 1");
        tokio::io::AsyncWriteExt::write_all(&mut client, &query.bytes[..])
            .await
            .unwrap();
        let mut frames = Vec::new();
        assert!(r.read_frames(&mut frames).await.unwrap());
        assert_eq!(frames.len(), 1);
        frames.clear();
        assert!(r.capacity() > 0, "the read had a buffer");
        // Nothing more to read: the read waits, and the buffer is gone meanwhile.
        {
            let mut read = std::pin::pin!(r.read_frames(&mut frames));
            let once = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            assert!(once.is_pending(), "nothing was sent, nothing was read");
        }
        assert_eq!(r.capacity(), 0, "an idle reader holds no buffer");
        // The next message is read as usual.
        tokio::io::AsyncWriteExt::write_all(&mut client, &query.bytes[..])
            .await
            .unwrap();
        assert!(r.read_frames(&mut frames).await.unwrap());
        assert_eq!(frames.len(), 1);
    }
}
