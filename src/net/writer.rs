//! Writing lists of `Bytes` with vectored writes.

use std::io::IoSlice;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::protocol::Frame;

/// Slices handed to one `write_vectored` call (kept on the stack).
const MAX_SLICES: usize = 64;

pub struct FrameWriter<W> {
    inner: W,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter { inner }
    }

    /// Write all parts, in order, and clear the list (keeping its capacity).
    ///
    /// Not cancel-safe: a cancelled write may have sent a prefix of the parts.
    pub async fn write_parts(&mut self, parts: &mut Vec<Bytes>) -> std::io::Result<()> {
        let mut first = 0; // index of the first part not fully written
        let mut offset = 0; // bytes of parts[first] already written
        while first < parts.len() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut n = 0;
            for (i, p) in parts[first..].iter().take(MAX_SLICES).enumerate() {
                slices[i] = IoSlice::new(if i == 0 { &p[offset..] } else { &p[..] });
                n += 1;
            }
            let mut written = self.inner.write_vectored(&slices[..n]).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
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
        }
        parts.clear();
        Ok(())
    }

    /// Write one frame (handshake and error paths).
    pub async fn write_frame(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.inner.write_all(&frame.bytes).await
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes).await
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
