//! What a parsed HBA file is, and how a client is matched against it: the rules in file
//! order, each with its connection type, database and user lists, address and method, and
//! the first-match search that picks a connection's method. Kept apart from the parser
//! ([`mod@super::parse`]) because this is the part that runs on every login.

use std::net::IpAddr;
use std::path::PathBuf;

/// The connection type of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnType {
    /// Unix-domain socket.
    Local,
    /// TCP, with or without TLS.
    Host,
    /// TCP with TLS.
    HostSsl,
    /// TCP without TLS.
    HostNoSsl,
}

/// The method a matching line gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaMethod {
    Trust,
    Reject,
    /// md5, or SCRAM when the stored secret is SCRAM.
    Md5,
    /// Cleartext password (`password`).
    Password,
    ScramSha256,
    /// A TLS client certificate whose common name is the user name.
    Cert,
    /// The operating-system user of a Unix-socket client.
    Peer,
}

/// A database or user list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Names {
    pub(super) all: bool,
    /// `sameuser` (database field only).
    pub(super) same_user: bool,
    /// `replication` (database field only).
    pub(super) replication: bool,
    pub(super) names: Vec<Vec<u8>>,
}

impl Names {
    fn matches(&self, name: &[u8], same_user_pair: &[u8], replication: bool) -> bool {
        if replication {
            return self.replication;
        }
        self.all
            || (self.same_user && name == same_user_pair)
            || self.names.iter().any(|n| n == name)
    }
}

/// The address field of a `host*` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Address {
    All,
    Net { addr: IpAddr, mask: IpAddr },
}

impl Address {
    fn matches(&self, client: IpAddr) -> bool {
        match (*self, canonical(client)) {
            (Address::All, _) => true,
            (
                Address::Net {
                    addr: IpAddr::V4(a),
                    mask: IpAddr::V4(m),
                },
                IpAddr::V4(c),
            ) => (u32::from(a) ^ u32::from(c)) & u32::from(m) == 0,
            (
                Address::Net {
                    addr: IpAddr::V6(a),
                    mask: IpAddr::V6(m),
                },
                IpAddr::V6(c),
            ) => (u128::from(a) ^ u128::from(c)) & u128::from(m) == 0,
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRule {
    /// Where the line is, for logs.
    pub file: PathBuf,
    pub line: usize,
    pub conn_type: ConnType,
    pub(super) databases: Names,
    pub(super) users: Names,
    /// `None` for `local` lines.
    pub(super) address: Option<Address>,
    pub method: HbaMethod,
}

/// The client, as far as the rules look at it.
#[derive(Debug, Clone, Copy)]
pub struct HbaClient<'a> {
    /// `None`: a Unix-socket client.
    pub addr: Option<IpAddr>,
    /// The client connection is encrypted with TLS.
    pub tls: bool,
    /// A replication connection (`replication=` in the startup packet).
    pub replication: bool,
    pub database: &'a [u8],
    pub user: &'a [u8],
}

/// The parsed file: its rules in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HbaRules {
    pub(super) rules: Vec<HbaRule>,
}

impl HbaRules {
    /// The first rule that matches `client`, if any (none means: refuse the connection).
    pub fn evaluate(&self, client: &HbaClient<'_>) -> Option<&HbaRule> {
        self.rules.iter().find(|r| r.matches(client))
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[HbaRule] {
        &self.rules
    }
}

impl HbaRule {
    fn matches(&self, c: &HbaClient<'_>) -> bool {
        let address_ok = match (self.conn_type, c.addr) {
            (ConnType::Local, None) => true,
            (ConnType::Local, Some(_)) | (_, None) => false,
            (ConnType::HostSsl, Some(_)) if !c.tls => false,
            (ConnType::HostNoSsl, Some(_)) if c.tls => false,
            (_, Some(ip)) => self.address.is_some_and(|a| a.matches(ip)),
        };
        address_ok
            && self.databases.matches(c.database, c.user, c.replication)
            && self.users.matches(c.user, b"", false)
    }
}
