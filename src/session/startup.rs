//! The first packets of a client connection, and TLS.
//!
//! With `client_tls_sslmode` other than `disable`, a client gets TLS in either of two ways:
//! - an SSLRequest answered `S`, then the handshake on the same socket. Bytes the client sent
//!   after the SSLRequest but before the handshake are refused (PostgreSQL's lesson from
//!   CVE-2021-23222: they were written before encryption, so anyone on the path could have put
//!   them there);
//! - PostgreSQL 17's direct TLS: the connection starts with a TLS ClientHello (first byte
//!   0x16, which no startup packet can start with), and the client must name the ALPN
//!   protocol `postgresql`, as PostgreSQL 17 requires (without it, the connection is closed).
//!
//! GSSENCRequest always gets `N`, and so does an SSLRequest on the Unix socket (no TLS there,
//! as in PostgreSQL). Whether a plain client may go on is decided once its startup
//! packet names user and database (see [`crate::session::run`]).

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::net::stream::{
    reunite_client_plain, split_client_plain, split_client_tls, split_client_unix,
};
use crate::net::tls::{ClientTlsState, ALPN_POSTGRESQL};
use crate::net::Accepted;
use crate::net::{ClientReader, ClientWriter, FrameReader, FrameWriter, NetError};
use crate::protocol::startup::{StartupPacket, StartupParams};
use crate::protocol::{encode, sqlstate, ProtocolError};

use super::SessionError;

/// What the client wants.
pub enum Opening {
    Startup(StartupParams),
    /// A CancelRequest: the process id and secret key (4 bytes, or up to 256 from a protocol
    /// 3.2 client).
    Cancel {
        pid: i32,
        key: Vec<u8>,
    },
    /// Closed before sending a whole startup packet, or sent bytes that cannot be one (closed
    /// without an answer, as PostgreSQL does).
    Gone,
}

/// A client connection past its opening: its streams (TLS or not), what it asked for, and
/// the channel-binding data of the certificate its TLS handshake used.
pub struct Opened {
    pub reader: ClientReader,
    pub writer: ClientWriter,
    pub opening: Opening,
    /// `tls-server-end-point` data of pgheal's certificate in this connection's handshake;
    /// `None` without TLS (or for a certificate whose hash is unknown).
    pub end_point: Option<Vec<u8>>,
    /// The subject common name of the certificate the client presented (rustls verified it
    /// against `client_tls_ca_file`); `None` without one. The HBA `cert` method matches it.
    pub client_cert_name: Option<String>,
}

/// Why an opening failed, with the writer when the client can still be told.
pub type OpenFailure = (Option<ClientWriter>, SessionError);

/// PostgreSQL's SSLRequest and GSSENCRequest codes, for the error a repeated request gets.
const SSL_MINOR: u16 = 5679;
const GSS_MINOR: u16 = 5680;

/// Read the opening of a connection, with TLS when `tls` is configured and the client is on
/// TCP, until `deadline`. On the Unix socket an SSLRequest is answered `N`, as PostgreSQL does.
pub async fn open(
    stream: Accepted,
    tls: Option<&Arc<ClientTlsState>>,
    max_len: usize,
    deadline: Instant,
) -> Result<Opened, OpenFailure> {
    let timed_out = |w: Option<ClientWriter>| (w, SessionError::LoginTimeout);
    let mut end_point = None;
    let mut client_cert_name = None;
    let stream = match stream {
        Accepted::Tcp(s, _) => s,
        Accepted::Unix(s, _) => {
            return read_opening(split_client_unix(s), None, max_len, deadline).await
        }
    };
    let (r, w) = match tls {
        Some(tls) => {
            let mut first = [0u8; 1];
            let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first))
                .await
                .map_err(|_| timed_out(None))?
                .map_err(|e| (None, e.into()))?;
            if peeked == 1 && first[0] == 0x16 {
                let (s, ep, cn) = handshake(stream, tls, deadline).await?;
                if s.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
                    tracing::info!(
                        "direct TLS connection without the ALPN protocol \"postgresql\"; closing"
                    );
                    return Err((
                        None,
                        SessionError::Tls("direct TLS without ALPN \"postgresql\"".into()),
                    ));
                }
                end_point = ep;
                client_cert_name = cn;
                split_client_tls(s)
            } else {
                split_client_plain(stream)
            }
        }
        None => split_client_plain(stream),
    };
    let mut opened = read_opening((r, w), tls, max_len, deadline).await?;
    if opened.end_point.is_none() {
        opened.end_point = end_point;
    }
    if opened.client_cert_name.is_none() {
        opened.client_cert_name = client_cert_name;
    }
    Ok(opened)
}

/// The startup packets on split halves (after a direct TLS handshake, if any): SSLRequest
/// (TLS when `tls` is given, else `N`), GSSENCRequest (`N`), then a startup packet or a
/// cancel request.
async fn read_opening(
    (r, w): (crate::net::ClientRead, crate::net::ClientWrite),
    tls: Option<&Arc<ClientTlsState>>,
    max_len: usize,
    deadline: Instant,
) -> Result<Opened, OpenFailure> {
    let timed_out = |w: Option<ClientWriter>| (w, SessionError::LoginTimeout);
    let mut end_point = None;
    let mut client_cert_name = None;
    let mut reader = FrameReader::new(r, max_len);
    let mut writer = FrameWriter::new(w);
    loop {
        let read = tokio::time::timeout_at(deadline, reader.read_startup()).await;
        let packet = match read {
            Err(_) => return Err(timed_out(Some(writer))),
            Ok(Ok(p)) => p,
            Ok(Err(NetError::Protocol(
                e @ (ProtocolError::BadLength(_) | ProtocolError::TooLong { .. }),
            ))) => {
                tracing::debug!(error = %e, "invalid length of startup packet; closing without an answer");
                None
            }
            Ok(Err(NetError::Closed)) => {
                tracing::debug!("incomplete startup packet; closing without an answer");
                None
            }
            Ok(Err(e)) => return Err((Some(writer), e.into())),
        };
        let is_tls = reader.get_ref().is_tls();
        let opening = match (packet, tls) {
            (None, _) => Opening::Gone,
            (Some(StartupPacket::SslRequest), _) if is_tls => {
                return Err((Some(writer), unsupported(SSL_MINOR)))
            }
            (Some(StartupPacket::GssEncRequest), _) if is_tls => {
                return Err((Some(writer), unsupported(GSS_MINOR)))
            }
            (Some(StartupPacket::SslRequest), Some(tls)) => {
                if reader.buffered() > 0 {
                    let e = encode::error_response(
                        "FATAL",
                        sqlstate::PROTOCOL_VIOLATION,
                        "received unencrypted data after SSL request",
                    );
                    let _ = writer.write_frame(&e).await;
                    return Err((
                        None,
                        SessionError::Tls("unencrypted data after SSLRequest".into()),
                    ));
                }
                if let Err(e) = writer.write_raw(b"S").await {
                    return Err((None, e.into()));
                }
                let tcp = reunite_client_plain(reader.into_inner(), writer.into_inner())
                    .map_err(|e| (None, e.into()))?;
                let (s, ep, cn) = handshake(tcp, tls, deadline).await?;
                end_point = ep;
                client_cert_name = cn;
                let (r, w) = split_client_tls(s);
                reader = FrameReader::new(r, max_len);
                writer = FrameWriter::new(w);
                continue;
            }
            (Some(StartupPacket::SslRequest | StartupPacket::GssEncRequest), _) => {
                if let Err(e) = writer.write_raw(b"N").await {
                    return Err((None, e.into()));
                }
                continue;
            }
            (
                Some(StartupPacket::Cancel {
                    process_id,
                    secret_key,
                }),
                _,
            ) => Opening::Cancel {
                pid: process_id,
                key: secret_key,
            },
            (Some(StartupPacket::Startup(p)), _) => Opening::Startup(p),
        };
        // Logged in or not, from here on an idle client holds no read buffer.
        reader.release_when_idle();
        return Ok(Opened {
            reader,
            writer,
            opening,
            end_point,
            client_cert_name,
        });
    }
}

/// A second SSLRequest or GSSENCRequest (after TLS is up): PostgreSQL reads its code as a
/// protocol version it does not support.
fn unsupported(minor: u16) -> SessionError {
    SessionError::Protocol(ProtocolError::UnsupportedProtocol { major: 1234, minor })
}

/// A TLS connection from a client, the channel-binding data of pgheal's certificate and the
/// common name of the client's certificate.
type Handshaken = (
    crate::net::stream::ClientTlsStream,
    Option<Vec<u8>>,
    Option<String>,
);

/// The TLS handshake with the configuration current now (new certificates after a reload,
/// the old ones for handshakes already started).
async fn handshake(
    tcp: TcpStream,
    tls: &ClientTlsState,
    deadline: Instant,
) -> Result<Handshaken, OpenFailure> {
    let loaded = tls.current();
    let acceptor = tokio_rustls::TlsAcceptor::from(loaded.config.clone());
    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Err(_) => Err((None, SessionError::LoginTimeout)),
        Ok(Err(e)) => Err((None, SessionError::Tls(e.to_string()))),
        Ok(Ok(s)) => {
            let name = s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::net::x509::subject_common_name(c.as_ref()));
            Ok((s, loaded.end_point.clone(), name))
        }
    }
}
