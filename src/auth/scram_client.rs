//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677, RFC 5929 channel binding): how pgheal
//! logs into PostgreSQL, with a password or by pass-through.
//!
//! Pass-through is PgBouncer's trick for SCRAM secrets copied from `pg_authid`: the verifier
//! holds StoredKey and ServerKey, not the password, which is enough to check a client but not
//! to answer a server (that needs ClientKey). When a client logs into pgheal with SCRAM, its
//! proof reveals ClientKey (`ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage)`, checked
//! against `StoredKey = H(ClientKey)`); [`recover_client_key`] does that, and [`ScramClient`]
//! answers the server with ClientKey and ServerKey instead of a password. The server's salt
//! and iteration count must then be the verifier's (it is the same verifier), which
//! [`ScramClient::update`] checks, so a mismatch is a clear error, not a refused proof.
//!
//! Channel binding: when the connection to the server is TLS, the client announces it can bind
//! (`y,,`) or, when the server offers `SCRAM-SHA-256-PLUS`, binds with `tls-server-end-point`
//! ([`crate::net::x509::tls_server_end_point`]: a hash of the server's certificate, RFC 5929 section 4.1).
//!
//! Pure: no sockets. Keys live in types whose `Debug` prints `<redacted>`, and errors carry only
//! static reasons.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rand::RngCore;

use super::crypto::{client_key, ct_eq, hi, hmac_sha256, server_key, sha256};
use super::saslprep::saslprep;
use super::scram_messages::{parse_client_final, parse_client_first};
use super::ScramSecret;

/// The mechanism name with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Why the client side of a SCRAM exchange failed. No variant carries key material or server
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramClientError {
    #[error("malformed SCRAM message from the server: {0}")]
    Malformed(&'static str),
    #[error("the server's SCRAM nonce does not extend pgheal's")]
    NonceMismatch,
    /// Pass-through needs the server to use the verifier the client was checked against.
    #[error(
        "SCRAM pass-through: the server's salt or iteration count differs from the auth_file's \
         verifier (copy the verifier from the server's pg_authid again)"
    )]
    VerifierMismatch,
    #[error("the server's SCRAM signature is wrong (it does not know this user's verifier)")]
    BadServerSignature,
    #[error("the server reported a SCRAM error")]
    ServerError,
    #[error("SCRAM message out of order")]
    OutOfOrder,
}

/// ClientKey and the verifier it belongs to: what pass-through needs to log into the server as
/// a user whose password pgheal does not know. `Debug` prints `<redacted>`.
#[derive(Clone)]
pub struct PassthroughKeys {
    pub client_key: [u8; 32],
    /// Salt, iterations and ServerKey of the verifier (StoredKey is `H(client_key)`).
    pub secret: ScramSecret,
}

impl fmt::Debug for PassthroughKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PassthroughKeys(<redacted>)")
    }
}

/// After a client's SCRAM login against `secret` succeeded: its ClientKey, from the messages of
/// the exchange (SASLInitialResponse data, server-first-message, SASLResponse data). `None`
/// when the messages do not parse or the proof does not check out against `secret`.
pub fn recover_client_key(
    secret: &ScramSecret,
    client_first: &[u8],
    server_first: &[u8],
    client_final: &[u8],
) -> Option<PassthroughKeys> {
    let first = parse_client_first(client_first).ok()?;
    let fin = parse_client_final(client_final).ok()?;
    let mut auth_message = first.bare.to_vec();
    auth_message.push(b',');
    auth_message.extend_from_slice(server_first);
    auth_message.push(b',');
    auth_message.extend_from_slice(fin.without_proof);
    let mut key = hmac_sha256(&secret.stored_key, &auth_message);
    for (k, p) in key.iter_mut().zip(fin.proof.iter()) {
        *k ^= p;
    }
    ct_eq(&sha256(&key), &secret.stored_key).then(|| PassthroughKeys {
        client_key: key,
        secret: secret.clone(),
    })
}

/// What the client proves knowledge of.
pub enum Credential<'a> {
    /// A password (SASLprep-normalized before key derivation, as libpq does).
    Password(&'a [u8]),
    /// Pass-through keys.
    Keys(&'a PassthroughKeys),
}

/// Channel binding as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Not TLS: `n,,`.
    Unsupported,
    /// TLS, but the server does not offer `-PLUS` (or binding is disabled): `y,,`.
    Unrequested,
    /// `p=tls-server-end-point,,` with the certificate hash.
    TlsServerEndPoint(Vec<u8>),
}

impl Binding {
    fn gs2_header(&self) -> &'static [u8] {
        match self {
            Binding::Unsupported => b"n,,",
            Binding::Unrequested => b"y,,",
            Binding::TlsServerEndPoint(_) => b"p=tls-server-end-point,,",
        }
    }

    /// The mechanism name to ask for.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Binding::TlsServerEndPoint(_) => SCRAM_SHA_256_PLUS,
            _ => super::SCRAM_SHA_256,
        }
    }
}

enum State {
    /// client-first-message sent.
    First {
        client_first_bare: Vec<u8>,
        nonce: Vec<u8>,
    },
    /// client-final-message sent; the server signature expected.
    Final {
        server_signature: [u8; 32],
    },
    Done,
}

/// The client side of one exchange: [`ScramClient::new`] → send [`ScramClient::message`] in
/// SASLInitialResponse; [`ScramClient::update`] with AuthenticationSASLContinue's data → send
/// the message in SASLResponse; [`ScramClient::finish`] with AuthenticationSASLFinal's data.
pub struct ScramClient<'a> {
    credential: Credential<'a>,
    binding: Binding,
    state: State,
    message: Vec<u8>,
}

impl fmt::Debug for ScramClient<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.binding.mechanism())
            .finish_non_exhaustive()
    }
}

impl<'a> ScramClient<'a> {
    pub fn new(credential: Credential<'a>, binding: Binding) -> ScramClient<'a> {
        let mut raw = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut raw);
        Self::with_nonce(credential, binding, BASE64.encode(raw).into_bytes())
    }

    fn with_nonce(credential: Credential<'a>, binding: Binding, nonce: Vec<u8>) -> Self {
        let mut bare = b"n=,r=".to_vec();
        bare.extend_from_slice(&nonce);
        let mut message = binding.gs2_header().to_vec();
        message.extend_from_slice(&bare);
        ScramClient {
            credential,
            binding,
            state: State::First {
                client_first_bare: bare,
                nonce,
            },
            message,
        }
    }

    /// The mechanism this client uses.
    pub fn mechanism(&self) -> &'static str {
        self.binding.mechanism()
    }

    /// The message to send next.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Takes server-first-message and prepares client-final-message.
    pub fn update(&mut self, server_first: &[u8]) -> Result<(), ScramClientError> {
        let State::First {
            client_first_bare,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramClientError::OutOfOrder);
        };
        let (full_nonce, salt, iterations) = parse_server_first(server_first)?;
        if full_nonce.len() <= nonce.len() || !full_nonce.starts_with(&nonce) {
            return Err(ScramClientError::NonceMismatch);
        }
        let (ckey, skey) = match &self.credential {
            Credential::Password(pw) => {
                let salted = hi(&saslprep(pw), &salt, iterations);
                (client_key(&salted), server_key(&salted))
            }
            Credential::Keys(k) => {
                if k.secret.salt != salt || k.secret.iterations != iterations {
                    return Err(ScramClientError::VerifierMismatch);
                }
                (k.client_key, k.secret.server_key)
            }
        };
        let mut cbind_input = self.binding.gs2_header().to_vec();
        if let Binding::TlsServerEndPoint(data) = &self.binding {
            cbind_input.extend_from_slice(data);
        }
        let mut without_proof = b"c=".to_vec();
        without_proof.extend_from_slice(BASE64.encode(&cbind_input).as_bytes());
        without_proof.extend_from_slice(b",r=");
        without_proof.extend_from_slice(full_nonce);

        let mut auth_message = client_first_bare;
        auth_message.push(b',');
        auth_message.extend_from_slice(server_first);
        auth_message.push(b',');
        auth_message.extend_from_slice(&without_proof);

        let signature = hmac_sha256(&sha256(&ckey), &auth_message);
        let mut proof = ckey;
        for (p, s) in proof.iter_mut().zip(signature.iter()) {
            *p ^= s;
        }
        let mut message = without_proof;
        message.extend_from_slice(b",p=");
        message.extend_from_slice(BASE64.encode(proof).as_bytes());
        self.message = message;
        self.state = State::Final {
            server_signature: hmac_sha256(&skey, &auth_message),
        };
        Ok(())
    }

    /// Checks server-final-message: the server proved it knows the verifier.
    pub fn finish(mut self, server_final: &[u8]) -> Result<(), ScramClientError> {
        let State::Final { server_signature } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramClientError::OutOfOrder);
        };
        let first = server_final
            .split(|&b| b == b',')
            .next()
            .unwrap_or_default();
        if first.starts_with(b"e=") {
            return Err(ScramClientError::ServerError);
        }
        let v = first
            .strip_prefix(b"v=")
            .ok_or(ScramClientError::Malformed("verifier attribute expected"))?;
        let v = BASE64
            .decode(v)
            .map_err(|_| ScramClientError::Malformed("verifier is not base64"))?;
        if ct_eq(&v, &server_signature) {
            Ok(())
        } else {
            Err(ScramClientError::BadServerSignature)
        }
    }
}

/// `r=<nonce>,s=<salt>,i=<iterations>[,ext]`.
fn parse_server_first(message: &[u8]) -> Result<(&[u8], Vec<u8>, u32), ScramClientError> {
    let bad = ScramClientError::Malformed;
    let mut parts = message.split(|&b| b == b',');
    let nonce = parts
        .next()
        .and_then(|p| p.strip_prefix(b"r="))
        .filter(|n| !n.is_empty())
        .ok_or(bad("nonce attribute expected"))?;
    let salt = parts
        .next()
        .and_then(|p| p.strip_prefix(b"s="))
        .ok_or(bad("salt attribute expected"))?;
    let salt = BASE64.decode(salt).map_err(|_| bad("salt is not base64"))?;
    let iterations = parts
        .next()
        .and_then(|p| p.strip_prefix(b"i="))
        .and_then(|i| std::str::from_utf8(i).ok())
        .and_then(|i| i.parse::<u32>().ok())
        .filter(|&i| i > 0)
        .ok_or(bad("iteration count expected"))?;
    if salt.is_empty() {
        return Err(bad("empty salt"));
    }
    Ok((nonce, salt, iterations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthError, ScramServer, Secret};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Logs `client` in against pgheal's own server side; returns the server's verdict and
    /// the ClientKey recovered from the exchange.
    fn run(
        mut client: ScramClient<'_>,
        secret: &ScramSecret,
    ) -> Result<Option<PassthroughKeys>, String> {
        let first = client.message().to_vec();
        let (server, server_first) = ScramServer::start(&Secret::Scram(secret.clone()), &first)
            .map_err(|e| e.to_string())?;
        client.update(&server_first).map_err(|e| e.to_string())?;
        let fin = client.message().to_vec();
        let server_final = server.finish(&fin).map_err(|e| e.to_string())?;
        client.finish(&server_final).map_err(|e| e.to_string())?;
        Ok(recover_client_key(secret, &first, &server_first, &fin))
    }

    fn secret() -> ScramSecret {
        ScramSecret::from_password("s3cret", b"0123456789abcdef", 4096)
    }

    #[test]
    fn password_login_and_recovered_key_logs_in_again() {
        let secret = secret();
        let keys = run(
            ScramClient::new(Credential::Password(b"s3cret"), Binding::Unsupported),
            &secret,
        )
        .expect("password login")
        .expect("key recovered");
        assert_eq!(sha256(&keys.client_key), secret.stored_key);
        // Pass-through: the recovered keys log in with no password.
        let again = run(
            ScramClient::new(Credential::Keys(&keys), Binding::Unrequested),
            &secret,
        );
        assert!(matches!(again, Ok(Some(_))), "{again:?}");
    }

    #[test]
    fn wrong_password_is_refused_and_recovers_nothing() {
        let secret = secret();
        let mut client = ScramClient::new(Credential::Password(b"nope"), Binding::Unsupported);
        let first = client.message().to_vec();
        let Ok((server, server_first)) = ScramServer::start(&Secret::Scram(secret.clone()), &first)
        else {
            panic!("start");
        };
        assert_eq!(client.update(&server_first), Ok(()));
        let fin = client.message().to_vec();
        assert!(recover_client_key(&secret, &first, &server_first, &fin).is_none());
        assert_eq!(server.finish(&fin), Err(AuthError::PasswordMismatch));
    }

    #[test]
    fn keys_refuse_another_salt_or_iteration_count() {
        let secret = secret();
        let keys = PassthroughKeys {
            client_key: client_key(&hi(b"s3cret", &secret.salt, 4096)),
            secret: secret.clone(),
        };
        for other in [
            ScramSecret::from_password("s3cret", b"another-salt....", 4096),
            ScramSecret::from_password("s3cret", b"0123456789abcdef", 4095),
        ] {
            let mut client = ScramClient::new(Credential::Keys(&keys), Binding::Unsupported);
            let Ok((_, server_first)) = ScramServer::start(&Secret::Scram(other), client.message())
            else {
                panic!("start");
            };
            assert_eq!(
                client.update(&server_first),
                Err(ScramClientError::VerifierMismatch)
            );
        }
    }

    #[test]
    fn password_client_message_framing() {
        // Our client against the RFC 7677 vector's server-first: the same proof as the RFC.
        let mut client = ScramClient::with_nonce(
            Credential::Password(b"pencil"),
            Binding::Unsupported,
            b"rOprNGfwEbeRWgbNEkqO".to_vec(),
        );
        assert_eq!(client.message(), b"n,,n=,r=rOprNGfwEbeRWgbNEkqO");
        // The RFC's client-first has n=user; ours has n= (as libpq), so only the framing is
        // compared here and the whole exchange is checked against postgres-protocol below.
        assert!(client
            .update(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .is_ok());
        let text = String::from_utf8_lossy(client.message()).into_owned();
        assert!(text.starts_with("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p="));
    }

    /// postgres-protocol's client with a password, our recovery, our key-based client: the
    /// ClientKey recovered from a third-party client works.
    #[test]
    fn recovery_from_a_libpq_style_client() {
        let secret = secret();
        let mut c = ScramSha256::new(b"s3cret", ChannelBinding::unrequested());
        let first = c.message().to_vec();
        let Ok((server, server_first)) = ScramServer::start(&Secret::Scram(secret.clone()), &first)
        else {
            panic!("start");
        };
        assert!(c.update(&server_first).is_ok());
        let fin = c.message().to_vec();
        assert!(server.finish(&fin).is_ok());
        let keys = recover_client_key(&secret, &first, &server_first, &fin).expect("recovered");
        assert!(run(
            ScramClient::new(Credential::Keys(&keys), Binding::Unsupported),
            &secret
        )
        .is_ok());
        assert_eq!(format!("{keys:?}"), "PassthroughKeys(<redacted>)");
    }

    #[test]
    fn channel_binding_header_and_data() {
        let mut client = ScramClient::with_nonce(
            Credential::Password(b"pw"),
            Binding::TlsServerEndPoint(vec![1, 2, 3]),
            b"abc".to_vec(),
        );
        assert_eq!(client.mechanism(), SCRAM_SHA_256_PLUS);
        assert_eq!(client.message(), b"p=tls-server-end-point,,n=,r=abc");
        assert!(client.update(b"r=abcdef,s=c2FsdA==,i=1").is_ok());
        let mut expected = b"p=tls-server-end-point,,".to_vec();
        expected.extend_from_slice(&[1, 2, 3]);
        let text = String::from_utf8_lossy(client.message()).into_owned();
        assert!(text.starts_with(&format!("c={},r=abcdef,p=", BASE64.encode(expected))));
    }

    #[test]
    fn server_messages_are_checked() {
        let mut client = ScramClient::with_nonce(
            Credential::Password(b"pw"),
            Binding::Unsupported,
            b"abc".to_vec(),
        );
        assert_eq!(
            client.update(b"r=xyz,s=c2FsdA==,i=1"),
            Err(ScramClientError::NonceMismatch)
        );
        for bad in [
            &b""[..],
            b"r=abcd",
            b"r=abcd,s=!!,i=1",
            b"r=abcd,s=c2FsdA==,i=0",
        ] {
            let mut client = ScramClient::with_nonce(
                Credential::Password(b"pw"),
                Binding::Unsupported,
                b"abc".to_vec(),
            );
            assert!(matches!(
                client.update(bad),
                Err(ScramClientError::Malformed(_))
            ));
        }
        let mut client = ScramClient::with_nonce(
            Credential::Password(b"pw"),
            Binding::Unsupported,
            b"abc".to_vec(),
        );
        assert!(client.update(b"r=abcd,s=c2FsdA==,i=1").is_ok());
        assert_eq!(
            client.finish(b"v=AAAA"),
            Err(ScramClientError::BadServerSignature)
        );
    }
}
