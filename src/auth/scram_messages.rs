//! Parsing of the two SCRAM messages a client sends (RFC 5802 section 7), kept apart from the
//! exchange in `scram.rs` so the grammar of untrusted bytes can be read and tested on its own.
//!
//! Parsing follows PostgreSQL's `auth-scram.c`: attribute values cannot contain `,`, so a
//! message is split on commas into `letter=value` attributes. Every failure is a fixed reason;
//! no client bytes are copied into errors.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::AuthError;

/// The channel-binding flag of the GS2 header (RFC 5802 section 7, `gs2-cbind-flag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CbindFlag<'a> {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not.
    Yes,
    /// `p=name`: the client binds to the channel with this binding type.
    Bind(&'a [u8]),
}

/// The parts of client-first-message the exchange needs.
pub(crate) struct ClientFirst<'a> {
    /// The GS2 header: `n,,`, `y,,` or `p=<type>,,` (authzid is refused).
    pub gs2_header: &'a [u8],
    pub cbind: CbindFlag<'a>,
    /// client-first-message-bare: everything after the GS2 header, part of AuthMessage.
    pub bare: &'a [u8],
    /// The client's nonce (printable ASCII without commas).
    pub nonce: &'a [u8],
}

/// The parts of client-final-message the exchange needs.
pub(crate) struct ClientFinal<'a> {
    /// The decoded `c=` attribute: the GS2 header repeated, then the channel-binding data
    /// when the header says `p=`.
    pub channel_binding: Vec<u8>,
    /// The `r=` attribute: client nonce followed by server nonce.
    pub nonce: &'a [u8],
    /// client-final-message-without-proof, part of AuthMessage.
    pub without_proof: &'a [u8],
    /// The decoded ClientProof.
    pub proof: [u8; 32],
}

fn malformed(reason: &'static str) -> AuthError {
    AuthError::Malformed(reason)
}

/// Rejects the NUL bytes PostgreSQL rejects (its messages are C strings).
fn check_no_nul(message: &[u8]) -> Result<(), AuthError> {
    if message.contains(&0) {
        return Err(malformed("SCRAM message contains a NUL byte"));
    }
    Ok(())
}

/// Splits one `letter=value` attribute.
fn attr(part: &[u8]) -> Result<(u8, &[u8]), AuthError> {
    match part {
        [name, b'=', value @ ..] if name.is_ascii_alphabetic() => Ok((*name, value)),
        _ => Err(malformed("SCRAM attribute expected")),
    }
}

/// Reads the attribute `name` from `part`, or fails with `reason`.
fn expect_attr<'a>(
    part: Option<&'a [u8]>,
    name: u8,
    reason: &'static str,
) -> Result<&'a [u8], AuthError> {
    match part.map(attr) {
        Some(Ok((found, value))) if found == name => Ok(value),
        _ => Err(malformed(reason)),
    }
}

/// RFC 5802 `printable`: `%x21-2B / %x2D-7E`, at least one.
fn is_printable_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Parses client-first-message (the SASLInitialResponse data).
pub(crate) fn parse_client_first(message: &[u8]) -> Result<ClientFirst<'_>, AuthError> {
    check_no_nul(message)?;
    // The flag runs to the first comma: `n`, `y` or `p=name` (name: letters, digits, `.`, `-`).
    let flag_len = message
        .iter()
        .position(|&b| b == b',')
        .ok_or(malformed("malformed SCRAM GS2 header"))?;
    let cbind = match &message[..flag_len] {
        b"n" => CbindFlag::No,
        b"y" => CbindFlag::Yes,
        [b'p', b'=', name @ ..]
            if !name.is_empty()
                && name
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
        {
            CbindFlag::Bind(name)
        }
        [] => return Err(malformed("empty SCRAM client-first-message")),
        _ => return Err(malformed("unexpected SCRAM channel-binding flag")),
    };
    match message.get(flag_len..flag_len + 2) {
        Some(b",,") => {}
        Some([b',', b'a']) => return Err(malformed("SCRAM authorization identity not supported")),
        _ => return Err(malformed("malformed SCRAM GS2 header")),
    }
    let (gs2_header, bare) = message.split_at(flag_len + 2);
    if bare.first() == Some(&b'm') {
        return Err(malformed("unsupported SCRAM extension required by client"));
    }
    let mut parts = bare.split(|&b| b == b',');
    // The user name is taken from the startup packet, as PostgreSQL does; libpq sends "n=".
    expect_attr(parts.next(), b'n', "SCRAM user name attribute expected")?;
    let nonce = expect_attr(parts.next(), b'r', "SCRAM nonce attribute expected")?;
    if !is_printable_nonce(nonce) {
        return Err(malformed("SCRAM client nonce is empty or not printable"));
    }
    // Optional extensions are ignored, but must be well-formed.
    for part in parts {
        attr(part)?;
    }
    Ok(ClientFirst {
        gs2_header,
        cbind,
        bare,
        nonce,
    })
}

/// Parses client-final-message (the SASLResponse data).
pub(crate) fn parse_client_final(message: &[u8]) -> Result<ClientFinal<'_>, AuthError> {
    check_no_nul(message)?;
    let parts: Vec<&[u8]> = message.split(|&b| b == b',').collect();
    let cbind = expect_attr(
        parts.first().copied(),
        b'c',
        "SCRAM channel-binding attribute expected",
    )?;
    let nonce = expect_attr(
        parts.get(1).copied(),
        b'r',
        "SCRAM nonce attribute expected",
    )?;
    // Extensions until the proof, which must be the last attribute.
    let mut proof = None;
    for (index, part) in parts.iter().enumerate().skip(2) {
        let (name, value) = attr(part)?;
        if name == b'p' {
            proof = Some((index, part.len(), value));
            break;
        }
    }
    let Some((proof_at, proof_part_len, proof_b64)) = proof else {
        return Err(malformed("SCRAM proof attribute expected"));
    };
    if proof_at + 1 != parts.len() {
        return Err(malformed("garbage at end of SCRAM client-final-message"));
    }
    // Everything before ",p=…" (the proof is the last attribute, after at least c= and r=).
    let without_proof = message
        .len()
        .checked_sub(proof_part_len + 1)
        .and_then(|end| message.get(..end))
        .ok_or(malformed("SCRAM proof attribute expected"))?;
    let channel_binding = BASE64
        .decode(cbind)
        .map_err(|_| malformed("SCRAM channel-binding attribute is not base64"))?;
    let proof = BASE64
        .decode(proof_b64)
        .map_err(|_| malformed("SCRAM proof is not base64"))?;
    let proof = <[u8; 32]>::try_from(proof.as_slice())
        .map_err(|_| malformed("SCRAM proof has the wrong length"))?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_first_ok() {
        let Ok(first) = parse_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL") else {
            panic!("valid message rejected");
        };
        assert_eq!(first.gs2_header, b"n,,");
        assert_eq!(first.bare, b"n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        assert_eq!(first.nonce, b"fyko+d2lbbFgONRv9qkxdawL");
        let Ok(first) = parse_client_first(b"y,,n=,r=abc,x=ext") else {
            panic!("valid message rejected");
        };
        assert_eq!(first.gs2_header, b"y,,");
        assert_eq!(first.nonce, b"abc");
    }

    #[test]
    fn client_first_errors() {
        let Ok(first) = parse_client_first(b"p=tls-server-end-point,,n=,r=abc") else {
            panic!("valid message rejected");
        };
        assert_eq!(first.gs2_header, b"p=tls-server-end-point,,");
        assert_eq!(first.cbind, CbindFlag::Bind(b"tls-server-end-point"));
        assert_eq!(first.bare, b"n=,r=abc");
        let bad: &[&[u8]] = &[
            b"p=,,n=,r=abc",
            b"p,,n=,r=abc",
            b"p=a b,,n=,r=abc",
            b"p=x,a=bob,n=,r=abc",
            b"",
            b"n",
            b"n,",
            b"x,,n=,r=abc",
            b"n,a=bob,n=,r=abc",
            b"n,,m=ext,n=,r=abc",
            b"n,,n=",
            b"n,,n=,",
            b"n,,n=,r=",
            b"n,,n=,r=a,b",
            b"n,,n=,r=a b",
            b"n,,n=,r=\x01",
            b"n,,r=abc",
            b"n,,n=,x=abc",
            b"n,,n=\0,r=abc",
            b"n,,n=,r=abc,",
            b"n,,n=,r=abc,1=x",
            b"n,,n=,r=\xff",
        ];
        for message in bad {
            assert!(
                matches!(parse_client_first(message), Err(AuthError::Malformed(_))),
                "accepted {:?}",
                String::from_utf8_lossy(message)
            );
        }
    }

    const PROOF: &str = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";

    #[test]
    fn client_final_ok() {
        let message = format!("c=biws,r=abcdef,x=ext,p={PROOF}");
        let Ok(fin) = parse_client_final(message.as_bytes()) else {
            panic!("valid message rejected");
        };
        assert_eq!(fin.channel_binding, b"n,,");
        assert_eq!(fin.nonce, b"abcdef");
        assert_eq!(fin.without_proof, b"c=biws,r=abcdef,x=ext");
    }

    #[test]
    fn client_final_errors() {
        let bad = [
            String::new(),
            "c=biws".into(),
            "c=biws,r=abc".into(),
            format!("r=abc,c=biws,p={PROOF}"),
            format!("c=biws,p={PROOF}"),
            format!("c=!!!!,r=abc,p={PROOF}"),
            "c=biws,r=abc,p=!!!!".into(),
            "c=biws,r=abc,p=".into(),
            "c=biws,r=abc,p=AAAA".into(),
            format!("c=biws,r=abc,p={PROOF},x=1"),
            format!("c=biws,r=abc,p={PROOF},"),
            format!("c=biws,r=abc,,p={PROOF}"),
            format!("c=biws,r=abc,p={PROOF}\0"),
        ];
        for message in bad {
            assert!(
                matches!(
                    parse_client_final(message.as_bytes()),
                    Err(AuthError::Malformed(_))
                ),
                "accepted {message:?}"
            );
        }
    }
}
