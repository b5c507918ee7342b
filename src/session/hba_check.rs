//! Which authentication method a client gets: `auth_type`, or with `auth_type = hba` the first
//! matching line of `auth_hba_file` (rules in [`crate::auth::hba`]).
//!
//! Kept apart from `run.rs` so the login sequence stays one call: `method_for` either names the
//! exchange to run or refuses the connection with PostgreSQL's own texts (SQLSTATE 28000):
//! `no pg_hba.conf entry for host "…", user "…", database "…", no encryption` when no line
//! matches, `pg_hba.conf rejects connection for …` for a `reject` line.
//!
//! The transport facts come from the caller: whether the client is on TLS and the common name
//! of its verified certificate. `cert` lines fail closed: without TLS and a certificate whose
//! common name is the user name, the connection is refused; with them, no password is asked.

use std::net::SocketAddr;

use crate::auth::hba::{HbaClient, HbaMethod};
use crate::auth::AuthMethod;
use crate::config::Config;
use crate::protocol::startup::StartupParams;

use super::SessionError;

/// What the HBA rules see of the client's connection.
#[derive(Debug, Clone, Copy)]
pub struct Transport<'a> {
    pub peer: SocketAddr,
    /// The client connection is encrypted with TLS.
    pub tls: bool,
    /// The common name of the client's verified TLS certificate, if it sent one.
    pub cert_common_name: Option<&'a str>,
}

/// The exchange to run with this client, or why it is refused.
pub fn method_for(
    cfg: &Config,
    transport: Transport<'_>,
    startup: &StartupParams,
    database: &str,
    user: &str,
) -> Result<AuthMethod, SessionError> {
    let Some(rules) = cfg.hba.as_deref() else {
        return Ok(cfg.auth_type);
    };
    let replication = startup
        .get("replication")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1"));
    let client = HbaClient {
        addr: Some(transport.peer.ip()),
        tls: transport.tls,
        replication,
        database: database.as_bytes(),
        user: user.as_bytes(),
    };
    let host = canonical_host(transport.peer);
    let encryption = if transport.tls {
        "SSL encryption"
    } else {
        "no encryption"
    };
    let Some(rule) = rules.evaluate(&client) else {
        return Err(SessionError::HbaRefused(format!(
            "no pg_hba.conf entry for host \"{host}\", user \"{user}\", database \"{database}\", {encryption}"
        )));
    };
    tracing::debug!(
        file = %rule.file.display(),
        line = rule.line,
        method = ?rule.method,
        "auth_hba_file line matched"
    );
    match rule.method {
        HbaMethod::Trust => Ok(AuthMethod::Trust),
        HbaMethod::Md5 => Ok(AuthMethod::Md5),
        HbaMethod::Password => Ok(AuthMethod::Plain),
        HbaMethod::ScramSha256 => Ok(AuthMethod::ScramSha256),
        HbaMethod::Reject => Err(SessionError::HbaRefused(format!(
            "pg_hba.conf rejects connection for host \"{host}\", user \"{user}\", database \"{database}\", {encryption}"
        ))),
        HbaMethod::Cert => match (transport.tls, transport.cert_common_name) {
            (true, Some(cn)) if cn == user => Ok(AuthMethod::Trust),
            (true, Some(_)) => Err(SessionError::HbaRefused(format!(
                "certificate authentication failed for user \"{user}\""
            ))),
            _ => Err(SessionError::HbaRefused(
                "connection requires a valid client certificate".into(),
            )),
        },
        // `peer` lines are `local` only, and pgheal has no Unix socket yet.
        HbaMethod::Peer => Err(SessionError::HbaRefused(format!(
            "peer authentication failed for user \"{user}\""
        ))),
    }
}

/// The client address as PostgreSQL prints it (an IPv4-mapped IPv6 address as IPv4).
fn canonical_host(peer: SocketAddr) -> std::net::IpAddr {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(peer.ip()),
        v4 => v4,
    }
}
