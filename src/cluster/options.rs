//! What a caller may choose about a throwaway cluster: the superuser's password, how TCP
//! clients authenticate, `max_connections` and extra `postgresql.conf` settings. Kept apart
//! from [`super::TempCluster`] so the choices, and the check that they can be written to
//! `postgresql.conf` safely, read on their own.

use super::ClusterError;

#[cfg(doc)]
use super::TempCluster;

/// How TCP connections to 127.0.0.1 authenticate (the `pg_hba.conf` method), and therefore also
/// how passwords are stored (`password_encryption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AuthMethod {
    /// `scram-sha-256`, PostgreSQL's default since 14.
    #[default]
    ScramSha256,
    /// `md5`, still common on older deployments (passwords stored as md5 hashes).
    Md5,
    /// `trust`: no password asked.
    Trust,
}

impl AuthMethod {
    /// The `pg_hba.conf` method name.
    pub fn hba_method(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Trust => "trust",
        }
    }

    /// The `password_encryption` used for passwords set on this cluster.
    pub fn password_encryption(self) -> &'static str {
        match self {
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 | AuthMethod::Trust => "scram-sha-256",
        }
    }
}

/// Settings for [`TempCluster::start_with`]. Use `..Default::default()` for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Password of the `postgres` superuser. Default `"postgres"`.
    pub superuser_password: String,
    /// Authentication of TCP connections to 127.0.0.1. Default [`AuthMethod::ScramSha256`].
    pub auth_method: AuthMethod,
    /// `max_connections`. Default 100.
    pub max_connections: u32,
    /// Extra `postgresql.conf` settings, written after (and so overriding) the cluster's own.
    /// Values are single-quoted for you unless already quoted: `("ssl", "on")`,
    /// `("log_statement", "all")`, `("shared_buffers", "16MB")`.
    pub extra_conf: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            superuser_password: "postgres".to_string(),
            auth_method: AuthMethod::ScramSha256,
            max_connections: 100,
            extra_conf: Vec::new(),
        }
    }
}

/// Rejects option values that cannot be written to `postgresql.conf` safely.
pub(super) fn validate(opts: &ClusterOptions) -> Result<(), ClusterError> {
    if opts.superuser_password.is_empty() || opts.superuser_password.contains(['\n', '\r']) {
        return Err(ClusterError::InvalidOption(
            "superuser_password must be non-empty and on one line (initdb --pwfile)".to_string(),
        ));
    }
    if opts.max_connections == 0 {
        return Err(ClusterError::InvalidOption(
            "max_connections must be at least 1".to_string(),
        ));
    }
    for (key, value) in &opts.extra_conf {
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !key_ok {
            return Err(ClusterError::InvalidOption(format!(
                "extra_conf key {key:?} is not a setting name"
            )));
        }
        if value.contains(['\n', '\r', '\0']) {
            return Err(ClusterError::InvalidOption(format!(
                "extra_conf value of {key} must be on one line"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unsafe_options() {
        let mut opts = ClusterOptions::default();
        opts.extra_conf
            .push(("ssl\nfsync".to_string(), "on".to_string()));
        assert!(validate(&opts).is_err());
        let opts = ClusterOptions {
            superuser_password: String::new(),
            ..ClusterOptions::default()
        };
        assert!(validate(&opts).is_err());
        assert!(validate(&ClusterOptions::default()).is_ok());
    }
}
