//! Encoders for the messages pgheal writes itself: its own handshake replies, errors, and the
//! Parse/Describe/Close/Sync pipelines the heal engine sends. Forwarded messages never pass here.
//!
//! Names and SQL text are taken as bytes (`impl AsRef<[u8]>`, so `&str` works too): the engine
//! re-sends the client's statements, whose names and text are in the client's encoding.

use bytes::{BufMut, Bytes, BytesMut};

use super::backend::{Field, TxStatus};
use super::frontend::Target;
use super::Frame;

/// Build one message: tag, then a length back-patched after `body` wrote into the buffer.
fn message(tag: u8, body: impl FnOnce(&mut BytesMut)) -> Frame {
    let mut b = BytesMut::with_capacity(64);
    b.put_u8(tag);
    b.put_i32(0);
    body(&mut b);
    let len = (b.len() - 1) as i32;
    b[1..5].copy_from_slice(&len.to_be_bytes());
    Frame {
        tag,
        bytes: b.freeze(),
    }
}

fn put_cstr(b: &mut BytesMut, s: &[u8]) {
    b.put_slice(s);
    b.put_u8(0);
}

/// A message from a tag and a ready body (tests and rare messages).
pub fn raw(tag: u8, body: &[u8]) -> Frame {
    message(tag, |b| b.put_slice(body))
}

pub fn parse(name: impl AsRef<[u8]>, query: impl AsRef<[u8]>, param_types: &[u32]) -> Frame {
    message(b'P', |b| {
        put_cstr(b, name.as_ref());
        put_cstr(b, query.as_ref());
        b.put_i16(param_types.len() as i16);
        for t in param_types {
            b.put_u32(*t);
        }
    })
}

fn target(b: &mut BytesMut, t: Target<'_>) {
    let (kind, name) = match t {
        Target::Statement(n) => (b'S', n),
        Target::Portal(n) => (b'P', n),
    };
    b.put_u8(kind);
    put_cstr(b, name);
}

pub fn describe(t: Target<'_>) -> Frame {
    message(b'D', |b| target(b, t))
}

pub fn close(t: Target<'_>) -> Frame {
    message(b'C', |b| target(b, t))
}

/// A Bind of a statement without parameters, results in text.
pub fn bind_no_params(portal: impl AsRef<[u8]>, statement: impl AsRef<[u8]>) -> Frame {
    message(b'B', |b| {
        put_cstr(b, portal.as_ref());
        put_cstr(b, statement.as_ref());
        b.put_i16(0);
        b.put_i16(0);
        b.put_i16(0);
    })
}

pub fn execute(portal: impl AsRef<[u8]>, max_rows: i32) -> Frame {
    message(b'E', |b| {
        put_cstr(b, portal.as_ref());
        b.put_i32(max_rows);
    })
}

pub fn sync() -> Frame {
    message(b'S', |_| {})
}

/// CopyFail with an error message: ends COPY FROM STDIN with an error (and is ignored by a
/// server that is not in COPY).
pub fn copy_fail(reason: &str) -> Frame {
    message(b'f', |b| put_cstr(b, reason.as_bytes()))
}

pub fn query(sql: impl AsRef<[u8]>) -> Frame {
    message(b'Q', |b| put_cstr(b, sql.as_ref()))
}

pub fn terminate() -> Frame {
    message(b'X', |_| {})
}

/// The same Bind with other result format codes: everything before the result formats is copied.
pub fn bind_with_result_formats(bind: &Frame, result_formats_at: usize, formats: &[i16]) -> Frame {
    message(b'B', |b| {
        b.put_slice(&bind.body()[..result_formats_at]);
        b.put_i16(formats.len() as i16);
        for f in formats {
            b.put_i16(*f);
        }
    })
}

pub fn row_description(fields: &[Field]) -> Frame {
    message(b'T', |b| {
        b.put_i16(fields.len() as i16);
        for f in fields {
            put_cstr(b, &f.name);
            b.put_u32(f.table_oid);
            b.put_i16(f.column_attr);
            b.put_u32(f.type_oid);
            b.put_i16(f.type_len);
            b.put_i32(f.type_mod);
            b.put_i16(f.format);
        }
    })
}

pub fn ready_for_query(status: TxStatus) -> Frame {
    message(b'Z', |b| b.put_u8(status.byte()))
}

pub fn parse_complete() -> Frame {
    message(b'1', |_| {})
}

pub fn close_complete() -> Frame {
    message(b'3', |_| {})
}

pub fn command_complete(tag: impl AsRef<[u8]>) -> Frame {
    message(b'C', |b| put_cstr(b, tag.as_ref()))
}

pub fn parameter_status(name: &str, value: &str) -> Frame {
    message(b'S', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    })
}

/// BackendKeyData: 4 key bytes for a protocol 3.0 client, up to 256 for 3.2.
pub fn backend_key_data(pid: i32, key: &[u8]) -> Frame {
    message(b'K', |b| {
        b.put_i32(pid);
        b.put_slice(key);
    })
}

/// NegotiateProtocolVersion: the protocol version pgheal speaks with the client (PostgreSQL
/// sends the whole version number, `3 << 16 | minor`) and the `_pq_.` options it does not know.
pub fn negotiate_protocol_version(minor: u16, unknown_options: &[String]) -> Frame {
    message(b'v', |b| {
        b.put_i32(3 << 16 | i32::from(minor));
        b.put_i32(unknown_options.len() as i32);
        for o in unknown_options {
            put_cstr(b, o.as_bytes());
        }
    })
}

pub fn auth_ok() -> Frame {
    message(b'R', |b| b.put_i32(0))
}

pub fn auth_cleartext() -> Frame {
    message(b'R', |b| b.put_i32(3))
}

pub fn auth_md5(salt: [u8; 4]) -> Frame {
    message(b'R', |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    })
}

pub fn auth_sasl(mechanisms: &[&str]) -> Frame {
    message(b'R', |b| {
        b.put_i32(10);
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    })
}

pub fn auth_sasl_continue(data: &[u8]) -> Frame {
    message(b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    })
}

pub fn auth_sasl_final(data: &[u8]) -> Frame {
    message(b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    })
}

/// PasswordMessage (cleartext or md5 response).
pub fn password(pw: &[u8]) -> Frame {
    message(b'p', |b| put_cstr(b, pw))
}

pub fn sasl_initial_response(mechanism: &str, data: &[u8]) -> Frame {
    message(b'p', |b| {
        put_cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    })
}

pub fn sasl_response(data: &[u8]) -> Frame {
    message(b'p', |b| b.put_slice(data))
}

/// An ErrorResponse with severity, SQLSTATE and message (bytes: it may quote a client's
/// statement name, which is in the client's encoding).
pub fn error_response(severity: &str, code: &str, msg: impl AsRef<[u8]>) -> Frame {
    error_fields(
        b'E',
        &[
            (b'S', severity.as_bytes()),
            (b'V', severity.as_bytes()),
            (b'C', code.as_bytes()),
            (b'M', msg.as_ref()),
        ],
    )
}

/// An ErrorResponse/NoticeResponse from explicit fields (used to replay a stored error).
pub fn error_fields(tag: u8, fields: &[(u8, &[u8])]) -> Frame {
    message(tag, |b| {
        for (code, value) in fields {
            b.put_u8(*code);
            put_cstr(b, value);
        }
        b.put_u8(0);
    })
}

/// A StartupMessage for protocol 3.0 with the given parameters.
pub fn startup_message(params: &[(&str, &str)]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i32(0);
    b.put_i32(super::startup::PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(&mut b, k.as_bytes());
        put_cstr(&mut b, v.as_bytes());
    }
    b.put_u8(0);
    let len = b.len() as i32;
    b[0..4].copy_from_slice(&len.to_be_bytes());
    b.freeze()
}

/// A CancelRequest packet.
pub fn cancel_request(pid: i32, key: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    b.put_i32(16);
    b.put_i32(super::startup::CANCEL_REQUEST);
    b.put_i32(pid);
    b.put_i32(key);
    b.freeze()
}
