//! The server side of `AuthenticationCleartextPassword` (config `auth_type = "plain"`).
//!
//! The client sends its password as is, so it can be checked against every kind of secret:
//! compared to a plain password, hashed like an md5 secret, or run through SCRAM's key
//! derivation with a verifier's salt and iteration count. Only use this over TLS.

use super::crypto::ct_eq;
use super::md5::md5_password_hash_bytes;
use super::{ScramSecret, Secret};

/// Does the cleartext `password` (the PasswordMessage body, with or without its terminating NUL)
/// match the stored secret?
///
/// Plain: equality; Md5: hash compare; Scram: derive the keys with the secret's salt and
/// iterations and compare StoredKey and ServerKey. All comparisons are constant-time. An empty
/// password never matches, as in PostgreSQL.
pub fn cleartext_matches(secret: &Secret, user: &str, password: &[u8]) -> bool {
    let password = password.strip_suffix(b"\0").unwrap_or(password);
    if password.is_empty() {
        return false;
    }
    match secret {
        Secret::Plain(stored) => ct_eq(stored.as_bytes(), password),
        Secret::Md5(stored) => ct_eq(
            stored.as_bytes(),
            md5_password_hash_bytes(user, password).as_bytes(),
        ),
        Secret::Scram(stored) => {
            let derived =
                ScramSecret::from_password_bytes(password, &stored.salt, stored.iterations);
            // Evaluate both comparisons so the time does not depend on which key differs.
            let stored_ok = ct_eq(&stored.stored_key, &derived.stored_key);
            let server_ok = ct_eq(&stored.server_key, &derived.server_key);
            stored_ok & server_ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::md5_password_hash;

    #[test]
    fn plain_secret() {
        let secret = Secret::Plain("hunter2".into());
        assert!(cleartext_matches(&secret, "u", b"hunter2"));
        assert!(cleartext_matches(&secret, "u", b"hunter2\0"));
        assert!(!cleartext_matches(&secret, "u", b"hunter3"));
        assert!(!cleartext_matches(&secret, "u", b"hunter"));
        assert!(!cleartext_matches(&secret, "u", b""));
    }

    #[test]
    fn md5_secret() {
        let secret = Secret::Md5(md5_password_hash("postgres", "postgres"));
        assert!(cleartext_matches(&secret, "postgres", b"postgres"));
        assert!(!cleartext_matches(&secret, "other", b"postgres"));
        assert!(!cleartext_matches(&secret, "postgres", b"postgre"));
    }

    #[test]
    fn scram_secret() {
        let salt: Vec<u8> = (1..=16).collect();
        let secret = Secret::Scram(ScramSecret::from_password("secret", &salt, 4096));
        assert!(cleartext_matches(&secret, "any", b"secret"));
        assert!(!cleartext_matches(&secret, "any", b"Secret"));
        // SASLprep: a no-break space in the password is the same as a space.
        let spaced = Secret::Scram(ScramSecret::from_password("a b", &salt, 2));
        assert!(cleartext_matches(&spaced, "any", "a\u{00A0}b".as_bytes()));
    }

    #[test]
    fn empty_passwords_never_match() {
        assert!(!cleartext_matches(&Secret::Plain(String::new()), "u", b""));
        assert!(!cleartext_matches(
            &Secret::Plain(String::new()),
            "u",
            b"\0"
        ));
        let md5 = Secret::Md5(md5_password_hash("u", ""));
        assert!(!cleartext_matches(&md5, "u", b""));
    }
}
