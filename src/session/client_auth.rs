//! Authenticating a client, over the socket. The checks themselves are in [`crate::auth`].

use std::sync::OnceLock;

use rand::RngCore;

use crate::auth::scram_client::{recover_client_key, PassthroughKeys};
use crate::auth::{
    cleartext_matches, md5_response_matches, AuthMethod, ChannelBinding, ScramServer, Secret,
    SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use crate::net::{ClientReader, ClientWriter};
use crate::protocol::{encode, frontend};

use super::SessionError;

/// A per-process seed so mock SCRAM salts for unknown users are stable but unpredictable.
fn mock_seed() -> &'static [u8; 32] {
    static SEED: OnceLock<[u8; 32]> = OnceLock::new();
    SEED.get_or_init(|| {
        let mut s = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut s);
        s
    })
}

/// The client's TLS, for SCRAM channel binding.
#[derive(Debug, Clone, Copy)]
pub struct TlsBinding<'a> {
    pub on_tls: bool,
    /// `tls-server-end-point` data of pgheal's certificate in the handshake (`None`: unknown
    /// hash, so `SCRAM-SHA-256-PLUS` is not offered).
    pub end_point: Option<&'a [u8]>,
}

/// Run the exchange `method` asks for. `secret` is `None` for unknown users, who go through
/// the same exchange and fail the same way. Sends nothing on success (the caller sends
/// AuthenticationOk once the server side is ready). Not cancel-safe.
///
/// A SCRAM login against a SCRAM verifier returns the keys its proof revealed, for SCRAM
/// pass-through to the server (see [`crate::auth::scram_client`]).
pub async fn authenticate(
    method: AuthMethod,
    user: &str,
    secret: Option<&Secret>,
    tls: TlsBinding<'_>,
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
) -> Result<Option<PassthroughKeys>, SessionError> {
    let fail = || SessionError::AuthFailed(user.to_owned());
    let method = match secret {
        Some(s) => method.for_secret(s).map_err(|_| fail())?,
        None => method,
    };
    let mut read_password = async |writer: &mut ClientWriter, request: crate::protocol::Frame| {
        writer.write_frame(&request).await?;
        let f = reader.read_frame().await?;
        if f.tag != frontend::PASSWORD {
            return Err(SessionError::AuthMalformed);
        }
        Ok::<_, SessionError>(f)
    };
    match method {
        AuthMethod::Trust => Ok(None),
        AuthMethod::Plain => {
            let f = read_password(writer, encode::auth_cleartext()).await?;
            let pw = frontend::decode_password(&f).map_err(|_| SessionError::AuthMalformed)?;
            match secret {
                Some(s) if cleartext_matches(s, user, pw) => Ok(None),
                _ => Err(fail()),
            }
        }
        AuthMethod::Md5 => {
            let mut salt = [0u8; 4];
            rand::thread_rng().fill_bytes(&mut salt);
            let f = read_password(writer, encode::auth_md5(salt)).await?;
            let resp = frontend::decode_password(&f).map_err(|_| SessionError::AuthMalformed)?;
            match secret {
                Some(s) if md5_response_matches(s, user, salt, resp) => Ok(None),
                _ => Err(fail()),
            }
        }
        AuthMethod::ScramSha256 => {
            // As PostgreSQL: -PLUS first, to clients on TLS.
            let plus = tls.end_point.filter(|_| tls.on_tls);
            let offer: &[&str] = match plus {
                Some(_) => &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256],
                None => &[SCRAM_SHA_256],
            };
            let f = read_password(writer, encode::auth_sasl(offer)).await?;
            let (mechanism, first) =
                frontend::decode_sasl_initial(&f).map_err(|_| SessionError::AuthMalformed)?;
            let cb = match (mechanism, plus) {
                (m, Some(data)) if m == SCRAM_SHA_256_PLUS => ChannelBinding::Selected(data),
                (m, Some(_)) if m == SCRAM_SHA_256 => ChannelBinding::Declined,
                (m, None) if m == SCRAM_SHA_256 => ChannelBinding::NotOffered,
                _ => return Err(SessionError::AuthMalformed),
            };
            let started = match secret {
                Some(s) => ScramServer::start_bound(s, first, cb),
                None => ScramServer::start_for_unknown_user_bound(user, mock_seed(), first, cb),
            };
            let (server, server_first) = started.map_err(|_| SessionError::AuthMalformed)?;
            let f = read_password(writer, encode::auth_sasl_continue(&server_first)).await?;
            let client_final = frontend::password_body(&f);
            let keys = match secret {
                Some(Secret::Scram(s)) => recover_client_key(s, first, &server_first, client_final),
                _ => None,
            };
            let server_final = server.finish(client_final).map_err(|e| match e {
                crate::auth::AuthError::PasswordMismatch => fail(),
                _ => SessionError::AuthMalformed,
            })?;
            writer
                .write_frame(&encode::auth_sasl_final(&server_final))
                .await?;
            Ok(keys)
        }
    }
}
