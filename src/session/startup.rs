//! The first packets of a client connection.

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::net::{FrameReader, FrameWriter, NetError};
use crate::protocol::startup::{StartupPacket, StartupParams};
use crate::protocol::ProtocolError;

use super::SessionError;

/// What the client wants.
pub enum Opening {
    Startup(StartupParams),
    Cancel {
        pid: i32,
        key: i32,
    },
    /// Closed before sending a whole startup packet, or sent bytes that cannot be one (closed
    /// without an answer, as PostgreSQL does).
    Gone,
}

/// Read startup packets, answering SSLRequest and GSSENCRequest with `N` (no TLS configured).
///
/// Like PostgreSQL, a connection whose first bytes cannot be a startup packet at all (a length
/// below 8 or above 10,000 bytes — e.g. a Terminate or any other tagged message sent before the
/// startup packet, as node-postgres can do) or that closes mid-packet is closed without an
/// answer: PostgreSQL logs these as COMMERROR and never writes to such a client. A well-framed
/// packet that is wrong (an unsupported protocol version, a bad layout) still gets its FATAL.
/// Not cancel-safe.
pub async fn read_opening(
    reader: &mut FrameReader<OwnedReadHalf>,
    writer: &mut FrameWriter<OwnedWriteHalf>,
) -> Result<Opening, SessionError> {
    loop {
        let packet = match reader.read_startup().await {
            Ok(p) => p,
            Err(NetError::Protocol(
                e @ (ProtocolError::BadLength(_) | ProtocolError::TooLong { .. }),
            )) => {
                tracing::debug!(error = %e, "invalid length of startup packet; closing without an answer");
                return Ok(Opening::Gone);
            }
            Err(NetError::Closed) => {
                tracing::debug!("incomplete startup packet; closing without an answer");
                return Ok(Opening::Gone);
            }
            Err(e) => return Err(e.into()),
        };
        match packet {
            None => return Ok(Opening::Gone),
            Some(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                writer.write_raw(b"N").await?
            }
            Some(StartupPacket::Cancel {
                process_id,
                secret_key,
            }) => {
                return Ok(Opening::Cancel {
                    pid: process_id,
                    key: secret_key,
                })
            }
            Some(StartupPacket::Startup(p)) => return Ok(Opening::Startup(p)),
        }
    }
}
