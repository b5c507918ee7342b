//! The one error type of the codec.

use thiserror::Error;

/// Why a byte sequence is not a valid protocol message. Each becomes SQLSTATE `08P01`
/// (protocol_violation) when reported to a client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message length {len} exceeds the maximum of {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("message truncated while reading {0}")]
    Truncated(&'static str),
    #[error("string field is not terminated")]
    UnterminatedString,
    #[error("string field is not valid UTF-8")]
    InvalidUtf8,
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid {field}: {value}")]
    InvalidField { field: &'static str, value: i64 },
    #[error("unexpected message type {0:?}")]
    UnexpectedMessage(char),
    #[error("trailing bytes after {0}")]
    TrailingBytes(&'static str),
}
