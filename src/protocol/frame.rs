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
    fn needed_reports_the_whole_frame() {
        assert_eq!(needed(b"D\0\0\0\x10", 1024), 17);
        assert_eq!(needed(b"D\0", 1024), HEADER_LEN);
    }
}
