//! The password normalization PostgreSQL applies before deriving SCRAM keys (SASLprep, RFC 4013),
//! with PostgreSQL's fallback: a password that is not valid UTF-8, or that contains a character
//! SASLprep prohibits, is used as its raw bytes.
//!
//! It exists because both ends must derive the same SaltedPassword: libpq normalizes the
//! password it sends, and PostgreSQL normalized the one it stored. Any secret pgheal derives from
//! a plain password (a `Plain` secret used for SCRAM, or a cleartext password checked against a
//! SCRAM secret) must be normalized the same way.
//!
//! What is implemented, following PostgreSQL's `pg_saslprep`:
//! - pure ASCII passes through unchanged (exact: SASLprep never alters ASCII);
//! - non-ASCII spaces (RFC 3454 C.1.2) map to U+0020, checked before the
//!   "commonly mapped to nothing" characters (B.1), which are removed;
//! - prohibited output (C.2.1 to C.9) makes the whole password fall back to its raw bytes.
//!
//! Not implemented, because they need the full Unicode tables (the `stringprep` crate, which
//! `postgres-protocol` uses privately, is not a direct dependency): NFKC normalization, the
//! unassigned code point check (A.1) and the bidirectional check. Passwords made of
//! compatibility characters (full-width letters, ligatures), decomposed accents, unassigned code
//! points or mixed-direction text may therefore be normalized differently from PostgreSQL.
//! Common passwords (ASCII, or precomposed letters as keyboards produce them) are exact.

use std::borrow::Cow;

/// Normalizes `password` as PostgreSQL does before SCRAM key derivation (see module docs).
pub(crate) fn saslprep(password: &[u8]) -> Cow<'_, [u8]> {
    if password.is_ascii() {
        return Cow::Borrowed(password);
    }
    let Ok(text) = std::str::from_utf8(password) else {
        return Cow::Borrowed(password);
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_non_ascii_space(c) {
            out.push(' ');
        } else if !is_mapped_to_nothing(c) {
            out.push(c);
        }
    }
    if out.chars().any(is_prohibited) {
        return Cow::Borrowed(password);
    }
    Cow::Owned(out.into_bytes())
}

/// RFC 3454 table C.1.2.
fn is_non_ascii_space(c: char) -> bool {
    matches!(
        c,
        '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200B}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// RFC 3454 table B.1.
fn is_mapped_to_nothing(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{1806}'
            | '\u{180B}'..='\u{180D}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

/// RFC 3454 tables C.1.2, C.2.1, C.2.2, C.3, C.4, C.6, C.7, C.8 and C.9 (C.5, surrogates,
/// cannot occur in a Rust `char`).
fn is_prohibited(c: char) -> bool {
    let code = u32::from(c);
    is_non_ascii_space(c)
        // C.2.1 and the C1 controls of C.2.2
        || code <= 0x1F
        || (0x7F..=0x9F).contains(&code)
        // rest of C.2.2
        || matches!(
            c,
            '\u{06DD}'
                | '\u{070F}'
                | '\u{180E}'
                | '\u{200C}'
                | '\u{200D}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{2060}'..='\u{2063}'
                | '\u{206A}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFC}'
                | '\u{1D173}'..='\u{1D17A}'
        )
        // C.3 private use
        || (0xE000..=0xF8FF).contains(&code)
        || (0xF_0000..=0xF_FFFD).contains(&code)
        || (0x10_0000..=0x10_FFFD).contains(&code)
        // C.4 non-character code points
        || (0xFDD0..=0xFDEF).contains(&code)
        || code & 0xFFFE == 0xFFFE
        // C.6 inappropriate for plain text
        || (0xFFF9..=0xFFFD).contains(&code)
        // C.7 inappropriate for canonical representation
        || (0x2FF0..=0x2FFB).contains(&code)
        // C.8 change display properties or deprecated
        || matches!(c, '\u{0340}' | '\u{0341}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}')
        // C.9 tagging characters
        || code == 0xE_0001
        || (0xE_0020..=0xE_007F).contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_is_unchanged_even_with_controls() {
        assert_eq!(&*saslprep(b"pencil"), b"pencil");
        assert_eq!(&*saslprep(b"a\x01b"), b"a\x01b");
        assert_eq!(&*saslprep(b""), b"");
    }

    #[test]
    fn invalid_utf8_is_raw() {
        assert_eq!(&*saslprep(b"\xff\xfe"), b"\xff\xfe");
    }

    #[test]
    fn maps_spaces_and_removes_invisible() {
        // RFC 4013 section 3 examples: "I<U+00AD>X" -> "IX"; NBSP maps to space.
        assert_eq!(&*saslprep("I\u{00AD}X".as_bytes()), b"IX");
        assert_eq!(&*saslprep("a\u{00A0}b".as_bytes()), b"a b");
        assert_eq!(&*saslprep("päss".as_bytes()), "päss".as_bytes());
    }

    #[test]
    fn prohibited_output_falls_back_to_raw() {
        // RFC 4013 example 5: U+0007 is prohibited; PostgreSQL then uses the raw bytes, here
        // including the NBSP that would otherwise have been mapped.
        let raw = "\u{00A0}\u{0007}".as_bytes();
        assert_eq!(&*saslprep(raw), raw);
        let private = "x\u{E000}\u{00AD}".as_bytes();
        assert_eq!(&*saslprep(private), private);
    }
}
