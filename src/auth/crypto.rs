//! The cryptographic primitives shared by the md5, cleartext and SCRAM code.
//!
//! They live in one place so each is written (and tested against a reference) once:
//! HMAC-SHA-256 built infallibly, PBKDF2's `Hi` with a single output block as SCRAM defines it,
//! the SCRAM key derivations, a constant-time comparison, and lowercase hex.

use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// SHA-256's block size, the size HMAC pads its key to.
const BLOCK: usize = 64;

/// A keyed HMAC-SHA-256 state.
///
/// Built with the key already reduced to one block (hashed if longer, zero-padded), which is
/// exactly what HMAC does with a key of any length, so construction cannot fail.
fn keyed(key: &[u8]) -> HmacSha256 {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as hmac::digest::KeyInit>::new(GenericArray::from_slice(&block))
}

/// HMAC-SHA-256(key, data).
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = keyed(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SHA-256(data).
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SCRAM's `Hi(str, salt, i)`: PBKDF2-HMAC-SHA-256 with one 32-byte output block.
/// An iteration count of 0 is treated as 1 (the first block is always computed).
pub(crate) fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let base = keyed(password);
    let mut mac = base.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut prev: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = prev;
    for _ in 1..iterations {
        let mut mac = base.clone();
        mac.update(&prev);
        prev = mac.finalize().into_bytes().into();
        for (o, p) in out.iter_mut().zip(prev.iter()) {
            *o ^= p;
        }
    }
    out
}

/// `ClientKey = HMAC(SaltedPassword, "Client Key")`.
pub(crate) fn client_key(salted_password: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(salted_password, b"Client Key")
}

/// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
pub(crate) fn server_key(salted_password: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(salted_password, b"Server Key")
}

/// Compares two byte strings in time that depends only on their lengths.
///
/// The lengths are not secret (hash and key lengths are fixed), so a length mismatch returns at
/// once; equal lengths are compared without an early exit.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Lowercase hexadecimal, as PostgreSQL writes md5 hashes.
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = match <HmacSha256 as Mac>::new_from_slice(key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts any key length"),
        };
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    #[test]
    fn hmac_matches_reference_for_all_key_lengths() {
        for len in [0usize, 1, 31, 32, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(hmac_sha256(&key, b"data"), reference_hmac(&key, b"data"));
        }
    }

    #[test]
    fn hi_matches_pbkdf2_vector() {
        // The well-known PBKDF2-HMAC-SHA256 vectors P="password", S="salt", c=1 and c=2
        // (dkLen 32). The RFC 7677 exchange in the scram tests covers c=4096.
        assert_eq!(
            hex_lower(&hi(b"password", b"salt", 1)),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        assert_eq!(
            hex_lower(&hi(b"password", b"salt", 2)),
            "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"
        );
        assert_eq!(hi(b"password", b"salt", 0), hi(b"password", b"salt", 1));
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex_lower(&[0x00, 0xab, 0xff, 0x10]), "00abff10");
    }
}
