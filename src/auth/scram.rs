//! The server side of a SCRAM-SHA-256 exchange (RFC 5802, RFC 7677), as PostgreSQL runs it.
//!
//! The session code drives it with the SASL message bodies:
//! 1. the client picks [`SCRAM_SHA_256`] in SASLInitialResponse; its data goes to
//!    [`ScramServer::start`], whose bytes are sent in AuthenticationSASLContinue;
//! 2. the client's SASLResponse data goes to [`ScramServer::finish`], whose bytes are sent in
//!    AuthenticationSASLFinal, followed by AuthenticationOk.
//!
//! Channel binding (RFC 5802, `tls-server-end-point` of RFC 5929) follows PostgreSQL: to a
//! client on TLS, pgheal offers `SCRAM-SHA-256-PLUS` before `SCRAM-SHA-256` (see
//! [`ChannelBinding`]); a client that picks -PLUS must send `p=tls-server-end-point` and prove
//! the hash of pgheal's certificate in its final message; a client that says `y` (it could
//! bind but believes the server cannot) while -PLUS was offered is refused, since someone
//! removed -PLUS from the offer on the way. Without TLS, `p=` is refused and `n`/`y` accepted.
//! As in PostgreSQL, the user name inside the SCRAM message is ignored (the startup
//! packet's user is the one authenticated) and authorization identities are refused.
//!
//! A `Plain` secret has no salt of its own, so a random one is drawn each time and the keys are
//! derived on the spot (4096 PBKDF2 rounds per login); callers that care can derive a
//! [`ScramSecret`] once with [`ScramSecret::from_password`] and pass `Secret::Scram` instead.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rand::RngCore;

use super::crypto::{ct_eq, hmac_sha256, sha256};
use super::scram_messages::{parse_client_final, parse_client_first, CbindFlag, ClientFirst};
use super::{AuthError, ScramSecret, Secret};

/// The SASL mechanism name pgheal advertises in AuthenticationSASL.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The mechanism with channel binding, offered to clients on TLS.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// What the client was offered and picked, for the channel-binding rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBinding<'a> {
    /// `SCRAM-SHA-256-PLUS` was not offered (no TLS, or no known certificate hash).
    NotOffered,
    /// It was offered, and the client picked `SCRAM-SHA-256`.
    Declined,
    /// The client picked `SCRAM-SHA-256-PLUS`; the `tls-server-end-point` data of the
    /// certificate pgheal showed in this connection's handshake.
    Selected(&'a [u8]),
}

/// Iterations for keys derived from a plain password (PostgreSQL's default).
const DEFAULT_ITERATIONS: u32 = 4096;
/// Salt length for keys derived from a plain password (PostgreSQL's default).
const DEFAULT_SALT_LEN: usize = 16;
/// Random bytes in the server nonce before base64 (PostgreSQL's `SCRAM_RAW_NONCE_LEN`).
const SERVER_NONCE_LEN: usize = 18;

/// The state between client-first-message and client-final-message.
///
/// `Debug` shows no keys.
pub struct ScramServer {
    stored_key: [u8; 32],
    server_key: [u8; 32],
    /// When set, `finish` fails whatever the proof: unknown user or empty password.
    doomed: bool,
    /// What the client's `c=` must decode to: its GS2 header, then the channel-binding data
    /// when it binds.
    cbind_input: Vec<u8>,
    client_first_bare: Vec<u8>,
    server_first: Vec<u8>,
    /// client nonce followed by server nonce, as the client must echo it.
    nonce: Vec<u8>,
}

impl ScramServer {
    /// Starts an exchange after the client's SASLInitialResponse.
    ///
    /// `secret` may be Plain (a ScramSecret is derived with a random 16-byte salt and 4096
    /// iterations) or Scram; Md5 secrets cannot do SCRAM → `Err(AuthError::UnsupportedSecret)`.
    /// `client_first` is the SASLInitialResponse data (the client-first-message bytes). Returns
    /// the state and the server-first-message bytes to send in AuthenticationSASLContinue.
    ///
    /// An empty Plain password starts normally but can never succeed, as in PostgreSQL.
    pub fn start(
        secret: &Secret,
        client_first: &[u8],
    ) -> Result<(ScramServer, Vec<u8>), AuthError> {
        Self::start_bound(secret, client_first, ChannelBinding::NotOffered)
    }

    /// [`Self::start`] with the channel-binding situation of the connection.
    pub fn start_bound(
        secret: &Secret,
        client_first: &[u8],
        cb: ChannelBinding<'_>,
    ) -> Result<(ScramServer, Vec<u8>), AuthError> {
        match secret {
            Secret::Md5(_) => Err(AuthError::UnsupportedSecret),
            Secret::Scram(scram) => {
                Self::start_with(scram, false, client_first, &server_nonce(), cb)
            }
            Secret::Plain(password) => {
                // Parse first so malformed input costs no key derivation.
                cbind_input(&parse_client_first(client_first)?, cb)?;
                let mut salt = [0u8; DEFAULT_SALT_LEN];
                rand::thread_rng().fill_bytes(&mut salt);
                let scram = ScramSecret::from_password(password, &salt, DEFAULT_ITERATIONS);
                Self::start_with(
                    &scram,
                    password.is_empty(),
                    client_first,
                    &server_nonce(),
                    cb,
                )
            }
        }
    }

    /// Starts an exchange for a user that has no secret, so the client cannot tell from the
    /// exchange that the user does not exist (PostgreSQL's "mock authentication"). `finish`
    /// always fails with [`AuthError::PasswordMismatch`].
    ///
    /// The salt is derived from `mock_seed` and `user`, so repeated attempts for one user see
    /// the same salt, as they would for a real user. `mock_seed` should be a random value kept
    /// for the life of the process.
    pub fn start_for_unknown_user(
        user: &str,
        mock_seed: &[u8],
        client_first: &[u8],
    ) -> Result<(ScramServer, Vec<u8>), AuthError> {
        Self::start_for_unknown_user_bound(
            user,
            mock_seed,
            client_first,
            ChannelBinding::NotOffered,
        )
    }

    /// [`Self::start_for_unknown_user`] with the channel-binding situation of the connection.
    pub fn start_for_unknown_user_bound(
        user: &str,
        mock_seed: &[u8],
        client_first: &[u8],
        cb: ChannelBinding<'_>,
    ) -> Result<(ScramServer, Vec<u8>), AuthError> {
        let mut input = b"pgheal-scram-mock-salt\0".to_vec();
        input.extend_from_slice(mock_seed);
        input.push(0);
        input.extend_from_slice(user.as_bytes());
        let salt = sha256(&input);
        let mock = ScramSecret {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..DEFAULT_SALT_LEN].to_vec(),
            stored_key: [0; 32],
            server_key: [0; 32],
        };
        Self::start_with(&mock, true, client_first, &server_nonce(), cb)
    }

    /// The common start, with the server nonce given (tests pass RFC 7677's).
    fn start_with(
        secret: &ScramSecret,
        doomed: bool,
        client_first: &[u8],
        server_nonce: &str,
        cb: ChannelBinding<'_>,
    ) -> Result<(ScramServer, Vec<u8>), AuthError> {
        let first = parse_client_first(client_first)?;
        let cbind_input = cbind_input(&first, cb)?;
        let mut nonce = first.nonce.to_vec();
        nonce.extend_from_slice(server_nonce.as_bytes());

        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(BASE64.encode(&secret.salt).as_bytes());
        server_first.extend_from_slice(format!(",i={}", secret.iterations).as_bytes());

        let server = ScramServer {
            stored_key: secret.stored_key,
            server_key: secret.server_key,
            doomed,
            cbind_input,
            client_first_bare: first.bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((server, server_first))
    }

    /// Completes the exchange with the client's SASLResponse data (client-final-message).
    ///
    /// On success returns the server-final-message bytes (`v=…`) for AuthenticationSASLFinal.
    /// A wrong password is `Err(AuthError::PasswordMismatch)`; a message that does not follow
    /// the grammar, echoes another nonce or another GS2 header is `Err(AuthError::Malformed)`.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, AuthError> {
        let fin = parse_client_final(client_final)?;
        if !ct_eq(&fin.channel_binding, &self.cbind_input) {
            return Err(AuthError::Malformed("SCRAM channel binding check failed"));
        }
        if fin.nonce != self.nonce.as_slice() {
            return Err(AuthError::Malformed("SCRAM nonce mismatch"));
        }

        let mut auth_message = self.client_first_bare;
        auth_message.push(b',');
        auth_message.extend_from_slice(&self.server_first);
        auth_message.push(b',');
        auth_message.extend_from_slice(fin.without_proof);

        // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); check H(ClientKey).
        let mut client_key = hmac_sha256(&self.stored_key, &auth_message);
        for (key, proof) in client_key.iter_mut().zip(fin.proof.iter()) {
            *key ^= proof;
        }
        let proof_ok = ct_eq(&sha256(&client_key), &self.stored_key);
        if !proof_ok || self.doomed {
            return Err(AuthError::PasswordMismatch);
        }

        let server_signature = hmac_sha256(&self.server_key, &auth_message);
        let mut server_final = b"v=".to_vec();
        server_final.extend_from_slice(BASE64.encode(server_signature).as_bytes());
        Ok(server_final)
    }
}

/// PostgreSQL's rules for the GS2 header's channel-binding flag against what was offered and
/// picked; returns what `c=` must decode to.
fn cbind_input(first: &ClientFirst<'_>, cb: ChannelBinding<'_>) -> Result<Vec<u8>, AuthError> {
    let mut input = first.gs2_header.to_vec();
    match (first.cbind, cb) {
        (CbindFlag::Bind(name), ChannelBinding::Selected(data)) => {
            if name != b"tls-server-end-point" {
                return Err(AuthError::Malformed("unsupported SCRAM channel-binding type"));
            }
            input.extend_from_slice(data);
        }
        (CbindFlag::Bind(_), ChannelBinding::NotOffered) => {
            return Err(AuthError::ChannelBindingUnsupported)
        }
        (CbindFlag::Bind(_), ChannelBinding::Declined) => {
            return Err(AuthError::Malformed(
                "the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data",
            ))
        }
        (CbindFlag::No | CbindFlag::Yes, ChannelBinding::Selected(_)) => {
            return Err(AuthError::Malformed(
                "the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data",
            ))
        }
        (CbindFlag::Yes, ChannelBinding::Declined) => {
            return Err(AuthError::Malformed(
                "SCRAM channel binding negotiation error: the client supports channel binding but thinks the server does not; this server does support it",
            ))
        }
        (CbindFlag::No, _) | (CbindFlag::Yes, ChannelBinding::NotOffered) => {}
    }
    Ok(input)
}

/// A fresh server nonce: 18 random bytes, base64 (24 printable characters, no commas).
fn server_nonce() -> String {
    let mut raw = [0u8; SERVER_NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut raw);
    BASE64.encode(raw)
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("keys", &format_args!("<redacted>"))
            .field("doomed", &self.doomed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use proptest::prelude::*;

    /// Runs a whole exchange with postgres-protocol's client. Returns the server's verdict and
    /// whether the client accepted the server's final message.
    fn exchange(
        secret: &Secret,
        password: &str,
        binding: ChannelBinding,
    ) -> Result<bool, AuthError> {
        let mut client = ScramSha256::new(password.as_bytes(), binding);
        let (server, server_first) = ScramServer::start(secret, client.message())?;
        if client.update(&server_first).is_err() {
            return Err(AuthError::Malformed("client rejected server-first-message"));
        }
        let server_final = server.finish(client.message())?;
        Ok(client.finish(&server_final).is_ok())
    }

    fn parsed_scram(password: &str) -> Secret {
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        match Secret::parse(&verifier) {
            Ok(secret @ Secret::Scram(_)) => secret,
            other => panic!("verifier parsed as {other:?}"),
        }
    }

    #[test]
    fn plain_secret_exchange() {
        let secret = Secret::Plain("hunter2".into());
        assert_eq!(
            exchange(&secret, "hunter2", ChannelBinding::unsupported()),
            Ok(true)
        );
        assert_eq!(
            exchange(&secret, "hunter3", ChannelBinding::unsupported()),
            Err(AuthError::PasswordMismatch)
        );
    }

    #[test]
    fn parsed_scram_secret_exchange() {
        let secret = parsed_scram("correct horse");
        assert_eq!(
            exchange(&secret, "correct horse", ChannelBinding::unsupported()),
            Ok(true)
        );
        assert_eq!(
            exchange(&secret, "correct horse ", ChannelBinding::unsupported()),
            Err(AuthError::PasswordMismatch)
        );
    }

    #[test]
    fn client_that_could_bind_but_was_not_offered() {
        let secret = Secret::Plain("pw".into());
        assert_eq!(
            exchange(&secret, "pw", ChannelBinding::unrequested()),
            Ok(true)
        );
    }

    #[test]
    fn channel_binding_request_is_refused() {
        let client = ScramSha256::new(b"pw", ChannelBinding::tls_server_end_point(vec![1, 2, 3]));
        let secret = Secret::Plain("pw".into());
        assert_eq!(
            ScramServer::start(&secret, client.message()).err(),
            Some(AuthError::ChannelBindingUnsupported)
        );
    }

    #[test]
    fn non_ascii_password_is_normalized_like_the_client() {
        // The client SASLpreps U+00A0 to a space; the Plain secret derivation must too.
        let secret = Secret::Plain("pass\u{00A0}word".into());
        assert_eq!(
            exchange(&secret, "pass word", ChannelBinding::unsupported()),
            Ok(true)
        );
    }

    #[test]
    fn md5_secret_cannot_do_scram() {
        let secret = Secret::Md5(crate::auth::md5_password_hash("u", "pw"));
        assert_eq!(
            ScramServer::start(&secret, b"n,,n=,r=abc").err(),
            Some(AuthError::UnsupportedSecret)
        );
    }

    #[test]
    fn empty_plain_password_never_succeeds() {
        let secret = Secret::Plain(String::new());
        assert_eq!(
            exchange(&secret, "", ChannelBinding::unsupported()),
            Err(AuthError::PasswordMismatch)
        );
    }

    #[test]
    fn unknown_user_always_fails_with_a_stable_salt() {
        let mut client = ScramSha256::new(b"guess", ChannelBinding::unsupported());
        let Ok((server, server_first)) =
            ScramServer::start_for_unknown_user("ghost", b"seed", client.message())
        else {
            panic!("mock start failed");
        };
        assert!(client.update(&server_first).is_ok());
        assert_eq!(
            server.finish(client.message()),
            Err(AuthError::PasswordMismatch)
        );
        let salt_of = |user: &str| -> Vec<u8> {
            let Ok((_, first)) = ScramServer::start_for_unknown_user(user, b"seed", b"n,,n=,r=x")
            else {
                panic!("mock start failed");
            };
            let text = String::from_utf8_lossy(&first).into_owned();
            text.split(',')
                .nth(1)
                .unwrap_or_default()
                .as_bytes()
                .to_vec()
        };
        assert_eq!(salt_of("ghost"), salt_of("ghost"));
        assert_ne!(salt_of("ghost"), salt_of("spook"));
    }

    /// One exchange with the connection's channel-binding situation `cb`.
    fn bound_exchange(
        client_cb: ChannelBinding,
        cb: super::ChannelBinding<'_>,
    ) -> Result<bool, AuthError> {
        let secret = Secret::Plain("pw".into());
        let mut client = ScramSha256::new(b"pw", client_cb);
        let (server, server_first) = ScramServer::start_bound(&secret, client.message(), cb)?;
        if client.update(&server_first).is_err() {
            return Err(AuthError::Malformed("client rejected server-first-message"));
        }
        let server_final = server.finish(client.message())?;
        Ok(client.finish(&server_final).is_ok())
    }

    /// SCRAM-SHA-256-PLUS: the client's tls-server-end-point data must be pgheal's, and the
    /// flag must fit what was offered and picked (PostgreSQL's rules).
    #[test]
    fn channel_binding_rules() {
        use super::ChannelBinding as Cb;
        let hash = [7u8; 32];
        let bind = |d: &[u8]| ChannelBinding::tls_server_end_point(d.to_vec());
        assert_eq!(bound_exchange(bind(&hash), Cb::Selected(&hash)), Ok(true));
        assert!(matches!(
            bound_exchange(bind(&[8u8; 32]), Cb::Selected(&hash)),
            Err(AuthError::Malformed(_))
        ));
        // PLUS picked, but the message does not bind.
        for c in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
            assert!(matches!(
                bound_exchange(c, Cb::Selected(&hash)),
                Err(AuthError::Malformed(_))
            ));
        }
        // PLUS offered, plain SCRAM picked: `n` is fine, `y` means a downgrade, `p` a mix-up.
        assert_eq!(
            bound_exchange(ChannelBinding::unsupported(), Cb::Declined),
            Ok(true)
        );
        assert!(matches!(
            bound_exchange(ChannelBinding::unrequested(), Cb::Declined),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            bound_exchange(bind(&hash), Cb::Declined),
            Err(AuthError::Malformed(_))
        ));
        // Not offered (no TLS): `y` is fine, `p` refused.
        assert_eq!(
            bound_exchange(ChannelBinding::unrequested(), Cb::NotOffered),
            Ok(true)
        );
        assert_eq!(
            bound_exchange(bind(&hash), Cb::NotOffered),
            Err(AuthError::ChannelBindingUnsupported)
        );
    }

    /// RFC 7677 section 3: user "user", password "pencil", fixed nonces and salt.
    #[test]
    fn rfc7677_vector() {
        let Ok(salt) = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==") else {
            panic!("bad salt");
        };
        let secret = ScramSecret::from_password("pencil", &salt, 4096);
        let Ok((server, server_first)) = ScramServer::start_with(
            &secret,
            false,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            super::ChannelBinding::NotOffered,
        ) else {
            panic!("start failed");
        };
        assert_eq!(
            String::from_utf8_lossy(&server_first),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let server_final = server.finish(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        );
        assert_eq!(
            server_final.map(|v| String::from_utf8_lossy(&v).into_owned()),
            Ok("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_owned())
        );
    }

    fn started() -> (ScramServer, String) {
        let secret = Secret::Scram(ScramSecret::from_password("pw", b"salt", 1));
        match ScramServer::start(&secret, b"n,,n=,r=clientnonce") {
            Ok((server, first)) => {
                let text = String::from_utf8_lossy(&first).into_owned();
                let nonce = text
                    .strip_prefix("r=")
                    .and_then(|t| t.split(',').next())
                    .unwrap_or_default()
                    .to_owned();
                (server, nonce)
            }
            Err(err) => panic!("start failed: {err}"),
        }
    }

    #[test]
    fn server_nonce_is_postgres_shaped() {
        let (_, nonce) = started();
        let server_part = nonce.strip_prefix("clientnonce").unwrap_or_default();
        assert_eq!(server_part.len(), 24);
        assert!(!server_part.contains(','));
    }

    #[test]
    fn finish_rejects_mismatched_echoes() {
        const PROOF: &str = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let (server, nonce) = started();
        // The GS2 header was "n,,", so "eSws" (y,,) does not match.
        let message = format!("c=eSws,r={nonce},p={PROOF}");
        assert!(matches!(
            server.finish(message.as_bytes()),
            Err(AuthError::Malformed(_))
        ));
        let (server, _) = started();
        let message = format!("c=biws,r=clientnonceOTHER,p={PROOF}");
        assert!(matches!(
            server.finish(message.as_bytes()),
            Err(AuthError::Malformed(_))
        ));
        let (server, nonce) = started();
        let message = format!("c=biws,r={nonce},p={PROOF}");
        assert_eq!(
            server.finish(message.as_bytes()),
            Err(AuthError::PasswordMismatch)
        );
        let (server, nonce) = started();
        let message = format!("c=biws,r={nonce}");
        assert!(matches!(
            server.finish(message.as_bytes()),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let (server, _) = started();
        let shown = format!("{server:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("clientnonce"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn start_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let secret = Secret::Scram(ScramSecret::from_password("pw", b"salt", 1));
            let _ = ScramServer::start(&secret, &bytes);
            let _ = ScramServer::start_for_unknown_user("u", b"seed", &bytes);
        }

        #[test]
        fn start_never_panics_near_valid(
            head in "[nyp][,a=]{0,3}",
            tail in "[nmr=,a-z\\x00-\\x7f]{0,40}",
        ) {
            let secret = Secret::Scram(ScramSecret::from_password("pw", b"salt", 1));
            let _ = ScramServer::start(&secret, format!("{head}{tail}").as_bytes());
        }

        #[test]
        fn finish_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            let (server, _) = started();
            prop_assert!(server.finish(&bytes).is_err());
        }

        #[test]
        fn finish_never_panics_near_valid(
            cbind in "(biws|eSws|[A-Za-z0-9+/=]{0,8})",
            extra in "(,[a-z]=[a-z]{0,4}){0,2}",
            proof in "[A-Za-z0-9+/=,p]{0,48}",
            use_nonce in any::<bool>(),
        ) {
            let (server, nonce) = started();
            let nonce = if use_nonce { nonce } else { "x".to_owned() };
            let message = format!("c={cbind},r={nonce}{extra},p={proof}");
            prop_assert!(server.finish(message.as_bytes()).is_err());
        }
    }
}
