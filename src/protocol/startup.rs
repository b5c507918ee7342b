//! Untagged startup packets: StartupMessage (protocol 3.0), SSLRequest, GSSENCRequest and
//! CancelRequest. They are the first thing a client sends and have only a length prefix.

use bytes::BytesMut;

use super::cursor::Cursor;
use super::ProtocolError;

pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;

/// Startup packets are small; PostgreSQL caps them at 10000 bytes (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// A decoded startup packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    Startup(StartupParams),
    SslRequest,
    GssEncRequest,
    Cancel { process_id: i32, secret_key: i32 },
}

/// The parameters of a StartupMessage, in the order the client sent them.
///
/// Unlike everything after the startup packet, these are required to be UTF-8 (a packet with
/// other bytes is refused with 08P01): pgheal matches `user` and `database` against its
/// configuration and auth files, which are UTF-8, and no `client_encoding` is in force yet.
/// Values outside ASCII are rare here (user and database names, `application_name`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartupParams {
    pub params: Vec<(String, String)>,
}

impl StartupParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn user(&self) -> Option<&str> {
        self.get("user")
    }

    /// `database` defaults to the user name, as in PostgreSQL.
    pub fn database(&self) -> Option<&str> {
        self.get("database").or_else(|| self.user())
    }
}

/// Split one startup packet off `buf`; `Ok(None)` when more bytes are needed.
pub fn split_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        return Err(ProtocolError::BadLength(len.into()));
    }
    let len = len as usize;
    if len > MAX_STARTUP_LEN {
        return Err(ProtocolError::TooLong {
            len,
            max: MAX_STARTUP_LEN,
        });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    parse_startup(&packet[4..]).map(Some)
}

/// Decode the body of a startup packet (everything after the length).
pub fn parse_startup(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    let mut c = Cursor::new(body);
    let code = c.i32("startup code")?;
    match code {
        SSL_REQUEST => {
            c.finish("SSLRequest")?;
            Ok(StartupPacket::SslRequest)
        }
        GSSENC_REQUEST => {
            c.finish("GSSENCRequest")?;
            Ok(StartupPacket::GssEncRequest)
        }
        CANCEL_REQUEST => {
            let process_id = c.i32("process id")?;
            let secret_key = c.i32("secret key")?;
            c.finish("CancelRequest")?;
            Ok(StartupPacket::Cancel {
                process_id,
                secret_key,
            })
        }
        PROTOCOL_3_0 => {
            let mut params = Vec::new();
            loop {
                let key = c.cstr_utf8()?;
                if key.is_empty() {
                    break;
                }
                let value = c.cstr_utf8()?;
                params.push((key.to_owned(), value.to_owned()));
            }
            c.finish("StartupMessage")?;
            Ok(StartupPacket::Startup(StartupParams { params }))
        }
        other => Err(ProtocolError::UnsupportedProtocol {
            major: (other >> 16) as u16,
            minor: (other & 0xffff) as u16,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn startup_message_with_params() {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0app\0database\0shop\0application_name\0web\0\0");
        let p = split_startup(&mut packet(&body)).unwrap().unwrap();
        let StartupPacket::Startup(p) = p else {
            panic!("not a startup message")
        };
        assert_eq!(p.user(), Some("app"));
        assert_eq!(p.database(), Some("shop"));
        assert_eq!(p.get("application_name"), Some("web"));
    }

    #[test]
    fn database_defaults_to_user() {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0app\0\0");
        let Some(StartupPacket::Startup(p)) = split_startup(&mut packet(&body)).unwrap() else {
            panic!()
        };
        assert_eq!(p.database(), Some("app"));
    }

    #[test]
    fn ssl_gss_and_cancel() {
        let mut b = packet(&SSL_REQUEST.to_be_bytes());
        assert_eq!(
            split_startup(&mut b).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        let mut b = packet(&GSSENC_REQUEST.to_be_bytes());
        assert_eq!(
            split_startup(&mut b).unwrap(),
            Some(StartupPacket::GssEncRequest)
        );
        let mut body = CANCEL_REQUEST.to_be_bytes().to_vec();
        body.extend_from_slice(&7i32.to_be_bytes());
        body.extend_from_slice(&(-9i32).to_be_bytes());
        assert_eq!(
            split_startup(&mut packet(&body)).unwrap(),
            Some(StartupPacket::Cancel {
                process_id: 7,
                secret_key: -9
            })
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        // unknown protocol code
        let mut b = packet(&0x0002_0000i32.to_be_bytes());
        assert!(matches!(
            split_startup(&mut b),
            Err(ProtocolError::UnsupportedProtocol { major: 2, .. })
        ));
        // unterminated parameter
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0app");
        assert_eq!(
            split_startup(&mut packet(&body)),
            Err(ProtocolError::UnterminatedString)
        );
        // absurd length
        let mut b = BytesMut::from(&b"\x7f\xff\xff\xff\0\x03\0\0"[..]);
        assert!(matches!(
            split_startup(&mut b),
            Err(ProtocolError::TooLong { .. })
        ));
        // short length
        let mut b = BytesMut::from(&b"\0\0\0\x02"[..]);
        assert_eq!(split_startup(&mut b), Err(ProtocolError::BadLength(2)));
        // partial
        let mut b = BytesMut::from(&b"\0\0\0\x10\0\x03"[..]);
        assert_eq!(split_startup(&mut b), Ok(None));
    }
}
