//! Reading frames from a socket into a reusable buffer.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::frame::{needed, split_frame, split_frames};
use crate::protocol::startup::{split_startup, StartupPacket};
use crate::protocol::Frame;

use super::NetError;

const INITIAL_CAPACITY: usize = 16 * 1024;

pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_len: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_len: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(INITIAL_CAPACITY),
            max_len,
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
    /// read completes.
    pub async fn read_frames(&mut self, out: &mut Vec<Frame>) -> Result<bool, NetError> {
        loop {
            // An empty buffer (the usual case: the last read ended on a message boundary)
            // holds no frame and needs no header peeked at.
            if !self.buf.is_empty() {
                if split_frames(&mut self.buf, self.max_len, out)? > 0 || !out.is_empty() {
                    return Ok(true);
                }
            } else if !out.is_empty() {
                return Ok(true);
            }
            let want = needed(&self.buf, self.max_len);
            self.buf.reserve(
                want.saturating_sub(self.buf.len())
                    .max(INITIAL_CAPACITY / 2),
            );
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(false)
                } else {
                    Err(NetError::Closed)
                };
            }
        }
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
        }
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }
}
