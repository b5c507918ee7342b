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
//!
//! A client on the Unix socket matches `local` lines (PostgreSQL's host `[local]` in the
//! refusal texts). `peer` fails closed too: the OS user the socket's credentials name
//! (SO_PEERCRED) must be the user name, as PostgreSQL and PgBouncer check it, else
//! `Peer authentication failed for user "…"`; with it, no password is asked.

use crate::net::PeerAddr;

use crate::auth::hba::{HbaClient, HbaMethod, HbaRules};
use crate::auth::AuthMethod;
use crate::config::Config;
use crate::protocol::startup::StartupParams;

use super::SessionError;

/// What the HBA rules see of the client's connection.
#[derive(Debug, Clone, Copy)]
pub struct Transport<'a> {
    pub peer: PeerAddr,
    /// The client connection is encrypted with TLS.
    pub tls: bool,
    /// The common name of the client's verified TLS certificate, if it sent one.
    pub cert_common_name: Option<&'a str>,
    /// The OS user name of a client on the Unix socket, from its credentials.
    pub os_user: Option<&'a str>,
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
    decide(rules, transport, replication, database, user)
}

/// The rules' answer for one client (see [`method_for`]).
fn decide(
    rules: &HbaRules,
    transport: Transport<'_>,
    replication: bool,
    database: &str,
    user: &str,
) -> Result<AuthMethod, SessionError> {
    let client = HbaClient {
        addr: match transport.peer {
            PeerAddr::Tcp(a) => Some(a.ip()),
            PeerAddr::Unix { .. } => None,
        },
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
        // `peer` lines are `local` only (the parser refuses others).
        HbaMethod::Peer => match transport.os_user {
            Some(os) if transport.peer.is_unix() && os == user => Ok(AuthMethod::Trust),
            _ => Err(SessionError::HbaRefused(format!(
                "Peer authentication failed for user \"{user}\""
            ))),
        },
    }
}

/// The client address as PostgreSQL prints it (an IPv4-mapped IPv6 address as IPv4, the Unix
/// socket as `[local]`).
fn canonical_host(peer: PeerAddr) -> String {
    let PeerAddr::Tcp(peer) = peer else {
        return "[local]".into();
    };
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(peer.ip()),
        v4 => v4,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rules(text: &str) -> HbaRules {
        crate::auth::hba::parse(text.as_bytes(), Path::new("hba.conf"), &mut |_| {
            Err("no includes".into())
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn transport<'a>(peer: &str, tls: bool, cn: Option<&'a str>) -> Transport<'a> {
        Transport {
            peer: PeerAddr::Tcp(peer.parse().expect("test address")),
            tls,
            cert_common_name: cn,
            os_user: None,
        }
    }

    fn unix(os_user: Option<&str>) -> Transport<'_> {
        Transport {
            peer: PeerAddr::Unix {
                port: 6432,
                pid: Some(1),
            },
            tls: false,
            cert_common_name: None,
            os_user,
        }
    }

    /// `peer` accepts the OS user of the same name only; `local` lines match the Unix socket
    /// and nothing else.
    #[test]
    fn peer_on_the_unix_socket() {
        let r = rules("local all all peer\n");
        assert_eq!(
            decide(&r, unix(Some("alice")), false, "d", "alice").ok(),
            Some(AuthMethod::Trust)
        );
        assert_eq!(
            refusal(decide(&r, unix(Some("alice")), false, "d", "bob")),
            "Peer authentication failed for user \"bob\""
        );
        assert_eq!(
            refusal(decide(&r, unix(None), false, "d", "bob")),
            "Peer authentication failed for user \"bob\""
        );
        let r = rules("host all all all trust\n");
        assert_eq!(
            refusal(decide(&r, unix(Some("alice")), false, "d", "alice")),
            "no pg_hba.conf entry for host \"[local]\", user \"alice\", database \"d\", no encryption"
        );
    }

    fn refusal(r: Result<AuthMethod, SessionError>) -> String {
        match r {
            Err(SessionError::HbaRefused(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn methods_map_to_exchanges() {
        let r = rules(
            "host all t all trust\nhost all m all md5\nhost all p all password\nhost all s all scram-sha-256\n",
        );
        let plain = transport("10.0.0.1:5000", false, None);
        for (user, method) in [
            ("t", AuthMethod::Trust),
            ("m", AuthMethod::Md5),
            ("p", AuthMethod::Plain),
            ("s", AuthMethod::ScramSha256),
        ] {
            assert_eq!(decide(&r, plain, false, "db", user).ok(), Some(method));
        }
    }

    #[test]
    fn refusals_use_postgres_texts() {
        let r = rules("host all bad all reject\nhostssl all all all md5\n");
        let mapped = transport("[::ffff:127.0.0.1]:5000", false, None);
        assert_eq!(
            refusal(decide(&r, mapped, false, "db", "bad")),
            "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"bad\", database \"db\", no encryption"
        );
        assert_eq!(
            refusal(decide(&r, mapped, false, "db", "u")),
            "no pg_hba.conf entry for host \"127.0.0.1\", user \"u\", database \"db\", no encryption"
        );
        let tls = transport("[::1]:5000", true, None);
        assert_eq!(
            refusal(decide(&r, tls, false, "db", "bad")),
            "pg_hba.conf rejects connection for host \"::1\", user \"bad\", database \"db\", SSL encryption"
        );
        assert_eq!(
            decide(&r, tls, false, "db", "u").ok(),
            Some(AuthMethod::Md5)
        );
    }

    /// `cert` fails closed: TLS and a certificate naming the user, or no login.
    #[test]
    fn cert_needs_tls_and_the_users_certificate() {
        let r = rules("hostssl all all all cert\n");
        assert!(refusal(decide(
            &r,
            transport("1.2.3.4:1", false, None),
            false,
            "d",
            "u"
        ))
        .starts_with("no pg_hba.conf entry"));
        assert_eq!(
            refusal(decide(
                &r,
                transport("1.2.3.4:1", true, None),
                false,
                "d",
                "u"
            )),
            "connection requires a valid client certificate"
        );
        assert_eq!(
            refusal(decide(
                &r,
                transport("1.2.3.4:1", true, Some("v")),
                false,
                "d",
                "u"
            )),
            "certificate authentication failed for user \"u\""
        );
        assert_eq!(
            decide(&r, transport("1.2.3.4:1", true, Some("u")), false, "d", "u").ok(),
            Some(AuthMethod::Trust)
        );
    }

    #[test]
    fn local_and_replication_lines_do_not_match_tcp_logins() {
        let r = rules("local all all peer\nhost replication all all trust\n");
        let c = transport("127.0.0.1:1", false, None);
        assert!(refusal(decide(&r, c, false, "d", "u")).starts_with("no pg_hba.conf entry"));
        assert_eq!(decide(&r, c, true, "d", "u").ok(), Some(AuthMethod::Trust));
    }
}
