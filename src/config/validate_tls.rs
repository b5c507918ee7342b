//! The TLS keys of the configuration, checked and built: `client_tls_*` for the clients'
//! side, and `server_tls_*` (with an upstream URL's `sslmode`, `sslrootcert`, ... winning)
//! for the servers'. They read certificate and key files, so a missing or broken file stops
//! the start with an error naming its key; [`super::validate::build`] calls them, and
//! [`super::tls`] holds the settings they produce.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::cli::RunArgs;
use super::file::General;
use super::tls::{
    ClientTls, ClientTlsOptions, ServerTls, ServerTlsOptions, SslMode, TlsCiphers, TlsProtocols,
};
use super::upstream::UpstreamTls;
use super::ConfigError;

/// TLS to the servers as the file and flags give it (`server_tls_*`, a flag winning over the
/// file); a database's URL may change it (see [`ServerTlsSet::for_url`]).
pub(super) fn server_tls_options(
    g: &General,
    args: &RunArgs,
) -> Result<ServerTlsOptions, ConfigError> {
    let file_path = |flag: &Option<String>, file: &Option<String>| {
        flag.clone()
            .or_else(|| file.clone())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    };
    Ok(ServerTlsOptions {
        mode: match args.server_tls_sslmode.as_deref() {
            Some(m) => SslMode::parse(m).ok_or_else(|| {
                ConfigError::new(
                    "server_tls_sslmode",
                    format!("expected {}, got {m:?}", SslMode::NAMES),
                )
            })?,
            None => g.server_tls_sslmode.unwrap_or(SslMode::Prefer),
        },
        ca_file: file_path(&args.server_tls_ca_file, &g.server_tls_ca_file),
        cert_file: file_path(&args.server_tls_cert_file, &g.server_tls_cert_file),
        key_file: file_path(&args.server_tls_key_file, &g.server_tls_key_file),
        protocols: match args
            .server_tls_protocols
            .as_deref()
            .or(g.server_tls_protocols.as_deref())
        {
            Some(p) => {
                TlsProtocols::parse(p).map_err(|e| ConfigError::new("server_tls_protocols", e))?
            }
            None => TlsProtocols::default(),
        },
        channel_binding: Default::default(),
    })
}

/// The servers' TLS settings: each distinct one is built (its files read) once.
pub(super) struct ServerTlsSet {
    /// `server_tls_*`.
    base: ServerTlsOptions,
    built: BTreeMap<ServerTlsOptions, ServerTls>,
}

impl ServerTlsSet {
    pub(super) fn new(base: ServerTlsOptions) -> Self {
        ServerTlsSet {
            base,
            built: BTreeMap::new(),
        }
    }

    /// The TLS of a database: `server_tls_*` with its URL's parameters winning. An error names
    /// `url_key` when the URL set what failed, else `server_tls_sslmode`.
    pub(super) fn for_url(
        &mut self,
        url_key: &str,
        url: Option<&UpstreamTls>,
    ) -> Result<ServerTls, ConfigError> {
        let mut o = self.base.clone();
        let mut from_url = false;
        if let Some(u) = url {
            if let Some(m) = u.sslmode {
                o.mode = m;
                from_url = true;
            }
            if let Some(cb) = u.channel_binding {
                o.channel_binding = cb;
            }
            for (slot, v) in [
                (&mut o.ca_file, &u.sslrootcert),
                (&mut o.cert_file, &u.sslcert),
                (&mut o.key_file, &u.sslkey),
            ] {
                if let Some(v) = v {
                    *slot = Some(PathBuf::from(v));
                    from_url = true;
                }
            }
        }
        if let Some(t) = self.built.get(&o) {
            return Ok(t.clone());
        }
        let t = ServerTls::new(o.clone()).map_err(|e| {
            ConfigError::new(
                if from_url {
                    url_key
                } else {
                    "server_tls_sslmode"
                },
                e,
            )
        })?;
        self.built.insert(o, t.clone());
        Ok(t)
    }
}

/// TLS from clients (`client_tls_*`): the files are read here, so a missing or broken one stops
/// the start with an error naming its key.
pub(super) fn client_tls(
    g: &super::file::General,
    args: &RunArgs,
) -> Result<ClientTls, ConfigError> {
    // A flag (or its environment variable) wins over the file.
    let path = |flag: &Option<String>, file: &Option<String>| {
        flag.clone()
            .or_else(|| file.clone())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    };
    let o = ClientTlsOptions {
        mode: match args.client_tls_sslmode.as_deref() {
            Some(m) => SslMode::parse(m).ok_or_else(|| {
                ConfigError::new(
                    "client_tls_sslmode",
                    format!("expected {}, got {m:?}", SslMode::NAMES),
                )
            })?,
            None => g.client_tls_sslmode.unwrap_or(SslMode::Disable),
        },
        cert_file: path(&args.client_tls_cert_file, &g.client_tls_cert_file),
        key_file: path(&args.client_tls_key_file, &g.client_tls_key_file),
        ca_file: path(&args.client_tls_ca_file, &g.client_tls_ca_file),
        protocols: match args
            .client_tls_protocols
            .as_deref()
            .or(g.client_tls_protocols.as_deref())
        {
            Some(p) => {
                TlsProtocols::parse(p).map_err(|e| ConfigError::new("client_tls_protocols", e))?
            }
            None => TlsProtocols::default(),
        },
        ciphers: match g.client_tls_ciphers.as_deref() {
            Some(c) => {
                TlsCiphers::parse(c).map_err(|e| ConfigError::new("client_tls_ciphers", e))?
            }
            None => TlsCiphers::All,
        },
    };
    if o.mode == SslMode::Disable {
        return Ok(ClientTls::default());
    }
    let needs = |key: &'static str, given: bool, why: &str| {
        if given {
            Ok(())
        } else {
            Err(ConfigError::new(
                key,
                format!("is required with client_tls_sslmode = {}{why}", o.mode),
            ))
        }
    };
    needs("client_tls_cert_file", o.cert_file.is_some(), "")?;
    needs("client_tls_key_file", o.key_file.is_some(), "")?;
    if matches!(o.mode, SslMode::VerifyCa | SslMode::VerifyFull) {
        needs(
            "client_tls_ca_file",
            o.ca_file.is_some(),
            " (client certificates are checked against it)",
        )?;
    }
    let named = |p: &Option<PathBuf>, e: &str| {
        p.as_ref()
            .is_some_and(|p| e.contains(&p.display().to_string()))
    };
    ClientTls::new(o.clone()).map_err(|e| {
        let key = if named(&o.key_file, &e) && !named(&o.cert_file, &e) {
            "client_tls_key_file"
        } else if named(&o.ca_file, &e) {
            "client_tls_ca_file"
        } else if e.contains("client_tls_protocols") {
            "client_tls_protocols"
        } else {
            "client_tls_cert_file"
        };
        ConfigError::new(key, e)
    })
}
