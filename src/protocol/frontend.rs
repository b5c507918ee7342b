//! Views of the frontend messages the relay inspects: Parse, Bind, Describe, Close, Execute and
//! Query. Each view borrows from the frame; decoding is checked and never panics.
//!
//! Statement and portal names and SQL text are bytes in the client's encoding (whatever
//! `client_encoding` says: LATIN9, EUC_JP, SQL_ASCII, ...), so the views hold `&[u8]` and never
//! require UTF-8: PostgreSQL does not, and pgheal forwards them untouched.

use super::cursor::Cursor;
use super::{Frame, ProtocolError};

pub const PARSE: u8 = b'P';
pub const BIND: u8 = b'B';
pub const DESCRIBE: u8 = b'D';
pub const CLOSE: u8 = b'C';
pub const EXECUTE: u8 = b'E';
pub const QUERY: u8 = b'Q';
pub const SYNC: u8 = b'S';
pub const FLUSH: u8 = b'H';
pub const TERMINATE: u8 = b'X';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const COPY_FAIL: u8 = b'f';
pub const FUNCTION_CALL: u8 = b'F';
pub const PASSWORD: u8 = b'p';

/// Parse: `name`, `query`, parameter type OIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a [u8],
    pub query: &'a [u8],
    pub param_types: Vec<u32>,
}

impl<'a> Parse<'a> {
    pub fn decode(frame: &'a Frame) -> Result<Parse<'a>, ProtocolError> {
        let mut c = Cursor::new(frame.body());
        let name = c.cstr()?;
        let query = c.cstr()?;
        let n = c.count16("parameter type count")?;
        let mut param_types = Vec::with_capacity(n.min(c.remaining().len() / 4));
        for _ in 0..n {
            param_types.push(c.u32("parameter type")?);
        }
        c.finish("Parse")?;
        Ok(Parse {
            name,
            query,
            param_types,
        })
    }
}

/// Bind: the portal, the statement, and the byte range of the result format codes so that they
/// can be rewritten without decoding the parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// Body offset where the result-format count starts; everything before is copied verbatim
    /// when the result formats are rewritten.
    pub result_formats_at: usize,
    /// The result format codes, as raw big-endian i16 pairs (decoded on demand, so the hot
    /// path does not allocate).
    result_formats_raw: &'a [u8],
}

impl<'a> Bind<'a> {
    /// How many result format codes the Bind carries (0, 1, or one per column).
    pub fn result_format_count(&self) -> usize {
        self.result_formats_raw.len() / 2
    }

    /// The result format codes.
    pub fn result_formats(&self) -> Vec<i16> {
        self.result_formats_raw
            .chunks_exact(2)
            .map(|p| i16::from_be_bytes([p[0], p[1]]))
            .collect()
    }

    pub fn decode(frame: &'a Frame) -> Result<Bind<'a>, ProtocolError> {
        let body = frame.body();
        let mut c = Cursor::new(body);
        let portal = c.cstr()?;
        let statement = c.cstr()?;
        let nfmt = c.count16("parameter format count")?;
        c.bytes(nfmt * 2, "parameter formats")?;
        let nparams = c.count16("parameter count")?;
        for _ in 0..nparams {
            c.value("parameter value")?;
        }
        let result_formats_at = body.len() - c.remaining().len();
        let nres = c.count16("result format count")?;
        let result_formats_raw = c.bytes(nres * 2, "result formats")?;
        c.finish("Bind")?;
        Ok(Bind {
            portal,
            statement,
            result_formats_at,
            result_formats_raw,
        })
    }
}

/// The statement name of a Bind, without decoding the rest (hot path).
pub fn bind_statement(frame: &Frame) -> Result<&[u8], ProtocolError> {
    let mut c = Cursor::new(frame.body());
    c.cstr()?;
    c.cstr()
}

/// The statement name of a Parse, without decoding the rest.
pub fn parse_statement(frame: &Frame) -> Result<&[u8], ProtocolError> {
    Cursor::new(frame.body()).cstr()
}

/// Describe or Close target: a prepared statement (`S`) or a portal (`P`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Statement(&'a [u8]),
    Portal(&'a [u8]),
}

fn decode_target<'a>(frame: &'a Frame, what: &'static str) -> Result<Target<'a>, ProtocolError> {
    let mut c = Cursor::new(frame.body());
    let kind = c.u8(what)?;
    let name = c.cstr()?;
    c.finish(what)?;
    match kind {
        b'S' => Ok(Target::Statement(name)),
        b'P' => Ok(Target::Portal(name)),
        other => Err(ProtocolError::InvalidField {
            field: what,
            value: other.into(),
        }),
    }
}

/// Describe: `D` + target.
pub fn decode_describe(frame: &Frame) -> Result<Target<'_>, ProtocolError> {
    decode_target(frame, "Describe")
}

/// Close: `C` + target.
pub fn decode_close(frame: &Frame) -> Result<Target<'_>, ProtocolError> {
    decode_target(frame, "Close")
}

/// Execute: portal and row limit.
pub fn decode_execute(frame: &Frame) -> Result<(&[u8], i32), ProtocolError> {
    let mut c = Cursor::new(frame.body());
    let portal = c.cstr()?;
    let max_rows = c.i32("row limit")?;
    c.finish("Execute")?;
    Ok((portal, max_rows))
}

/// Query: the SQL text of a simple-protocol query.
pub fn decode_query(frame: &Frame) -> Result<&[u8], ProtocolError> {
    let mut c = Cursor::new(frame.body());
    let sql = c.cstr()?;
    c.finish("Query")?;
    Ok(sql)
}

/// PasswordMessage / SASLInitialResponse / SASLResponse all share tag `p`; the body is
/// interpreted by the auth exchange that expects it.
pub fn password_body(frame: &Frame) -> &[u8] {
    frame.body()
}

/// SASLInitialResponse: mechanism name, then an i32-prefixed initial response.
pub fn decode_sasl_initial(frame: &Frame) -> Result<(&str, &[u8]), ProtocolError> {
    let mut c = Cursor::new(frame.body());
    let mechanism = c.cstr_utf8()?;
    let data = c.value("SASL initial response")?.unwrap_or(&[]);
    c.finish("SASLInitialResponse")?;
    Ok((mechanism, data))
}

/// PasswordMessage (cleartext or md5): one NUL-terminated string.
pub fn decode_password(frame: &Frame) -> Result<&[u8], ProtocolError> {
    let mut c = Cursor::new(frame.body());
    let pw = c.cstr()?;
    c.finish("PasswordMessage")?;
    Ok(pw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode;

    #[test]
    fn parse_roundtrip() {
        let f = encode::parse("s1", "SELECT $1::int", &[23]);
        let p = Parse::decode(&f).unwrap();
        assert_eq!(p.name, b"s1");
        assert_eq!(p.query, b"SELECT $1::int");
        assert_eq!(p.param_types, vec![23]);
    }

    #[test]
    fn names_and_text_in_any_client_encoding() {
        // LATIN9 "é" (0xE9) and "€" (0xA4), EUC_JP "日" (0xC6 0xFC): none of it is UTF-8.
        let (name, sql) = (&b"caf\xe9"[..], &b"SELECT '\xa4 \xc6\xfc'"[..]);
        let f = encode::parse(name, sql, &[]);
        let p = Parse::decode(&f).unwrap();
        assert_eq!((p.name, p.query), (name, sql));
        let f = encode::describe(Target::Statement(name));
        assert_eq!(decode_describe(&f).unwrap(), Target::Statement(name));
        let f = encode::query(sql);
        assert_eq!(decode_query(&f).unwrap(), sql);
        let f = encode::execute(b"p\xe9", 0);
        assert_eq!(decode_execute(&f).unwrap(), (&b"p\xe9"[..], 0));
        let f = encode::raw(b'B', b"p\xe9\0caf\xe9\0\0\0\0\0\0\0");
        let b = Bind::decode(&f).unwrap();
        assert_eq!((b.portal, b.statement), (&b"p\xe9"[..], name));
        assert_eq!(bind_statement(&f).unwrap(), name);
    }

    #[test]
    fn bind_from_bytes() {
        // portal "", statement "s1", 1 param format (binary), 2 params (NULL, "ab"), 2 result formats
        let body: &[u8] = b"\0s1\0\0\x01\0\x01\0\x02\xff\xff\xff\xff\0\0\0\x02ab\0\x02\0\x01\0\0";
        let f = encode::raw(b'B', body);
        let b = Bind::decode(&f).unwrap();
        assert_eq!(b.portal, b"");
        assert_eq!(b.statement, b"s1");
        assert_eq!(b.result_formats(), vec![1, 0]);
        assert_eq!(&f.body()[b.result_formats_at..], b"\0\x02\0\x01\0\0");
    }

    #[test]
    fn bind_truncated_parameter_is_an_error() {
        let body: &[u8] = b"\0s1\0\0\0\0\x01\0\0\0\x09ab";
        let f = encode::raw(b'B', body);
        assert_eq!(
            Bind::decode(&f),
            Err(ProtocolError::Truncated("parameter value"))
        );
    }

    #[test]
    fn describe_close_execute_query() {
        let f = encode::describe(Target::Statement(b"s1"));
        assert_eq!(decode_describe(&f).unwrap(), Target::Statement(b"s1"));
        let f = encode::close(Target::Portal(b"p"));
        assert_eq!(decode_close(&f).unwrap(), Target::Portal(b"p"));
        let f = encode::raw(b'D', b"X\0");
        assert!(decode_describe(&f).is_err());
        let f = encode::raw(b'E', b"p\0\0\0\0\x05");
        assert_eq!(decode_execute(&f).unwrap(), (&b"p"[..], 5));
        let f = encode::query("SELECT 1");
        assert_eq!(decode_query(&f).unwrap(), b"SELECT 1");
        let f = encode::raw(b'Q', b"SELECT 1");
        assert_eq!(decode_query(&f), Err(ProtocolError::UnterminatedString));
    }

    #[test]
    fn sasl_initial_and_password() {
        let f = encode::raw(b'p', b"SCRAM-SHA-256\0\0\0\0\x03abc");
        assert_eq!(
            decode_sasl_initial(&f).unwrap(),
            ("SCRAM-SHA-256", &b"abc"[..])
        );
        let f = encode::raw(b'p', b"secret\0");
        assert_eq!(decode_password(&f).unwrap(), b"secret");
    }
}
