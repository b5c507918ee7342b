//! Views of the backend messages the relay inspects: ErrorResponse/NoticeResponse fields,
//! RowDescription, DataRow column boundaries, ReadyForQuery, Authentication requests.
//!
//! The server writes its text (column names, command tags, error messages, parameter values)
//! in the client's encoding, so the views hold bytes; only what is ASCII by definition (SQLSTATE
//! codes, ReadyForQuery status, SASL mechanism names) is read as text.

use super::cursor::Cursor;
use super::{Frame, ProtocolError};

pub const AUTHENTICATION: u8 = b'R';
pub const BACKEND_KEY_DATA: u8 = b'K';
pub const BIND_COMPLETE: u8 = b'2';
pub const CLOSE_COMPLETE: u8 = b'3';
pub const COMMAND_COMPLETE: u8 = b'C';
pub const COPY_IN_RESPONSE: u8 = b'G';
pub const COPY_OUT_RESPONSE: u8 = b'H';
pub const COPY_BOTH_RESPONSE: u8 = b'W';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const DATA_ROW: u8 = b'D';
pub const EMPTY_QUERY: u8 = b'I';
pub const ERROR_RESPONSE: u8 = b'E';
pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
pub const NO_DATA: u8 = b'n';
pub const NOTICE_RESPONSE: u8 = b'N';
pub const NOTIFICATION_RESPONSE: u8 = b'A';
pub const PARAMETER_DESCRIPTION: u8 = b't';
pub const PARAMETER_STATUS: u8 = b'S';
pub const PARSE_COMPLETE: u8 = b'1';
pub const PORTAL_SUSPENDED: u8 = b's';
pub const READY_FOR_QUERY: u8 = b'Z';
pub const ROW_DESCRIPTION: u8 = b'T';

/// Messages the server may send at any time, outside the request/response order.
pub fn is_async(tag: u8) -> bool {
    matches!(
        tag,
        NOTICE_RESPONSE | NOTIFICATION_RESPONSE | PARAMETER_STATUS
    )
}

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

pub fn decode_ready_for_query(frame: &Frame) -> Result<TxStatus, ProtocolError> {
    let mut c = Cursor::new(frame.body());
    let s = c.u8("transaction status")?;
    c.finish("ReadyForQuery")?;
    match s {
        b'I' => Ok(TxStatus::Idle),
        b'T' => Ok(TxStatus::InTransaction),
        b'E' => Ok(TxStatus::Failed),
        other => Err(ProtocolError::InvalidField {
            field: "transaction status",
            value: other.into(),
        }),
    }
}

/// The fields of an ErrorResponse or NoticeResponse, by their one-byte codes. Values are bytes
/// in the client's encoding (messages are translated and quote names and values).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields<'a> {
    pub fields: Vec<(u8, &'a [u8])>,
}

impl<'a> ErrorFields<'a> {
    pub fn decode(frame: &'a Frame) -> Result<ErrorFields<'a>, ProtocolError> {
        let mut c = Cursor::new(frame.body());
        let mut fields = Vec::new();
        loop {
            let code = c.u8("error field code")?;
            if code == 0 {
                break;
            }
            fields.push((code, c.cstr()?));
        }
        c.finish("ErrorResponse")?;
        Ok(ErrorFields { fields })
    }

    pub fn get(&self, code: u8) -> Option<&'a [u8]> {
        self.fields.iter().find(|(c, _)| *c == code).map(|f| f.1)
    }

    /// The SQLSTATE: five ASCII characters in every encoding (anything else is no SQLSTATE).
    pub fn code(&self) -> Option<&'a str> {
        self.get(b'C').and_then(|c| std::str::from_utf8(c).ok())
    }

    pub fn message(&self) -> Option<&'a [u8]> {
        self.get(b'M')
    }

    /// The C function that raised the error (ASCII, never translated).
    pub fn routine(&self) -> Option<&'a [u8]> {
        self.get(b'R')
    }

    /// `V` (never translated) when the server sends it, else the translated `S`.
    pub fn severity(&self) -> Option<&'a [u8]> {
        self.get(b'V').or_else(|| self.get(b'S'))
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The column name, in the client's encoding.
    pub name: Vec<u8>,
    pub table_oid: u32,
    pub column_attr: i16,
    pub type_oid: u32,
    pub type_len: i16,
    pub type_mod: i32,
    pub format: i16,
}

/// RowDescription decoded into owned fields: it is kept as a statement's result contract.
pub fn decode_row_description(frame: &Frame) -> Result<Vec<Field>, ProtocolError> {
    let mut c = Cursor::new(frame.body());
    let n = c.count16("field count")?;
    let mut fields = Vec::with_capacity(n.min(c.remaining().len() / 19));
    for _ in 0..n {
        let name = c.cstr()?.to_vec();
        fields.push(Field {
            name,
            table_oid: c.u32("table oid")?,
            column_attr: c.i16("column attribute")?,
            type_oid: c.u32("type oid")?,
            type_len: c.i16("type length")?,
            type_mod: c.i32("type modifier")?,
            format: c.i16("format code")?,
        });
    }
    c.finish("RowDescription")?;
    Ok(fields)
}

/// Byte ranges (relative to the frame start) of each column of a DataRow, including each
/// column's 4-byte length prefix, so columns can be re-assembled without copying them.
pub fn data_row_columns(
    frame: &Frame,
    out: &mut Vec<std::ops::Range<usize>>,
) -> Result<(), ProtocolError> {
    out.clear();
    let body = frame.body();
    let mut c = Cursor::new(body);
    let n = c.count16("column count")?;
    for _ in 0..n {
        let start = body.len() - c.remaining().len();
        c.value("column value")?;
        let end = body.len() - c.remaining().len();
        out.push(start + 5..end + 5);
    }
    c.finish("DataRow")
}

/// Authentication request codes (the i32 after tag `R`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    Cleartext,
    Md5 { salt: [u8; 4] },
    Sasl { mechanisms: Vec<&'a str> },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    Other(i32),
}

pub fn decode_auth_request(frame: &Frame) -> Result<AuthRequest<'_>, ProtocolError> {
    let mut c = Cursor::new(frame.body());
    let code = c.i32("authentication code")?;
    // Fixed-size requests carry nothing after their fields: trailing bytes are refused, as
    // libpq refuses a message whose contents do not agree with its length (found by fuzzing).
    let request = match code {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => {
            let s = c.bytes(4, "md5 salt")?;
            AuthRequest::Md5 {
                salt: [s[0], s[1], s[2], s[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = c.cstr_utf8()?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            AuthRequest::Sasl { mechanisms }
        }
        11 => return Ok(AuthRequest::SaslContinue(c.remaining())),
        12 => return Ok(AuthRequest::SaslFinal(c.remaining())),
        other => return Ok(AuthRequest::Other(other)),
    };
    c.finish("AuthenticationRequest")?;
    Ok(request)
}

/// BackendKeyData: process id and secret key.
pub fn decode_backend_key(frame: &Frame) -> Result<(i32, i32), ProtocolError> {
    let mut c = Cursor::new(frame.body());
    let pid = c.i32("process id")?;
    let key = c.i32("secret key")?;
    c.finish("BackendKeyData")?;
    Ok((pid, key))
}

/// ParameterStatus: name and value (the value in the client's encoding, e.g. a non-ASCII
/// `application_name`).
pub fn decode_parameter_status(frame: &Frame) -> Result<(&[u8], &[u8]), ProtocolError> {
    let mut c = Cursor::new(frame.body());
    let k = c.cstr()?;
    let v = c.cstr()?;
    c.finish("ParameterStatus")?;
    Ok((k, v))
}

/// CommandComplete: the command tag ("SELECT 3", "ALTER TABLE", ...).
pub fn decode_command_complete(frame: &Frame) -> Result<&[u8], ProtocolError> {
    let mut c = Cursor::new(frame.body());
    let tag = c.cstr()?;
    c.finish("CommandComplete")?;
    Ok(tag)
}

/// NotificationResponse: the notifying backend's process id, the channel and the payload.
pub fn decode_notification(frame: &Frame) -> Result<(i32, &[u8], &[u8]), ProtocolError> {
    let mut c = Cursor::new(frame.body());
    let pid = c.i32("process id")?;
    let channel = c.cstr()?;
    let payload = c.cstr()?;
    c.finish("NotificationResponse")?;
    Ok((pid, channel, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode;

    #[test]
    fn auth_requests_with_trailing_bytes_are_refused() {
        for body in [
            &b"\0\0\0\0x"[..],
            b"\0\0\0\x03x",
            b"\0\0\0\x05saltx",
            b"\0\0\0\x0aSCRAM-SHA-256\0\0x",
        ] {
            let f = encode::raw(b'R', body);
            assert_eq!(
                decode_auth_request(&f),
                Err(ProtocolError::TrailingBytes("AuthenticationRequest")),
                "{body:?}"
            );
        }
        let f = encode::auth_md5(*b"salt");
        assert_eq!(
            decode_auth_request(&f),
            Ok(AuthRequest::Md5 { salt: *b"salt" })
        );
    }

    #[test]
    fn error_fields() {
        let f = encode::raw(
            b'E',
            b"SERROR\0VERROR\0C0A000\0Mcached plan must not change result type\0RRevalidateCachedQuery\0\0",
        );
        let e = ErrorFields::decode(&f).unwrap();
        assert_eq!(e.code(), Some("0A000"));
        assert_eq!(e.routine(), Some(&b"RevalidateCachedQuery"[..]));
        assert_eq!(e.severity(), Some(&b"ERROR"[..]));
        let f = encode::raw(b'E', b"C0A000\0");
        assert!(ErrorFields::decode(&f).is_err());
        // A translated message in LATIN9 is kept byte for byte.
        let f = encode::raw(
            b'E',
            b"SERREUR\0VERROR\0C42P01\0Mla relation \xab caf\xe9 \xbb n'existe pas\0\0",
        );
        let e = ErrorFields::decode(&f).unwrap();
        assert_eq!(e.code(), Some("42P01"));
        assert_eq!(
            e.message(),
            Some(&b"la relation \xab caf\xe9 \xbb n'existe pas"[..])
        );
    }

    #[test]
    fn row_description_and_data_row() {
        let fields = vec![
            Field {
                name: "id".into(),
                table_oid: 16384,
                column_attr: 1,
                type_oid: 23,
                type_len: 4,
                type_mod: -1,
                format: 0,
            },
            Field {
                name: "note".into(),
                table_oid: 16384,
                column_attr: 2,
                type_oid: 25,
                type_len: -1,
                type_mod: -1,
                format: 1,
            },
        ];
        let f = encode::row_description(&fields);
        assert_eq!(decode_row_description(&f).unwrap(), fields);

        // Column names in the client's encoding (LATIN9 "prénom") survive a round trip.
        let latin9 = vec![Field {
            name: b"pr\xe9nom".to_vec(),
            ..fields[0].clone()
        }];
        let f = encode::row_description(&latin9);
        assert_eq!(decode_row_description(&f).unwrap(), latin9);

        let f = encode::raw(b'D', b"\0\x02\0\0\0\x0242\xff\xff\xff\xff");
        let mut cols = Vec::new();
        data_row_columns(&f, &mut cols).unwrap();
        assert_eq!(cols, vec![7..13, 13..17]);
        assert_eq!(&f.bytes[cols[0].clone()], b"\0\0\0\x0242");
        let f = encode::raw(b'D', b"\0\x02\0\0\0\x0242");
        assert!(data_row_columns(&f, &mut cols).is_err());
    }

    #[test]
    fn notification() {
        let f = encode::raw(b'A', b"\0\0\x01\x02jobs\0payload \xe2\x9c\x93\0");
        assert_eq!(
            decode_notification(&f).unwrap(),
            (258, &b"jobs"[..], "payload \u{2713}".as_bytes())
        );
        let f = encode::raw(b'A', b"\0\0\x01\x02jobs\0");
        assert!(decode_notification(&f).is_err());
        let f = encode::raw(b'A', b"\0\0");
        assert!(decode_notification(&f).is_err());
    }

    #[test]
    fn ready_for_query_and_auth() {
        let f = encode::ready_for_query(TxStatus::InTransaction);
        assert_eq!(decode_ready_for_query(&f).unwrap(), TxStatus::InTransaction);
        let f = encode::raw(b'Z', b"X");
        assert!(decode_ready_for_query(&f).is_err());
        let f = encode::raw(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0");
        assert_eq!(
            decode_auth_request(&f).unwrap(),
            AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256"]
            }
        );
        let f = encode::raw(b'R', b"\0\0\0\x05ab");
        assert!(decode_auth_request(&f).is_err());
    }

    #[test]
    fn tags_and_parameters_are_bytes() {
        let f = encode::command_complete("SELECT 3");
        assert_eq!(decode_command_complete(&f).unwrap(), b"SELECT 3");
        let f = encode::raw(b'S', b"application_name\0caf\xe9\0");
        assert_eq!(
            decode_parameter_status(&f).unwrap(),
            (&b"application_name"[..], &b"caf\xe9"[..])
        );
    }
}
