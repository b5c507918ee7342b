//! The password normalization PostgreSQL applies before deriving SCRAM keys (SASLprep, RFC 4013),
//! with PostgreSQL's fallback: a password that is not valid UTF-8, or that contains a character
//! SASLprep prohibits, is used as its raw bytes.
//!
//! It exists because both ends must derive the same SaltedPassword: libpq normalizes the
//! password it sends, and PostgreSQL normalized the one it stored. Any secret pgheal derives from
//! a plain password (a `Plain` secret used for SCRAM, or a cleartext password checked against a
//! SCRAM secret) must be normalized the same way.
//!
//! PostgreSQL's `pg_saslprep`, step by step, and how this file gets each:
//! - pure ASCII passes through unchanged, controls included (PostgreSQL's shortcut: SASLprep
//!   never alters printable ASCII, and PostgreSQL does not reject ASCII controls);
//! - invalid UTF-8 is used as its raw bytes;
//! - mapping (non-ASCII spaces to U+0020, "commonly mapped to nothing" removed), NFKC
//!   normalization, the prohibited-output tables (RFC 3454 C.1.2 to C.9), the bidirectional
//!   check (RFC 3454 section 6) and the unassigned code point check (A.1) come from the
//!   `stringprep` crate, the implementation `postgres-protocol` (hence `tokio-postgres`, which
//!   pgheal uses towards the servers) relies on: one Unicode table set for both directions;
//! - a password that maps to nothing at all (only U+00AD, say) is used raw, as PostgreSQL
//!   refuses an empty normalized password and falls back;
//! - any refusal (prohibited, unassigned, bad bidi) means the raw bytes, not an error, because
//!   PostgreSQL stored the secret of the raw bytes in that case and libpq sends them raw.
//!
//! NFKC uses the Unicode version of `unicode-normalization`, PostgreSQL its own; normalization
//! is stable for every code point assigned in Unicode 3.2, and A.1 refuses the rest, so the two
//! cannot disagree on a password that survives the checks.

use std::borrow::Cow;

/// Normalizes `password` as PostgreSQL does before SCRAM key derivation (see module docs).
pub(crate) fn saslprep(password: &[u8]) -> Cow<'_, [u8]> {
    if password.is_ascii() {
        return Cow::Borrowed(password);
    }
    let Ok(text) = std::str::from_utf8(password) else {
        return Cow::Borrowed(password);
    };
    match stringprep::saslprep(text) {
        Ok(prepared) if !prepared.is_empty() => match prepared {
            Cow::Borrowed(b) => Cow::Borrowed(b.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        },
        _ => Cow::Borrowed(password),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(s: &str) -> Vec<u8> {
        saslprep(s.as_bytes()).into_owned()
    }

    #[test]
    fn ascii_is_unchanged_even_with_controls() {
        assert_eq!(&*saslprep(b"pencil"), b"pencil");
        assert_eq!(&*saslprep(b"a\x01b"), b"a\x01b");
        assert_eq!(&*saslprep(b""), b"");
        assert!(matches!(saslprep(b"pencil"), Cow::Borrowed(_)));
    }

    #[test]
    fn invalid_utf8_is_raw() {
        assert_eq!(&*saslprep(b"\xff\xfe"), b"\xff\xfe");
        assert_eq!(&*saslprep(b"p\xc3"), b"p\xc3");
    }

    /// RFC 4013 section 3, every example; an "Error" there is the raw bytes here, as in
    /// PostgreSQL.
    #[test]
    fn rfc4013_examples() {
        // 1. SOFT HYPHEN mapped to nothing
        assert_eq!(prep("I\u{00AD}X"), b"IX");
        // 2, 3. no transformation, case preserved
        assert_eq!(prep("user"), b"user");
        assert_eq!(prep("USER"), b"USER");
        // 4. output is NFKC, input in ISO 8859-1
        assert_eq!(prep("\u{00AA}"), b"a");
        // 5. output is NFKC, will match 1
        assert_eq!(prep("\u{2168}"), b"IX");
        // 6. Error - prohibited character
        assert_eq!(prep("\u{0007}"), "\u{0007}".as_bytes());
        // 7. Error - bidirectional check
        assert_eq!(prep("\u{0627}\u{0031}"), "\u{0627}\u{0031}".as_bytes());
    }

    #[test]
    fn nfkc_compatibility_characters() {
        // Full-width letters, a ligature, a decomposed accent (composed by NFKC).
        assert_eq!(prep("\u{FF50}\u{FF41}\u{FF53}\u{FF53}"), b"pass");
        assert_eq!(prep("\u{FB01}le"), b"file");
        assert_eq!(prep("pa\u{0308}ss"), "p\u{00E4}ss".as_bytes());
        assert_eq!(prep("p\u{00E4}ss"), "p\u{00E4}ss".as_bytes());
    }

    #[test]
    fn mapping_before_normalization() {
        // NBSP and the other non-ASCII spaces map to a space; zero-width characters vanish.
        assert_eq!(prep("a\u{00A0}b\u{3000}c"), b"a b c");
        assert_eq!(prep("a\u{2060}\u{FEFF}b\u{00E9}"), "ab\u{00E9}".as_bytes());
    }

    #[test]
    fn refusals_fall_back_to_raw() {
        // Prohibited output: the raw bytes, including the NBSP that would have been mapped.
        for raw in [
            "\u{00A0}\u{0007}",
            "x\u{E000}\u{00AD}",
            "\u{00E9}\u{0085}",
            "\u{00E9}\u{200E}",
            "\u{00E9}\u{E0001}",
        ] {
            assert_eq!(prep(raw), raw.as_bytes(), "{raw:?}");
        }
        // Unassigned in Unicode 3.2 (RFC 3454 A.1): U+0221 and U+0234 were assigned in 4.0.
        assert_eq!(prep("p\u{0221}"), "p\u{0221}".as_bytes());
        assert_eq!(prep("\u{0234}"), "\u{0234}".as_bytes());
        // Bidi: RandALCat text must not contain LCat and must start and end with RandALCat.
        assert_eq!(prep("\u{0627}a\u{0628}"), "\u{0627}a\u{0628}".as_bytes());
        assert_eq!(prep("\u{0627}1\u{0628}"), "\u{0627}1\u{0628}".as_bytes());
        assert_eq!(prep("1\u{0627}"), "1\u{0627}".as_bytes());
        // Mapped to nothing at all: PostgreSQL refuses the empty result and keeps the raw bytes.
        assert_eq!(prep("\u{00AD}"), "\u{00AD}".as_bytes());
        assert_eq!(prep("\u{2060}\u{FEFF}"), "\u{2060}\u{FEFF}".as_bytes());
        // U+200B is both a non-ASCII space (C.1.2) and mapped to nothing (B.1): the space wins.
        assert_eq!(prep("a\u{200B}b\u{00E9}"), "a b\u{00E9}".as_bytes());
    }

    #[test]
    fn right_to_left_alone_is_accepted() {
        assert_eq!(prep("\u{0627}\u{0628}"), "\u{0627}\u{0628}".as_bytes());
        assert_eq!(prep("\u{05D0}1\u{05D1}"), "\u{05D0}1\u{05D1}".as_bytes());
    }
}
