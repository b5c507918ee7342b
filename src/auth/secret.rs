//! One user's stored credential, in the three forms PostgreSQL, PgBouncer's `auth_file` and
//! pgheal's config write it: a plain password, an md5 hash, or a SCRAM-SHA-256 verifier.
//!
//! The string forms are PostgreSQL's (`pg_authid.rolpassword`):
//! - `md5` followed by 32 hex digits of `md5(password || username)`;
//! - `SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>`;
//! - anything else is the password itself.
//!
//! Unlike PostgreSQL, which silently treats an unparsable verifier as a plain password, a string
//! that starts with `SCRAM-SHA-256$` but does not parse is an error: a truncated verifier pasted
//! into a config file should fail loudly, not become a password nobody knows.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::crypto::{client_key, hi, server_key, sha256};
use super::saslprep::saslprep;
use super::AuthError;

/// The prefix of a SCRAM-SHA-256 verifier string.
const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// A stored credential for one user, as in PgBouncer's auth_file or pgheal's config.
///
/// `Debug` prints the kind of secret only, never its content.
#[derive(Clone)]
pub enum Secret {
    /// The password itself.
    Plain(String),
    /// `"md5"` followed by 32 lowercase hex digits of `md5(password || username)`.
    Md5(String),
    /// A SCRAM-SHA-256 verifier.
    Scram(ScramSecret),
}

/// A SCRAM-SHA-256 verifier: what the server needs to check a client proof without knowing the
/// password.
///
/// `Debug` prints the iteration count only.
#[derive(Clone)]
pub struct ScramSecret {
    /// PBKDF2 iteration count (PostgreSQL's default is 4096).
    pub iterations: u32,
    /// The salt sent to the client in server-first-message.
    pub salt: Vec<u8>,
    /// `SHA-256(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl Secret {
    /// Parse a secret string: `"md5<32hex>"` → Md5, `"SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey
    /// b64>:<ServerKey b64>"` → Scram, else Plain.
    ///
    /// The md5 hex digits are stored lowercase (the md5 exchange hashes the hex text itself, and
    /// clients produce lowercase). Errors never include the input.
    pub fn parse(s: &str) -> Result<Secret, AuthError> {
        if let Some(rest) = s.strip_prefix(SCRAM_PREFIX) {
            return parse_scram(rest).map(Secret::Scram);
        }
        if let Some(hex) = s.strip_prefix("md5") {
            if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(Secret::Md5(format!("md5{}", hex.to_ascii_lowercase())));
            }
        }
        Ok(Secret::Plain(s.to_owned()))
    }

    /// The kind of secret, for logs: `"plain"`, `"md5"` or `"scram-sha-256"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Plain(_) => "plain",
            Secret::Md5(_) => "md5",
            Secret::Scram(_) => "scram-sha-256",
        }
    }
}

/// Parses the part of a verifier after `SCRAM-SHA-256$`.
fn parse_scram(rest: &str) -> Result<ScramSecret, AuthError> {
    let (params, keys) = rest.split_once('$').ok_or(AuthError::Malformed(
        "SCRAM secret: missing '$' before the keys",
    ))?;
    let (iterations, salt) = params.split_once(':').ok_or(AuthError::Malformed(
        "SCRAM secret: missing ':' after iterations",
    ))?;
    let (stored_key, server_key) = keys.split_once(':').ok_or(AuthError::Malformed(
        "SCRAM secret: missing ':' between the keys",
    ))?;
    if !iterations.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed("SCRAM secret: bad iteration count"));
    }
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| AuthError::Malformed("SCRAM secret: bad iteration count"))?;
    if iterations == 0 {
        return Err(AuthError::Malformed(
            "SCRAM secret: iteration count is zero",
        ));
    }
    let salt = BASE64
        .decode(salt)
        .map_err(|_| AuthError::Malformed("SCRAM secret: salt is not base64"))?;
    if salt.is_empty() {
        return Err(AuthError::Malformed("SCRAM secret: empty salt"));
    }
    Ok(ScramSecret {
        iterations,
        salt,
        stored_key: decode_key(stored_key, "SCRAM secret: bad StoredKey")?,
        server_key: decode_key(server_key, "SCRAM secret: bad ServerKey")?,
    })
}

/// Decodes a base64 key that must be exactly 32 bytes.
fn decode_key(b64: &str, reason: &'static str) -> Result<[u8; 32], AuthError> {
    let bytes = BASE64
        .decode(b64)
        .map_err(|_| AuthError::Malformed(reason))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| AuthError::Malformed(reason))
}

impl ScramSecret {
    /// Derives the verifier PostgreSQL would store for `password` with this salt and iteration
    /// count (the password is SASLprep-normalized as PostgreSQL does; an iteration count of 0 is
    /// raised to 1).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        Self::from_password_bytes(password.as_bytes(), salt, iterations)
    }

    /// [`ScramSecret::from_password`] for a password that may not be UTF-8, as a cleartext
    /// password message may carry.
    pub fn from_password_bytes(password: &[u8], salt: &[u8], iterations: u32) -> ScramSecret {
        let iterations = iterations.max(1);
        let salted = hi(&saslprep(password), salt, iterations);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key(&salted)),
            server_key: server_key(&salted),
        }
    }

    /// The verifier string, as PostgreSQL stores it in `pg_authid.rolpassword`.
    pub fn to_verifier_string(&self) -> String {
        format!(
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Plain(<redacted>)"),
            Secret::Md5(_) => f.write_str("Md5(<redacted>)"),
            Secret::Scram(scram) => f.debug_tuple("Scram").field(scram).finish(),
        }
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &format_args!("<redacted>"))
            .field("stored_key", &format_args!("<redacted>"))
            .field("server_key", &format_args!("<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The verifier `postgres_protocol::password::scram_sha_256_salt(b"secret", [1..=16])`
    /// produces (its own test vector); `scram_sha_256_salt` itself is crate-private.
    const SECRET_VERIFIER: &str = "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=";

    #[test]
    fn from_password_matches_postgres_protocol_vector() {
        let salt: Vec<u8> = (1..=16).collect();
        let derived = ScramSecret::from_password("secret", &salt, 4096);
        assert_eq!(derived.to_verifier_string(), SECRET_VERIFIER);
    }

    #[test]
    fn from_password_matches_postgres_protocol_random_salt() {
        // `scram_sha_256` picks a random salt; re-deriving with that salt must give its keys.
        let verifier = postgres_protocol::password::scram_sha_256(b"hunter2 \xc2\xa0x");
        let Ok(Secret::Scram(parsed)) = Secret::parse(&verifier) else {
            panic!("postgres-protocol verifier did not parse");
        };
        let derived =
            ScramSecret::from_password("hunter2 \u{00A0}x", &parsed.salt, parsed.iterations);
        assert_eq!(derived.stored_key, parsed.stored_key);
        assert_eq!(derived.server_key, parsed.server_key);
        assert_eq!(derived.to_verifier_string(), verifier);
    }

    #[test]
    fn parse_recognizes_each_kind() {
        assert!(matches!(Secret::parse("hunter2"), Ok(Secret::Plain(p)) if p == "hunter2"));
        assert!(matches!(Secret::parse(""), Ok(Secret::Plain(p)) if p.is_empty()));
        assert!(matches!(
            Secret::parse("md53175BCE1D3201D16594CEBF9D7EB3F9D"),
            Ok(Secret::Md5(h)) if h == "md53175bce1d3201d16594cebf9d7eb3f9d"
        ));
        // Not 32 hex digits: a password that happens to start with "md5".
        assert!(matches!(Secret::parse("md5sum"), Ok(Secret::Plain(_))));
        assert!(matches!(
            Secret::parse("md5zz75bce1d3201d16594cebf9d7eb3f9d"),
            Ok(Secret::Plain(_))
        ));
        let Ok(Secret::Scram(s)) = Secret::parse(SECRET_VERIFIER) else {
            panic!("verifier did not parse");
        };
        assert_eq!(s.iterations, 4096);
        assert_eq!(s.salt, (1..=16).collect::<Vec<u8>>());
        assert_eq!(s.to_verifier_string(), SECRET_VERIFIER);
    }

    #[test]
    fn parse_rejects_broken_verifiers() {
        let broken = [
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096",
            "SCRAM-SHA-256$4096:AQID",
            "SCRAM-SHA-256$4096:AQID$",
            "SCRAM-SHA-256$0:AQID$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=",
            "SCRAM-SHA-256$-1:AQID$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=",
            "SCRAM-SHA-256$99999999999:AQID$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=",
            "SCRAM-SHA-256$4096:!!!$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=",
            "SCRAM-SHA-256$4096:$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=",
            "SCRAM-SHA-256$4096:AQID$AQID:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=",
            "SCRAM-SHA-256$4096:AQID$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA",
        ];
        for s in broken {
            assert!(
                matches!(Secret::parse(s), Err(AuthError::Malformed(_))),
                "accepted {s}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let plain = format!("{:?}", Secret::Plain("hunter2".into()));
        let md5 = format!(
            "{:?}",
            Secret::Md5("md53175bce1d3201d16594cebf9d7eb3f9d".into())
        );
        let Ok(scram) = Secret::parse(SECRET_VERIFIER) else {
            panic!("verifier did not parse");
        };
        let scram = format!("{scram:?}");
        assert_eq!(plain, "Plain(<redacted>)");
        assert!(!md5.contains("3175"));
        assert!(scram.contains("<redacted>") && scram.contains("4096"));
        for part in ["AQID", "8rrD", "05L1"] {
            assert!(!scram.contains(part));
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = Secret::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_near_verifiers(
            iter in "[0-9-]{0,12}",
            salt in "[A-Za-z0-9+/=!]{0,30}",
            k1 in "[A-Za-z0-9+/=]{0,50}",
            k2 in "[A-Za-z0-9+/=$:]{0,50}",
        ) {
            let _ = Secret::parse(&format!("SCRAM-SHA-256${iter}:{salt}${k1}:{k2}"));
        }
    }
}
