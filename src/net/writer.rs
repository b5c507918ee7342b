//! Writing lists of `Bytes` with vectored writes.

use std::io::IoSlice;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::protocol::Frame;

/// Slices handed to one `write_vectored` call (kept on the stack).
const MAX_SLICES: usize = 64;

/// Batches up to this many parts (the usual case: a handful of messages per step) are written
/// from a small array, so the large one is not initialised for them.
const SMALL_SLICES: usize = 8;

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
            let batch = &parts[first..];
            let written = if batch.len() <= SMALL_SLICES {
                let mut slices = [IoSlice::new(&[]); SMALL_SLICES];
                let n = fill(&mut slices, batch, offset);
                self.write_slices(&slices[..n]).await?
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let n = fill(&mut slices, batch, offset);
                self.write_slices(&slices[..n]).await?
            };
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            (first, offset) = advance(parts, first, offset, written);
        }
        parts.clear();
        Ok(())
    }

    /// One write: a plain `send` for a single slice, `writev` for several.
    async fn write_slices(&mut self, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
        match slices {
            [one] => self.inner.write(one).await,
            _ => self.inner.write_vectored(slices).await,
        }
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
