//! The little pgheal reads from X.509 certificates (DER), with a minimal checked DER walk
//! rather than a full X.509 parser: the outer signature algorithm (for the
//! `tls-server-end-point` channel binding of SCRAM-SHA-256-PLUS, both towards clients and
//! towards servers) and the subject's common name (for the `cert` method of `auth_hba_file`,
//! as PostgreSQL and PgBouncer match it against the user name). The certificates were already
//! verified by rustls; this only reads them, and any malformed input gives `None`.

use sha2::Digest;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// `[0] EXPLICIT` (the version of a tbsCertificate).
const CONTEXT_0: u8 = 0xa0;

/// One DER element: (tag, contents, what follows). Lengths up to 4 bytes (certificates are far
/// below 4 GiB); anything else is `None`.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | usize::from(x));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The contents of an element that must have `tag`, and what follows.
fn expect(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = der(b)?;
    (t == tag).then_some((contents, rest))
}

/// The hash of a certificate's signature algorithm, as RFC 5929 uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureHash {
    /// SHA-256, also for MD5 and SHA-1 signatures (RFC 5929 section 4.1).
    Sha256,
    Sha384,
    Sha512,
}

/// The hash of the certificate's outer signatureAlgorithm; `None` for algorithms without one
/// RFC 5929 covers (Ed25519) or unknown ones, and for malformed input.
pub fn signature_hash(cert: &[u8]) -> Option<SignatureHash> {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    let (body, _) = expect(cert, SEQUENCE)?;
    let (_, _tbs, rest) = der(body)?;
    let (alg, _) = expect(rest, SEQUENCE)?;
    let (oid, _) = expect(alg, OID)?;
    // 1.2.840.113549.1.1.x (RSA) and 1.2.840.10045.4.x (ECDSA).
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    Some(match oid {
        // md5WithRSA, sha1WithRSA, sha256WithRSA
        [p @ .., 4 | 5 | 11] if p == RSA => SignatureHash::Sha256,
        [p @ .., 12] if p == RSA => SignatureHash::Sha384,
        [p @ .., 13] if p == RSA => SignatureHash::Sha512,
        // ecdsa-with-SHA1 (4.1), -SHA256, -SHA384, -SHA512 (4.3.2/3/4)
        [p @ .., 1] if p == ECDSA => SignatureHash::Sha256,
        [p @ .., 3, 2] if p == ECDSA => SignatureHash::Sha256,
        [p @ .., 3, 3] if p == ECDSA => SignatureHash::Sha384,
        [p @ .., 3, 4] if p == ECDSA => SignatureHash::Sha512,
        _ => return None,
    })
}

/// RFC 5929 `tls-server-end-point` data: the certificate's hash with the hash of its signature
/// algorithm; `None` when that algorithm has none (PostgreSQL offers no channel binding then).
pub fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    Some(match signature_hash(cert)? {
        SignatureHash::Sha256 => sha2::Sha256::digest(cert).to_vec(),
        SignatureHash::Sha384 => sha2::Sha384::digest(cert).to_vec(),
        SignatureHash::Sha512 => sha2::Sha512::digest(cert).to_vec(),
    })
}

/// The subject's common name (the first `CN`), when it is a string type whose bytes are
/// UTF-8 (UTF8String, PrintableString, IA5String, T61String as PostgreSQL reads it).
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03]; // 2.5.4.3
    let (body, _) = expect(cert, SEQUENCE)?;
    let (mut tbs, _) = expect(body, SEQUENCE)?;
    // tbsCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
    //                               validity, subject, ... }
    if tbs.first() == Some(&CONTEXT_0) {
        tbs = der(tbs)?.2;
    }
    let mut rest = tbs;
    for _ in 0..4 {
        rest = der(rest)?.2; // serialNumber, signature, issuer, validity
    }
    let (mut rdns, _) = expect(rest, SEQUENCE)?;
    while !rdns.is_empty() {
        let (set, next) = expect(rdns, SET)?;
        rdns = next;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, next) = expect(attrs, SEQUENCE)?;
            attrs = next;
            let (oid, value) = expect(attr, OID)?;
            if oid == COMMON_NAME {
                let (tag, text, _) = der(value)?;
                return match tag {
                    0x0c | 0x13 | 0x16 | 0x14 => String::from_utf8(text.to_vec()).ok(),
                    _ => None,
                };
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_of_generated_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "pgheal tests");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "app_user");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()).as_deref(), Some("app_user"));
        assert_eq!(signature_hash(cert.der()), Some(SignatureHash::Sha256));
        assert_eq!(tls_server_end_point(cert.der()).map(|h| h.len()), Some(32));

        // No CN at all.
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let mut params = params;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()), None);
    }

    #[test]
    fn malformed_input_is_none_never_a_panic() {
        for b in [
            &b""[..],
            &[0x30],
            &[0x30, 0x85],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x02, 0x30, 0x00],
            b"garbage",
        ] {
            assert_eq!(subject_common_name(b), None);
            assert_eq!(signature_hash(b), None);
            assert_eq!(tls_server_end_point(b), None);
        }
    }

    /// RFC 5929: the hash of the signature algorithm, SHA-256 up to SHA-256.
    #[test]
    fn end_point_hash_follows_the_signature_hash() {
        for (alg, len) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, 32),
            (&rcgen::PKCS_ECDSA_P384_SHA384, 48),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let der = cert.der().clone();
            let h = tls_server_end_point(der.as_ref()).expect("a known hash");
            assert_eq!(h.len(), len);
            if len == 32 {
                assert_eq!(h, sha2::Sha256::digest(der.as_ref()).to_vec());
            } else {
                assert_eq!(h, sha2::Sha384::digest(der.as_ref()).to_vec());
            }
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(tls_server_end_point(cert.der()), None);
        assert_eq!(tls_server_end_point(&[0x30, 0x85]), None);
    }
}
