//! Framing of regular (tagged) messages: one tag byte, an i32 length that counts itself, a body.
//!
//! [`split_frames`] is the hot path of the proxy. It peeks at headers only and hands whole
//! messages out as `Bytes` views of the read buffer: no copy, no allocation per message.

use bytes::{Bytes, BytesMut};

use super::ProtocolError;

/// Tag (1) + length (4).
pub const HEADER_LEN: usize = 5;

/// The tag and declared length of a message, read without consuming anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// The length field: body length + 4.
    pub len: u32,
}

impl Header {
    /// Peek at a header. `Ok(None)` when fewer than 5 bytes are buffered.
    pub fn parse(buf: &[u8], max_len: usize) -> Result<Option<Header>, ProtocolError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if len < 4 {
            return Err(ProtocolError::BadLength(len.into()));
        }
        let len = len as u32;
        if len as usize > max_len {
            return Err(ProtocolError::TooLong {
                len: len as usize,
                max: max_len,
            });
        }
        Ok(Some(Header { tag: buf[0], len }))
    }

    /// The whole message size including the tag byte.
    pub fn frame_len(&self) -> usize {
        self.len as usize + 1
    }
}

/// One whole message: the raw bytes (tag, length and body) exactly as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub bytes: Bytes,
}

impl Frame {
    /// Wrap bytes that hold exactly one message (built by [`super::encode`]).
    pub fn from_encoded(bytes: Bytes) -> Frame {
        let tag = bytes.first().copied().unwrap_or(0);
        Frame { tag, bytes }
    }

    /// A copy with an allocation of its own, for a frame kept long after it was read: a frame
    /// split off a read buffer shares that buffer, and keeping it keeps the whole buffer (a
    /// read's worth of other messages) alive for as long.
    pub fn detached(&self) -> Frame {
        Frame {
            tag: self.tag,
            bytes: Bytes::copy_from_slice(&self.bytes),
        }
    }

    /// The message body after the header.
    pub fn body(&self) -> &[u8] {
        self.bytes.get(HEADER_LEN..).unwrap_or(&[])
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Split the next complete message off `buf`. `Ok(None)` when more bytes are needed; the
/// caller should then reserve at least [`needed`] bytes before reading again.
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, ProtocolError> {
    let Some(h) = Header::parse(buf, max_len)? else {
        return Ok(None);
    };
    if buf.len() < h.frame_len() {
        return Ok(None);
    }
    let bytes = buf.split_to(h.frame_len()).freeze();
    Ok(Some(Frame { tag: h.tag, bytes }))
}

/// Split every complete message off `buf` into `out`; returns how many. The same frames, in the
/// same order, as calling [`split_frame`] until it returns `Ok(None)`, and the same error for a
/// bad header; but the buffer is split once for all of them, and each frame is a slice of that
/// one chunk (one reference count taken per frame but the last, which gets the chunk itself).
pub fn split_frames(
    buf: &mut BytesMut,
    max_len: usize,
    out: &mut Vec<Frame>,
) -> Result<usize, ProtocolError> {
    let mut total = 0;
    let mut count = 0;
    while let Some(h) = Header::parse(&buf[total..], max_len)? {
        if buf.len() - total < h.frame_len() {
            break;
        }
        total += h.frame_len();
        count += 1;
    }
    if count == 0 {
        return Ok(0);
    }
    let mut chunk = buf.split_to(total).freeze();
    out.reserve(count);
    for _ in 1..count {
        // Headers were checked above.
        let len = 1 + u32::from_be_bytes([chunk[1], chunk[2], chunk[3], chunk[4]]) as usize;
        let bytes = chunk.split_to(len);
        out.push(Frame {
            tag: bytes[0],
            bytes,
        });
    }
    out.push(Frame {
        tag: chunk[0],
        bytes: chunk,
    });
    Ok(count)
}

/// How many bytes the buffer must hold to complete the next message (at least a header).
pub fn needed(buf: &[u8], max_len: usize) -> usize {
    match Header::parse(buf, max_len) {
        Ok(Some(h)) => h.frame_len(),
        _ => HEADER_LEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_whole_messages_and_waits_for_partial_ones() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IC\0\0\0\x0bSELECT\0D"[..]);
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.tag, b'Z');
        assert_eq!(f.body(), b"I");
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.tag, b'C');
        assert_eq!(f.body(), b"SELECT\0");
        assert_eq!(split_frame(&mut buf, 1024).unwrap(), None);
        assert_eq!(&buf[..], b"D");
    }

    #[test]
    fn a_detached_frame_owns_its_bytes_apart_from_the_read_buffer() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IC\0\0\0\x0bSELECT\0"[..]);
        let base = buf.as_ptr() as usize;
        let read = base..base + buf.len();
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert!(
            read.contains(&(f.bytes.as_ptr() as usize)),
            "a view, not a copy"
        );
        let kept = f.detached();
        assert_eq!(kept, f);
        assert!(
            !read.contains(&(kept.bytes.as_ptr() as usize)),
            "the copy does not point into the read buffer"
        );
    }

    #[test]
    fn rejects_bad_and_oversized_lengths() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x03"[..]);
        assert_eq!(
            split_frame(&mut buf, 1024),
            Err(ProtocolError::BadLength(3))
        );
        let mut buf = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert_eq!(
            split_frame(&mut buf, 1024),
            Err(ProtocolError::BadLength(-1))
        );
        let mut buf = BytesMut::from(&b"Q\x00\x10\x00\x00"[..]);
        assert!(matches!(
            split_frame(&mut buf, 1024),
            Err(ProtocolError::TooLong { len: 0x100000, .. })
        ));
    }

    #[test]
    fn split_frames_takes_every_whole_message() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IC\0\0\0\x0bSELECT\0D"[..]);
        let mut out = Vec::new();
        assert_eq!(split_frames(&mut buf, 1024, &mut out), Ok(2));
        assert_eq!((out[0].tag, out[0].body()), (b'Z', &b"I"[..]));
        assert_eq!((out[1].tag, out[1].body()), (b'C', &b"SELECT\0"[..]));
        assert_eq!(&buf[..], b"D");
        assert_eq!(split_frames(&mut buf, 1024, &mut out), Ok(0));
        assert_eq!(out.len(), 2);
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IQ\0\0\0\x03"[..]);
        assert_eq!(
            split_frames(&mut buf, 1024, &mut out),
            Err(ProtocolError::BadLength(3))
        );
    }

    proptest::proptest! {
        /// Any byte string (a run of valid messages with arbitrary bytes after it) splits into
        /// the same frames, leftover and error as repeated `split_frame`.
        #[test]
        fn split_frames_agrees_with_split_frame(
            msgs in proptest::collection::vec((proptest::num::u8::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..40)), 0..8),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            max_len in 4usize..64,
        ) {
            let mut bytes = Vec::new();
            for (tag, body) in &msgs {
                bytes.push(*tag);
                bytes.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
                bytes.extend_from_slice(body);
            }
            bytes.extend_from_slice(&tail);
            let mut a = BytesMut::from(&bytes[..]);
            let mut one_by_one = Vec::new();
            let a_result = loop {
                match split_frame(&mut a, max_len) {
                    Ok(Some(f)) => one_by_one.push(f),
                    Ok(None) => break Ok(one_by_one.len()),
                    Err(e) => break Err(e),
                }
            };
            let mut b = BytesMut::from(&bytes[..]);
            let mut all = Vec::new();
            let b_result = split_frames(&mut b, max_len, &mut all);
            match (a_result, b_result) {
                (Ok(n), Ok(m)) => {
                    proptest::prop_assert_eq!(n, m);
                    proptest::prop_assert_eq!(&one_by_one, &all);
                    proptest::prop_assert_eq!(&a[..], &b[..]);
                }
                (Err(e), Err(f)) => proptest::prop_assert_eq!(e, f),
                (a, b) => proptest::prop_assert!(false, "{:?} vs {:?}", a, b),
            }
        }
    }

    #[test]
    fn needed_reports_the_whole_frame() {
        assert_eq!(needed(b"D\0\0\0\x10", 1024), 17);
        assert_eq!(needed(b"D\0", 1024), HEADER_LEN);
    }
}
