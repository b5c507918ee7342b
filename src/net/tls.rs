//! rustls configurations built from the TLS settings ([`crate::config::tls`]).
//!
//! The crypto provider is rustls' `ring` one rather than the default `aws-lc-rs`: aws-lc-rs
//! builds a large C/assembly library with cmake, which the project's machines and CI would
//! have to install; ring needs only the C compiler the build already has.
//!
//! Server certificates are checked as libpq does for each `sslmode`:
//! `prefer`/`allow`/`require` without a root certificate check nothing (TLS against passive
//! eavesdropping only); `require` with a root certificate, and `verify-ca`, check the chain;
//! `verify-full` also checks that the certificate names the host pgheal connects to.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::tls::{ServerTlsOptions, SslMode, TlsProtocols};

/// ALPN protocol of PostgreSQL 17's direct TLS, sent on every handshake as libpq 17 does.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(p: TlsProtocols) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut v = Vec::new();
    if p.tls13 {
        v.push(&rustls::version::TLS13);
    }
    if p.tls12 {
        v.push(&rustls::version::TLS12);
    }
    v
}

/// PEM certificates from a file; an error names the file (never its contents).
pub fn load_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {}", path.display()));
    }
    Ok(certs)
}

/// A PEM private key from a file; an error names the file (never its contents).
pub fn load_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

/// The rustls configuration for connections to a server, `None` for `disable`. Files are read
/// here, so a missing or broken one is an error at startup. Errors are one line, fit for a
/// [`crate::config::ConfigError`].
pub fn server_client_config(o: &ServerTlsOptions) -> Result<Option<Arc<ClientConfig>>, String> {
    if o.mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = provider();
    let roots = match &o.ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(path)? {
                roots
                    .add(c)
                    .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
            }
            Some(Arc::new(roots))
        }
        None if matches!(o.mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
            return Err(format!(
            "sslmode {} needs a root certificate (server_tls_ca_file, or sslrootcert in the URL)",
            o.mode
        ))
        }
        None => None,
    };
    // libpq: `require` checks the chain when a root certificate is given; `prefer` and
    // `allow` never check.
    let inner = match (&roots, o.mode) {
        (Some(roots), SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull) => Some(
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| format!("cannot use the root certificates: {e}"))?,
        ),
        _ => None,
    };
    let verifier = Arc::new(ServerVerifier {
        inner,
        check_name: o.mode == SslMode::VerifyFull,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions(o.protocols))
        .map_err(|e| format!("server_tls_protocols: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&o.cert_file, &o.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| {
                format!(
                    "the certificate {} and key {} do not fit together: {e}",
                    cert.display(),
                    key.display()
                )
            })?,
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err("a client certificate is given without its key".into()),
        (None, Some(_)) => return Err("a client key is given without its certificate".into()),
    };
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The server certificate check of one `sslmode` (see the module docs).
#[derive(Debug)]
struct ServerVerifier {
    /// Chain (and name) check; `None`: no check at all.
    inner: Option<Arc<WebPkiServerVerifier>>,
    /// `verify-full`: a certificate for another name is refused.
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        // webpki checks the name only after the chain, so a name error means the chain is
        // good: enough for verify-ca.
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
