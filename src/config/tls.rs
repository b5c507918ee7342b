//! TLS settings as written in the configuration (plain data; the rustls configurations are
//! built from them by [`crate::net::tls`]).
//!
//! The modes are libpq's `sslmode` values, which PgBouncer's `server_tls_sslmode` and
//! `client_tls_sslmode` reuse.

use std::path::PathBuf;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain text only.
    Disable,
    /// libpq: plain first, TLS if the server insists. pgheal treats it as `prefer` (TLS when
    /// the server offers it), which is never weaker.
    Allow,
    /// TLS when the server offers it, else plain text. No certificate check.
    Prefer,
    /// TLS or nothing. The certificate is checked only when a root certificate is given
    /// (libpq's rule: `require` with `sslrootcert` behaves like `verify-ca`).
    Require,
    /// TLS, and the server's certificate chain must lead to the root certificate.
    VerifyCa,
    /// `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    pub const NAMES: &'static str = "disable, allow, prefer, require, verify-ca or verify-full";

    pub fn parse(s: &str) -> Option<SslMode> {
        Some(match s.to_ascii_lowercase().as_str() {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// Whether a server that answers `N` to SSLRequest is refused.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TLS versions allowed (PgBouncer's `*_tls_protocols`; rustls speaks only 1.2 and 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TlsProtocols {
    pub tls12: bool,
    pub tls13: bool,
}

impl Default for TlsProtocols {
    /// PgBouncer's `secure`: TLS 1.2 and 1.3.
    fn default() -> Self {
        TlsProtocols {
            tls12: true,
            tls13: true,
        }
    }
}

impl TlsProtocols {
    /// PgBouncer's syntax: a comma- or space-separated list of `tlsv1.0`, `tlsv1.1`,
    /// `tlsv1.2`, `tlsv1.3`, `all`, `secure`, `legacy`. Versions older than 1.2 are refused:
    /// rustls does not implement them.
    pub fn parse(s: &str) -> Result<TlsProtocols, String> {
        let mut p = TlsProtocols {
            tls12: false,
            tls13: false,
        };
        for word in s
            .split(|c: char| c == ',' || c == ':' || c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            match word.to_ascii_lowercase().as_str() {
                "tlsv1.2" => p.tls12 = true,
                "tlsv1.3" => p.tls13 = true,
                "secure" | "all" | "legacy" | "default" => {
                    p.tls12 = true;
                    p.tls13 = true;
                }
                "tlsv1.0" | "tlsv1.1" => {
                    return Err(format!(
                        "{word} is not supported (pgheal speaks TLS 1.2 and 1.3 only)"
                    ))
                }
                other => {
                    return Err(format!(
                        "unknown protocol {other:?} (expected tlsv1.2, tlsv1.3, secure, all)"
                    ))
                }
            }
        }
        if !p.tls12 && !p.tls13 {
            return Err("no protocol given".into());
        }
        Ok(p)
    }
}

/// libpq's `channel_binding` for the SCRAM login to the server (the upstream URL's parameter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelBinding {
    /// Never bind (announce `n`).
    Disable,
    /// Bind when the connection is TLS and the server offers SCRAM-SHA-256-PLUS.
    #[default]
    Prefer,
    /// Refuse a login that is not SCRAM-SHA-256-PLUS over TLS.
    Require,
}

impl ChannelBinding {
    pub const NAMES: &'static str = "disable, prefer or require";

    pub fn parse(s: &str) -> Option<ChannelBinding> {
        match s {
            "disable" => Some(ChannelBinding::Disable),
            "prefer" => Some(ChannelBinding::Prefer),
            "require" => Some(ChannelBinding::Require),
            _ => None,
        }
    }
}

/// How pgheal talks TLS to one database's server: `server_tls_*`, with the upstream URL's
/// `sslmode`, `sslrootcert`, `sslcert`, `sslkey` winning over them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTlsOptions {
    pub mode: SslMode,
    /// Root certificates (PEM) the server's certificate must lead to.
    pub ca_file: Option<PathBuf>,
    /// pgheal's own certificate and key (PEM), for servers that ask for one (`cert` auth).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub protocols: TlsProtocols,
    /// SCRAM channel binding to the server (`channel_binding` in the upstream URL).
    pub channel_binding: ChannelBinding,
}

impl Default for ServerTlsOptions {
    /// PgBouncer's and libpq's default: `prefer`.
    fn default() -> Self {
        ServerTlsOptions {
            mode: SslMode::Prefer,
            ca_file: None,
            cert_file: None,
            key_file: None,
            protocols: TlsProtocols::default(),
            channel_binding: ChannelBinding::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_protocols() {
        assert_eq!(SslMode::parse("Verify-Full"), Some(SslMode::VerifyFull));
        assert_eq!(SslMode::parse("on"), None);
        assert!(SslMode::Require.requires_tls() && !SslMode::Prefer.requires_tls());
        assert_eq!(
            TlsProtocols::parse("tlsv1.3").unwrap(),
            TlsProtocols {
                tls12: false,
                tls13: true
            }
        );
        assert_eq!(
            TlsProtocols::parse("secure").unwrap(),
            TlsProtocols::default()
        );
        assert!(TlsProtocols::parse("tlsv1.1").is_err());
        assert!(TlsProtocols::parse("sslv3").is_err());
        assert!(TlsProtocols::parse("").is_err());
    }

    #[test]
    fn ciphers() {
        for all in [
            "default",
            "secure",
            "fast",
            "normal",
            "all",
            "HIGH:!aNULL:!MD5",
            "",
        ] {
            assert_eq!(TlsCiphers::parse(all), Ok(TlsCiphers::All), "{all}");
        }
        assert_eq!(
            TlsCiphers::parse("ecdhe-rsa-aes256-gcm-sha384:TLS_AES_128_GCM_SHA256"),
            Ok(TlsCiphers::Tls12(vec!["ECDHE-RSA-AES256-GCM-SHA384"]))
        );
        let e = TlsCiphers::parse("AES256-SHA").unwrap_err();
        assert!(e.contains("AES256-SHA"), "{e}");
    }
}

/// [`ServerTlsOptions`] with its rustls configuration built (files read) at startup.
#[derive(Clone)]
pub struct ServerTls {
    pub options: ServerTlsOptions,
    /// `None` for `disable`.
    pub config: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl ServerTls {
    /// Read the files and build the configuration; the error is one line naming the problem.
    pub fn new(options: ServerTlsOptions) -> Result<ServerTls, String> {
        let config = crate::net::tls::server_client_config(&options)?;
        Ok(ServerTls { options, config })
    }

    /// Plain text only.
    pub fn disabled() -> ServerTls {
        ServerTls {
            options: ServerTlsOptions {
                mode: SslMode::Disable,
                ..ServerTlsOptions::default()
            },
            config: None,
        }
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.options == other.options
    }
}

impl Eq for ServerTls {}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.options.fmt(f)
    }
}

/// TLS versions and cipher suites offered to clients: PgBouncer's `client_tls_ciphers`.
///
/// PgBouncer passes an OpenSSL cipher string; rustls offers only AEAD suites with forward
/// secrecy (every one of them is in OpenSSL's `HIGH`). So PgBouncer's shortcuts (`default`,
/// `secure`, `fast`, `normal`, `compat`, `legacy`, `insecure`, `all`) and OpenSSL class words
/// (`HIGH`, `ALL`, `DEFAULT`, `ECDHE`, `AESGCM`, ...) all mean "every rustls suite"; exclusions
/// (`!aNULL`, `-RC4`, ...) exclude nothing rustls has; an explicit OpenSSL suite name selects
/// that TLS 1.2 suite (TLS 1.3 suites are always on, as `client_tls13_ciphers` is not read);
/// any other word is a configuration error naming it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsCiphers {
    /// Every suite rustls offers.
    All,
    /// These TLS 1.2 suites (OpenSSL names), with every TLS 1.3 suite.
    Tls12(Vec<&'static str>),
}

/// OpenSSL names of the TLS 1.2 suites rustls (ring provider) implements.
pub const TLS12_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

impl TlsCiphers {
    pub fn parse(s: &str) -> Result<TlsCiphers, String> {
        const CLASSES: &[&str] = &[
            "default", "secure", "fast", "normal", "compat", "legacy", "insecure", "all", "high",
            "medium", "ecdhe", "eecdh", "kecdhe", "aesgcm", "aes", "chacha20", "aead", "tlsv1.2",
            "sha256", "sha384", "ecdsa", "aecdsa", "rsa", "arsa",
        ];
        let mut named = Vec::new();
        let mut all = false;
        for word in s
            .split(|c: char| c == ':' || c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            if word.starts_with(['!', '-', '+', '@']) {
                continue;
            }
            let lower = word.to_ascii_lowercase();
            if CLASSES.contains(&lower.as_str()) {
                all = true;
            } else if let Some(n) = TLS12_SUITES.iter().find(|n| n.eq_ignore_ascii_case(word)) {
                named.push(*n);
            } else if lower.starts_with("tls_") {
                // A TLS 1.3 suite name: always offered.
            } else {
                return Err(format!(
                    "unknown cipher {word:?}: pgheal offers rustls' suites (TLS 1.3, and the TLS 1.2 ones {}); use default, secure, fast, normal or all, or some of those names",
                    TLS12_SUITES.join(", ")
                ));
            }
        }
        if all || named.is_empty() {
            return Ok(TlsCiphers::All);
        }
        Ok(TlsCiphers::Tls12(named))
    }
}

/// How pgheal talks TLS to its clients: `client_tls_*` (PgBouncer's meanings).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTlsOptions {
    /// `disable`: SSLRequest gets `N`; `allow`/`prefer`: TLS when the client asks;
    /// `require`: plain clients are refused; `verify-ca`/`verify-full` (the same, as in
    /// PgBouncer): TLS with a client certificate valid for `ca_file`.
    pub mode: SslMode,
    /// pgheal's certificate and key (PEM); required unless `disable`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Root certificates (PEM) client certificates must lead to (verify-ca/verify-full).
    pub ca_file: Option<PathBuf>,
    pub protocols: TlsProtocols,
    pub ciphers: TlsCiphers,
}

impl Default for ClientTlsOptions {
    /// PgBouncer's default: `disable`.
    fn default() -> Self {
        ClientTlsOptions {
            mode: SslMode::Disable,
            cert_file: None,
            key_file: None,
            ca_file: None,
            protocols: TlsProtocols::default(),
            ciphers: TlsCiphers::All,
        }
    }
}

/// [`ClientTlsOptions`] with the rustls server configuration built (files read) at startup,
/// and rebuilt when the files change ([`crate::net::tls::ClientTlsState::reload`]).
#[derive(Clone, Default)]
pub struct ClientTls {
    pub options: ClientTlsOptions,
    /// `None` for `disable`.
    pub state: Option<std::sync::Arc<crate::net::tls::ClientTlsState>>,
}

impl ClientTls {
    /// Read the files and build the configuration; the error is one line naming the problem.
    pub fn new(options: ClientTlsOptions) -> Result<ClientTls, String> {
        if options.mode == SslMode::Disable {
            return Ok(ClientTls {
                options,
                state: None,
            });
        }
        let state = crate::net::tls::ClientTlsState::new(options.clone())?;
        Ok(ClientTls {
            options,
            state: Some(std::sync::Arc::new(state)),
        })
    }

    /// Whether a client without TLS is refused.
    pub fn requires_tls(&self) -> bool {
        self.options.mode.requires_tls()
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.options.fmt(f)
    }
}
