//! The first packets of a client connection.

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::net::{FrameReader, FrameWriter};
use crate::protocol::startup::{StartupPacket, StartupParams};

use super::SessionError;

/// What the client wants.
pub enum Opening {
    Startup(StartupParams),
    Cancel {
        pid: i32,
        key: i32,
    },
    /// Closed before sending a startup packet.
    Gone,
}

/// Read startup packets, answering SSLRequest and GSSENCRequest with `N` (no TLS configured).
/// Not cancel-safe.
pub async fn read_opening(
    reader: &mut FrameReader<OwnedReadHalf>,
    writer: &mut FrameWriter<OwnedWriteHalf>,
) -> Result<Opening, SessionError> {
    loop {
        match reader.read_startup().await? {
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
