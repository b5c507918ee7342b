//! The server side of `AuthenticationMD5Password`.
//!
//! The server sends a 4-byte salt; the client answers
//! `"md5" || hex(md5(hex(md5(password || user)) || salt))`. The server can check that from the
//! plain password or from the stored `md5…` hash alike, but not from a SCRAM verifier.

use md5::{Digest, Md5};

use super::crypto::{ct_eq, hex_lower};
use super::Secret;

/// `"md5" || hex(md5(parts…))`, PostgreSQL's `pg_md5_encrypt` shape.
fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hash = Md5::new();
    for part in parts {
        hash.update(part);
    }
    format!("md5{}", hex_lower(&hash.finalize()))
}

/// The stored form of a password: `"md5"` followed by 32 lowercase hex digits of
/// `md5(password || user)`.
pub fn md5_password_hash(user: &str, password: &str) -> String {
    md5_password_hash_bytes(user, password.as_bytes())
}

/// [`md5_password_hash`] for a password that may not be UTF-8.
pub(crate) fn md5_password_hash_bytes(user: &str, password: &[u8]) -> String {
    md5_hex(&[password, user.as_bytes()])
}

/// Server side of AuthenticationMD5Password: does the client's response
/// (`"md5" || hex(md5(md5hex(password || user) || salt))`) match?
///
/// Works for Plain and Md5 secrets, and is false for Scram secrets and for an empty Plain
/// password (PostgreSQL never accepts an empty password). `response` is the PasswordMessage
/// body, with or without its terminating NUL. The comparison is constant-time.
pub fn md5_response_matches(secret: &Secret, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let stored = match secret {
        Secret::Plain(password) if password.is_empty() => return false,
        Secret::Plain(password) => md5_password_hash(user, password),
        Secret::Md5(hash) => hash.clone(),
        Secret::Scram(_) => return false,
    };
    // The client hashes the 32 hex digits, without the "md5" prefix.
    let Some(stored_hex) = stored.get(3..) else {
        return false;
    };
    let expected = md5_hex(&[stored_hex.as_bytes(), &salt]);
    let response = response.strip_suffix(b"\0").unwrap_or(response);
    ct_eq(expected.as_bytes(), response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ScramSecret;

    /// What libpq sends for `user`/`password` and `salt`, computed independently with
    /// postgres-protocol's client-side md5 helper.
    fn client_response(user: &str, password: &str, salt: [u8; 4]) -> Vec<u8> {
        let inner = postgres_protocol::password::md5(password.as_bytes(), user);
        let inner_hex = &inner.as_bytes()[3..];
        let mut hash = Md5::new();
        hash.update(inner_hex);
        hash.update(salt);
        format!("md5{}", hex_lower(&hash.finalize())).into_bytes()
    }

    #[test]
    fn password_hash_known_vectors() {
        assert_eq!(
            md5_password_hash("postgres", "postgres"),
            "md53175bce1d3201d16594cebf9d7eb3f9d"
        );
        assert_eq!(
            md5_password_hash("foo", "secret"),
            "md54ab2c5d00339c4b2a4e921d2dc4edec7"
        );
    }

    #[test]
    fn response_known_vector() {
        // "md5" || md5("3175bce1d3201d16594cebf9d7eb3f9d" || 01 02 03 04), computed with
        // Python's hashlib.
        let salt = [1, 2, 3, 4];
        let response = client_response("postgres", "postgres", salt);
        assert_eq!(response, b"md568be9ed08db75f318087ab337aaea044".to_vec());
        let plain = Secret::Plain("postgres".into());
        let hashed = Secret::Md5("md53175bce1d3201d16594cebf9d7eb3f9d".into());
        assert!(md5_response_matches(&plain, "postgres", salt, &response));
        assert!(md5_response_matches(&hashed, "postgres", salt, &response));
        let mut with_nul = response.clone();
        with_nul.push(0);
        assert!(md5_response_matches(&hashed, "postgres", salt, &with_nul));
    }

    #[test]
    fn response_mismatches() {
        let salt = [9, 8, 7, 6];
        let response = client_response("alice", "right", salt);
        let plain = Secret::Plain("right".into());
        assert!(md5_response_matches(&plain, "alice", salt, &response));
        assert!(!md5_response_matches(&plain, "bob", salt, &response));
        assert!(!md5_response_matches(&plain, "alice", [0; 4], &response));
        assert!(!md5_response_matches(
            &Secret::Plain("wrong".into()),
            "alice",
            salt,
            &response
        ));
        assert!(!md5_response_matches(&plain, "alice", salt, b""));
        assert!(!md5_response_matches(&plain, "alice", salt, b"md5"));
        assert!(!md5_response_matches(
            &plain,
            "alice",
            salt,
            &response[..34]
        ));
        let scram = Secret::Scram(ScramSecret::from_password("right", b"salt", 1));
        assert!(!md5_response_matches(&scram, "alice", salt, &response));
    }

    #[test]
    fn empty_password_never_matches() {
        let salt = [1, 1, 1, 1];
        let response = client_response("alice", "", salt);
        assert!(!md5_response_matches(
            &Secret::Plain(String::new()),
            "alice",
            salt,
            &response
        ));
    }
}
