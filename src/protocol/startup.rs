//! Untagged startup packets: StartupMessage (protocol 3.x), SSLRequest, GSSENCRequest and
//! CancelRequest. They are the first thing a client sends and have only a length prefix.
//!
//! Protocol versions: PostgreSQL 18 added 3.2, whose only change is a longer cancel key
//! (BackendKeyData and CancelRequest carry up to 256 bytes instead of 4). A client may ask for
//! any 3.x and for `_pq_.` protocol options; the server answers a minor version newer than its
//! own, or options it does not know, with NegotiateProtocolVersion and carries on. So every
//! 3.x startup is decoded here, its `_pq_.` options kept apart from the parameters.

use bytes::BytesMut;

use super::cursor::Cursor;
use super::ProtocolError;

pub const PROTOCOL_3_0: i32 = 196_608;
/// Protocol 3.2 (PostgreSQL 18): cancel keys up to 256 bytes.
pub const PROTOCOL_3_2: i32 = 196_610;
/// The newest minor version of protocol 3 pgheal speaks to clients.
pub const NEWEST_MINOR: u16 = 2;
/// The longest cancel key a CancelRequest may carry (PostgreSQL's MAX_CANCEL_KEY_LENGTH).
pub const MAX_CANCEL_KEY_LEN: usize = 256;
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
    /// The secret key is 4 bytes from a protocol 3.0 client, up to 256 from 3.2.
    Cancel {
        process_id: i32,
        secret_key: Vec<u8>,
    },
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
    /// The minor version of protocol 3 the client asked for (0 for 3.0, 2 for 3.2, 9999 for
    /// libpq's "latest").
    pub minor: u16,
    /// The names of the `_pq_.` protocol options the client sent (not in `params`).
    pub protocol_options: Vec<String>,
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

    /// The minor version pgheal speaks with this client: the one it asked for, at most
    /// [`NEWEST_MINOR`].
    pub fn negotiated_minor(&self) -> u16 {
        self.minor.min(NEWEST_MINOR)
    }

    /// Whether the client must be told, with NegotiateProtocolVersion, that pgheal speaks an
    /// older minor version or does not know some of its `_pq_.` options.
    pub fn needs_negotiation(&self) -> bool {
        self.minor > NEWEST_MINOR || !self.protocol_options.is_empty()
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
            let secret_key = c.remaining().to_vec();
            if !(4..=MAX_CANCEL_KEY_LEN).contains(&secret_key.len()) {
                return Err(ProtocolError::InvalidField {
                    field: "cancel key length",
                    value: secret_key.len() as i64,
                });
            }
            Ok(StartupPacket::Cancel {
                process_id,
                secret_key,
            })
        }
        code if code >> 16 == 3 => {
            let mut params = Vec::new();
            let mut protocol_options = Vec::new();
            loop {
                let key = c.cstr_utf8()?;
                if key.is_empty() {
                    break;
                }
                let value = c.cstr_utf8()?;
                if key.starts_with("_pq_.") {
                    protocol_options.push(key.to_owned());
                } else if let Some(kept) = params.iter_mut().find(|(k, _)| k == key) {
                    // PostgreSQL applies the parameters in order: a repeated key's last
                    // value wins.
                    kept.1 = value.to_owned();
                } else {
                    params.push((key.to_owned(), value.to_owned()));
                }
            }
            c.finish("StartupMessage")?;
            Ok(StartupPacket::Startup(StartupParams {
                params,
                minor: (code & 0xffff) as u16,
                protocol_options,
            }))
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
    fn a_repeated_key_keeps_its_last_value() {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(
            b"user\0a\0application_name\0one\0user\0b\0application_name\0two\0\0",
        );
        let Some(StartupPacket::Startup(p)) = split_startup(&mut packet(&body)).unwrap() else {
            panic!("not a startup message")
        };
        assert_eq!(p.user(), Some("b"));
        assert_eq!(p.get("application_name"), Some("two"));
        assert_eq!(p.params.len(), 2, "one entry per key");
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
                secret_key: (-9i32).to_be_bytes().to_vec()
            })
        );
        // Protocol 3.2's long keys; none shorter than 4 or longer than 256 bytes.
        let mut long = CANCEL_REQUEST.to_be_bytes().to_vec();
        long.extend_from_slice(&7i32.to_be_bytes());
        long.extend_from_slice(&[0xab; 32]);
        assert_eq!(
            split_startup(&mut packet(&long)).unwrap(),
            Some(StartupPacket::Cancel {
                process_id: 7,
                secret_key: vec![0xab; 32]
            })
        );
        for n in [0, 3, 257] {
            let mut bad = CANCEL_REQUEST.to_be_bytes().to_vec();
            bad.extend_from_slice(&7i32.to_be_bytes());
            bad.extend(std::iter::repeat_n(1u8, n));
            assert!(
                split_startup(&mut packet(&bad)).is_err(),
                "a {n}-byte key is refused"
            );
        }
    }

    #[test]
    fn newer_minor_versions_and_protocol_options() {
        let mut body = PROTOCOL_3_2.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0app\0\0");
        let Some(StartupPacket::Startup(p)) = split_startup(&mut packet(&body)).unwrap() else {
            panic!()
        };
        assert_eq!((p.minor, p.negotiated_minor()), (2, 2));
        assert!(!p.needs_negotiation());

        let mut body = (PROTOCOL_3_0 + 9999).to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0app\0_pq_.compress\0zstd\0database\0d\0\0");
        let Some(StartupPacket::Startup(p)) = split_startup(&mut packet(&body)).unwrap() else {
            panic!()
        };
        assert_eq!((p.minor, p.negotiated_minor()), (9999, 2));
        assert!(p.needs_negotiation());
        assert_eq!(p.protocol_options, ["_pq_.compress"]);
        assert_eq!(p.get("_pq_.compress"), None, "options are not parameters");
        assert_eq!(p.database(), Some("d"));

        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0app\0_pq_.x\0y\0\0");
        let Some(StartupPacket::Startup(p)) = split_startup(&mut packet(&body)).unwrap() else {
            panic!()
        };
        assert_eq!(p.negotiated_minor(), 0);
        assert!(
            p.needs_negotiation(),
            "an unknown option alone is negotiated"
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
        let mut b = packet(&0x0004_0000i32.to_be_bytes());
        assert!(matches!(
            split_startup(&mut b),
            Err(ProtocolError::UnsupportedProtocol { major: 4, .. })
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
