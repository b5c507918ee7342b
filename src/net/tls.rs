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
//!
//! For clients, pgheal is the TLS server ([`client_server_config`], `client_tls_*`), and offers
//! the ALPN protocol `postgresql` (PostgreSQL 17's direct TLS).
//!
//! Reload: both sides keep what their files hold behind a lock ([`ClientTlsState`] and the
//! server side's `ServerFiles`), swapped whole when the files change (a poll of modification
//! times and sizes, [`watch_tls_files`]) or on SIGHUP. A handshake takes the current version
//! once, so sessions already established are untouched; files that do not load are logged once
//! and the previous version stays in use.

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
        Some(path) => Some(load_roots(path)?),
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
    let check_chain = matches!(
        o.mode,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
    );
    let files = ServerFiles::new(o, check_chain, provider.clone(), roots)?;
    let verifier = Arc::new(ServerVerifier {
        files: files.clone(),
        check_name: o.mode == SslMode::VerifyFull,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions(o.protocols))
        .map_err(|e| format!("server_tls_protocols: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&o.cert_file, &o.key_file) {
        (Some(_), Some(_)) => builder.with_client_cert_resolver(Arc::new(ClientCert(files))),
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err("a client certificate is given without its key".into()),
        (None, Some(_)) => return Err("a client key is given without its certificate".into()),
    };
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(Arc::new(config)))
}

/// Root certificates from a PEM file; an error names the file.
fn load_roots(path: &std::path::Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots
            .add(c)
            .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// What the `server_tls_*` files hold at one moment.
struct ServerFilesLoaded {
    /// Chain (and name) check; `None`: no check at all.
    verifier: Option<Arc<WebPkiServerVerifier>>,
    /// pgheal's certificate for servers that ask for one.
    cert: Option<Arc<rustls::sign::CertifiedKey>>,
}

/// The files of one server TLS setting, reloadable like the client ones (see
/// [`reload_server_files`]): connections opened after a reload use the new files.
struct ServerFiles {
    ca_file: Option<std::path::PathBuf>,
    cert_file: Option<std::path::PathBuf>,
    key_file: Option<std::path::PathBuf>,
    check_chain: bool,
    provider: Arc<CryptoProvider>,
    current: std::sync::RwLock<(Arc<ServerFilesLoaded>, Stamp)>,
    failed: std::sync::Mutex<Option<Stamp>>,
}

impl std::fmt::Debug for ServerFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFiles")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

/// Every server TLS setting with files, for reloads.
static SERVER_FILES: std::sync::Mutex<Vec<std::sync::Weak<ServerFiles>>> =
    std::sync::Mutex::new(Vec::new());

impl ServerFiles {
    fn new(
        o: &ServerTlsOptions,
        check_chain: bool,
        provider: Arc<CryptoProvider>,
        roots: Option<Arc<RootCertStore>>,
    ) -> Result<Arc<ServerFiles>, String> {
        let files = ServerFiles {
            ca_file: o.ca_file.clone(),
            cert_file: o.cert_file.clone(),
            key_file: o.key_file.clone(),
            check_chain,
            provider,
            current: std::sync::RwLock::new((
                Arc::new(ServerFilesLoaded {
                    verifier: None,
                    cert: None,
                }),
                Vec::new(),
            )),
            failed: std::sync::Mutex::new(None),
        };
        let loaded = files.load(roots)?;
        let stamp = files.stamp();
        *files.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(loaded), stamp);
        let files = Arc::new(files);
        if files.ca_file.is_some() || files.cert_file.is_some() {
            let mut all = SERVER_FILES.lock().unwrap_or_else(|p| p.into_inner());
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(&files));
        }
        Ok(files)
    }

    fn stamp(&self) -> Stamp {
        stamp_of(&[&self.ca_file, &self.cert_file, &self.key_file])
    }

    fn load(&self, roots: Option<Arc<RootCertStore>>) -> Result<ServerFilesLoaded, String> {
        let roots = match (roots, &self.ca_file) {
            (Some(r), _) => Some(r),
            (None, Some(path)) => Some(load_roots(path)?),
            (None, None) => None,
        };
        let verifier = match roots {
            Some(roots) if self.check_chain => Some(
                WebPkiServerVerifier::builder_with_provider(roots, self.provider.clone())
                    .build()
                    .map_err(|e| format!("cannot use the root certificates: {e}"))?,
            ),
            _ => None,
        };
        let cert = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(Arc::new(
                rustls::sign::CertifiedKey::from_der(
                    load_certs(cert)?,
                    load_key(key)?,
                    &self.provider,
                )
                .map_err(|e| {
                    format!(
                        "the certificate {} and key {} do not fit together: {e}",
                        cert.display(),
                        key.display()
                    )
                })?,
            )),
            _ => None,
        };
        Ok(ServerFilesLoaded { verifier, cert })
    }

    fn current(&self) -> Arc<ServerFilesLoaded> {
        match self.current.read() {
            Ok(g) => g.0.clone(),
            Err(p) => p.into_inner().0.clone(),
        }
    }

    fn reload(&self, force: bool) -> Result<bool, String> {
        let now = self.stamp();
        let unchanged = self.current.read().unwrap_or_else(|p| p.into_inner()).1 == now;
        if unchanged && !force {
            return Ok(false);
        }
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if !force && failed.as_ref() == Some(&now) {
            return Ok(false);
        }
        match self.load(None) {
            Ok(loaded) => {
                *failed = None;
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(loaded), now);
                Ok(true)
            }
            Err(e) => {
                *failed = Some(now);
                Err(e)
            }
        }
    }
}

/// Reload the `server_tls_*` files that changed (`force`: all of them); each outcome is
/// logged. New server connections use the new files.
pub fn reload_server_files(force: bool) {
    let all: Vec<Arc<ServerFiles>> = SERVER_FILES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|w| w.upgrade())
        .collect();
    for f in all {
        match f.reload(force) {
            Ok(true) => tracing::info!("server TLS certificates reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the server TLS certificates; keeping the previous ones")
            }
        }
    }
}

/// pgheal's certificate for servers that ask for one, as currently loaded.
#[derive(Debug)]
struct ClientCert(Arc<ServerFiles>);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.current().cert.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.current().cert.is_some()
    }
}

/// The server certificate check of one `sslmode` (see the module docs).
#[derive(Debug)]
struct ServerVerifier {
    /// The files: chain (and name) check, if any.
    files: Arc<ServerFiles>,
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
        let loaded = self.files.current();
        let Some(inner) = &loaded.verifier else {
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

// ---------------------------------------------------------------------------------------------
// pgheal as the TLS server, for its clients (`client_tls_*`).

/// The TLS settings for clients as loaded from the files at one moment: a new handshake takes
/// the current one ([`ClientTlsState::current`]); a reload replaces it for later handshakes
/// and leaves established sessions alone.
pub struct ClientTlsLoaded {
    pub config: Arc<rustls::ServerConfig>,
    /// The `tls-server-end-point` channel-binding data of pgheal's certificate (RFC 5929): its
    /// hash with the certificate's signature hash (SHA-256 for MD5, SHA-1 and SHA-256).
    /// `None` when that hash is not known (Ed25519, RSA-PSS...): SCRAM-SHA-256-PLUS is not
    /// offered then, as PostgreSQL cannot offer it either.
    pub end_point: Option<Vec<u8>>,
}

/// What identifies a version of the files: modification time and length of each.
type Stamp = Vec<Option<(std::time::SystemTime, u64)>>;

/// The client TLS configuration of a running pgheal, reloadable.
pub struct ClientTlsState {
    options: crate::config::tls::ClientTlsOptions,
    current: std::sync::RwLock<(Arc<ClientTlsLoaded>, Stamp)>,
    /// The stamp of files that failed to load (logged once, not on every poll).
    failed: std::sync::Mutex<Option<Stamp>>,
}

impl ClientTlsState {
    pub fn new(options: crate::config::tls::ClientTlsOptions) -> Result<ClientTlsState, String> {
        let stamp = stamp(&options);
        let loaded = client_server_config(&options)?;
        Ok(ClientTlsState {
            options,
            current: std::sync::RwLock::new((Arc::new(loaded), stamp)),
            failed: std::sync::Mutex::new(None),
        })
    }

    /// The configuration for a new handshake.
    pub fn current(&self) -> Arc<ClientTlsLoaded> {
        match self.current.read() {
            Ok(g) => g.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// Rebuild from the files if they changed since the last load (`force`: even if they did
    /// not, as on SIGHUP). `Ok(true)`: a new configuration is in use. `Err`: the files are
    /// broken; the previous configuration stays in use. A broken version of the files is
    /// reported once (`Err`), then `Ok(false)` until the files change again.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let now = stamp(&self.options);
        let unchanged = match self.current.read() {
            Ok(g) => g.1 == now,
            Err(p) => p.into_inner().1 == now,
        };
        if unchanged && !force {
            return Ok(false);
        }
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if !force && failed.as_ref() == Some(&now) {
            return Ok(false);
        }
        match client_server_config(&self.options) {
            Ok(loaded) => {
                *failed = None;
                let mut g = self.current.write().unwrap_or_else(|p| p.into_inner());
                *g = (Arc::new(loaded), now);
                Ok(true)
            }
            Err(e) => {
                *failed = Some(now);
                Err(e)
            }
        }
    }
}

fn stamp(o: &crate::config::tls::ClientTlsOptions) -> Stamp {
    stamp_of(&[&o.cert_file, &o.key_file, &o.ca_file])
}

fn stamp_of(paths: &[&Option<std::path::PathBuf>]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p.as_ref()?).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// OpenSSL's name of a TLS 1.2 suite (see [`crate::config::tls::TLS12_SUITES`]).
fn openssl_name(s: rustls::CipherSuite) -> Option<&'static str> {
    use rustls::CipherSuite as C;
    Some(match s {
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => return None,
    })
}

/// Build the rustls server configuration for clients. Errors are one line naming the key or
/// file (never a file's contents).
pub fn client_server_config(
    o: &crate::config::tls::ClientTlsOptions,
) -> Result<ClientTlsLoaded, String> {
    use crate::config::tls::TlsCiphers;
    let cert = o.cert_file.as_ref().ok_or_else(|| {
        format!(
            "client_tls_cert_file is required with client_tls_sslmode = {}",
            o.mode
        )
    })?;
    let key = o.key_file.as_ref().ok_or_else(|| {
        format!(
            "client_tls_key_file is required with client_tls_sslmode = {}",
            o.mode
        )
    })?;
    let mut provider = rustls::crypto::ring::default_provider();
    if let TlsCiphers::Tls12(names) = &o.ciphers {
        provider.cipher_suites.retain(|s| match s {
            rustls::SupportedCipherSuite::Tls13(_) => true,
            rustls::SupportedCipherSuite::Tls12(_) => {
                openssl_name(s.suite()).is_some_and(|n| names.contains(&n))
            }
        });
    }
    let provider = Arc::new(provider);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(o.protocols))
        .map_err(|e| format!("client_tls_protocols / client_tls_ciphers: {e}"))?;
    let builder = if matches!(o.mode, SslMode::VerifyCa | SslMode::VerifyFull) {
        let ca = o.ca_file.as_ref().ok_or_else(|| {
            format!(
                "client_tls_ca_file is required with client_tls_sslmode = {} (client certificates are checked against it)",
                o.mode
            )
        })?;
        let mut roots = RootCertStore::empty();
        for c in load_certs(ca)? {
            roots
                .add(c)
                .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client_tls_ca_file {}: {e}", ca.display()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let certs = load_certs(cert)?;
    let end_point = super::x509::tls_server_end_point(certs[0].as_ref());
    let mut config = builder
        .with_single_cert(certs, load_key(key)?)
        .map_err(|e| {
            format!(
                "the certificate {} and key {} do not fit together: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(ClientTlsLoaded {
        config: Arc::new(config),
        end_point,
    })
}

/// Reload the client certificates (and the `server_tls_*` files, see [`reload_server_files`])
/// when their files change: a poll of the files' modification times and sizes every `every`. A broken new version is logged once and
/// the previous configuration stays in use.
pub async fn watch_tls_files(
    state: impl Fn() -> Option<Arc<ClientTlsState>>,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Some(state) = state() {
            log_reload(&state, false);
        }
        reload_server_files(false);
    }
}

/// Reload and log the outcome (`force`: even if the files look unchanged, as on SIGHUP).
pub fn log_reload(state: &ClientTlsState, force: bool) {
    match state.reload(force) {
        Ok(true) => tracing::info!("client TLS certificates reloaded"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot reload the client TLS certificates; keeping the previous ones")
        }
    }
}
