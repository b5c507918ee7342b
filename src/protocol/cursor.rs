//! A checked reader over a message body. Every read checks the remaining length first.

use super::ProtocolError;

/// Reads big-endian integers and NUL-terminated strings from a byte slice without panicking.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }

    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(ProtocolError::Truncated(what))?;
        self.buf = rest;
        Ok(b)
    }

    pub fn i16(&mut self, what: &'static str) -> Result<i16, ProtocolError> {
        let b = self.bytes(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, ProtocolError> {
        let b = self.bytes(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        Ok(self.i32(what)? as u32)
    }

    /// A count field (i16) that must not be negative.
    pub fn count16(&mut self, what: &'static str) -> Result<usize, ProtocolError> {
        let n = self.i16(what)?;
        usize::try_from(n).map_err(|_| ProtocolError::InvalidField {
            field: what,
            value: n.into(),
        })
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(ProtocolError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A NUL-terminated string, returned without its terminator, as raw bytes.
    ///
    /// Names, SQL text, command tags and error texts are in the client's encoding (LATIN9,
    /// EUC_JP, SQL_ASCII, ...), whatever pgheal's own is: they stay bytes. The terminator is
    /// found by the first NUL, which no encoding PostgreSQL allows uses inside a character.
    pub fn cstr(&mut self) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::UnterminatedString)?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// A NUL-terminated string that must be UTF-8: only where pgheal itself interprets the text
    /// and the protocol leaves no other choice (startup parameters, SASL mechanism names).
    pub fn cstr_utf8(&mut self) -> Result<&'a str, ProtocolError> {
        match self.cstr()? {
            [] => Ok(""),
            b => std::str::from_utf8(b).map_err(|_| ProtocolError::InvalidUtf8),
        }
    }

    /// A length-prefixed value (i32 length, -1 = NULL) as used by Bind parameters and DataRow.
    pub fn value(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, ProtocolError> {
        let len = self.i32(what)?;
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(ProtocolError::InvalidField {
                field: what,
                value: n.into(),
            }),
            n => self.bytes(n as usize, what).map(Some),
        }
    }

    pub fn finish(&self, what: &'static str) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes(what))
        }
    }
}
