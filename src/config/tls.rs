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
