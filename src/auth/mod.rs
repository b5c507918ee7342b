//! Client-facing authentication: the stored secrets and the server side of every method pgheal
//! offers (SCRAM-SHA-256, md5, cleartext, trust).
//!
//! This module is pure: no sockets, no tokio, no clock. The session code reads the client's
//! messages, calls these functions with the message bodies, and writes the answers back.
//! Keeping the cryptography and the parsing of untrusted bytes here, away from I/O, lets every
//! path be tested exhaustively (including with arbitrary bytes) without a network.
//!
//! Files, and why each exists:
//! - [`secret`]: [`Secret`] and [`ScramSecret`], one user's stored credential, parsed from the
//!   strings PostgreSQL and PgBouncer use (`md5…`, `SCRAM-SHA-256$…`, or plain text).
//! - [`userlist`]: the PgBouncer `auth_file` format (`"user" "secret"` per line).
//! - [`hba`]: the PgBouncer `auth_hba_file` format (a subset of `pg_hba.conf`), which picks the
//!   method per connection when `auth_type = hba`.
//! - [`md5`]: the server side of `AuthenticationMD5Password`.
//! - [`cleartext`]: the server side of `AuthenticationCleartextPassword`, for every kind of secret.
//! - [`scram`]: [`ScramServer`], the server side of a SCRAM-SHA-256 exchange (RFC 5802/7677).
//! - [`scram_client`]: the client side of SCRAM, with a password or by pass-through (the
//!   ClientKey recovered from a client's proof), and `tls-server-end-point` channel binding.
//! - `scram_messages`: parsing of the client's SCRAM messages, kept apart from the state machine.
//! - `saslprep`: the password normalization PostgreSQL applies before SCRAM key derivation.
//! - `crypto`: the shared primitives (HMAC-SHA-256, PBKDF2 `Hi`, constant-time comparison, hex).
//!
//! Secrets never reach `Debug` output or error messages: every type that holds one implements
//! `Debug` by hand and prints `<redacted>`, and [`AuthError`] carries only static reasons and line
//! numbers, never client data or stored credentials.

pub mod cleartext;
mod crypto;
pub mod hba;
pub mod md5;
mod saslprep;
pub mod scram;
pub mod scram_client;
pub(crate) mod scram_messages;
pub mod secret;
pub mod userlist;

pub use cleartext::cleartext_matches;
pub use md5::{md5_password_hash, md5_response_matches};
pub use scram::{ChannelBinding, ScramServer, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
pub use secret::{ScramSecret, Secret};
pub use userlist::parse_userlist;

/// Why an authentication step failed.
///
/// No variant carries a password, a stored secret or bytes the client sent, so these errors are
/// safe to log and to show.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The client proved knowledge of a different password (or of none).
    #[error("password authentication failed")]
    PasswordMismatch,
    /// A message from the client, or a stored secret, does not follow its grammar.
    #[error("malformed authentication data: {0}")]
    Malformed(&'static str),
    /// The stored secret cannot serve the requested method (an md5 hash cannot do SCRAM).
    #[error("the stored secret does not support this authentication method")]
    UnsupportedSecret,
    /// The client asked for SCRAM channel binding (`p=`), which pgheal does not offer.
    #[error("SCRAM channel binding was requested but is not supported")]
    ChannelBindingUnsupported,
    /// A line of an auth_file could not be parsed. The secret is never included.
    #[error("auth file line {line}: {reason}")]
    BadAuthFile {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: &'static str,
    },
}

impl AuthError {
    /// The SQLSTATE PostgreSQL sends for this failure in its ErrorResponse.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            // invalid_password
            AuthError::PasswordMismatch => "28P01",
            // protocol_violation
            AuthError::Malformed(_) | AuthError::ChannelBindingUnsupported => "08P01",
            // invalid_authorization_specification
            AuthError::UnsupportedSecret => "28000",
            // config_file_error
            AuthError::BadAuthFile { .. } => "F0000",
        }
    }
}

/// How pgheal asks clients to authenticate (config `auth_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// `AuthenticationSASL` with SCRAM-SHA-256 (config name `scram-sha-256`).
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// `AuthenticationMD5Password` (config name `md5`).
    Md5,
    /// `AuthenticationCleartextPassword` (config name `plain`).
    Plain,
    /// No password asked (config name `trust`).
    Trust,
}

impl AuthMethod {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Plain => "plain",
            AuthMethod::Trust => "trust",
        }
    }

    /// The method to actually use with one user's secret, as PostgreSQL and PgBouncer decide it:
    /// `md5` with a SCRAM secret upgrades to SCRAM-SHA-256 (an md5 exchange cannot be checked
    /// against SCRAM keys), and `scram-sha-256` with an md5 secret cannot work at all.
    pub fn for_secret(self, secret: &Secret) -> Result<AuthMethod, AuthError> {
        match (self, secret) {
            (AuthMethod::Md5, Secret::Scram(_)) => Ok(AuthMethod::ScramSha256),
            (AuthMethod::ScramSha256, Secret::Md5(_)) => Err(AuthError::UnsupportedSecret),
            (method, _) => Ok(method),
        }
    }
}

impl std::fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error as DeError, StrDeserializer};
    use serde::Deserialize;

    fn de(name: &str) -> Result<AuthMethod, DeError> {
        AuthMethod::deserialize(StrDeserializer::<DeError>::new(name))
    }

    #[test]
    fn auth_method_serde_names() {
        for method in [
            AuthMethod::ScramSha256,
            AuthMethod::Md5,
            AuthMethod::Plain,
            AuthMethod::Trust,
        ] {
            assert_eq!(de(method.as_str()).ok(), Some(method));
            assert_eq!(method.to_string(), method.as_str());
        }
        assert_eq!(de("scram-sha-256").ok(), Some(AuthMethod::ScramSha256));
        assert!(de("scram-sha256").is_err());
        assert!(de("password").is_err());
    }

    #[test]
    fn method_for_secret_follows_postgres() {
        let scram = Secret::Scram(ScramSecret::from_password("pw", b"salt", 1));
        let md5 = Secret::Md5(md5_password_hash("u", "pw"));
        let plain = Secret::Plain("pw".into());
        assert_eq!(
            AuthMethod::Md5.for_secret(&scram),
            Ok(AuthMethod::ScramSha256)
        );
        assert_eq!(AuthMethod::Md5.for_secret(&md5), Ok(AuthMethod::Md5));
        assert_eq!(AuthMethod::Md5.for_secret(&plain), Ok(AuthMethod::Md5));
        assert_eq!(
            AuthMethod::ScramSha256.for_secret(&md5),
            Err(AuthError::UnsupportedSecret)
        );
        assert_eq!(
            AuthMethod::ScramSha256.for_secret(&plain),
            Ok(AuthMethod::ScramSha256)
        );
        assert_eq!(AuthMethod::Plain.for_secret(&scram), Ok(AuthMethod::Plain));
        assert_eq!(AuthMethod::Trust.for_secret(&md5), Ok(AuthMethod::Trust));
    }

    #[test]
    fn errors_map_to_sqlstates() {
        assert_eq!(AuthError::PasswordMismatch.sqlstate(), "28P01");
        assert_eq!(AuthError::Malformed("x").sqlstate(), "08P01");
    }
}
