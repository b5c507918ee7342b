//! `auth_hba_file`: PgBouncer's subset of PostgreSQL's `pg_hba.conf`, parsed and evaluated.
//!
//! With `auth_type = hba` the authentication method is chosen per connection: the first line
//! whose connection type, database, user and client address match gives the method; no matching
//! line refuses the connection, as in PostgreSQL. This lets an operator require TLS (`hostssl`)
//! or certificates on some networks and passwords or `trust` on others.
//!
//! This file is pure: no sockets and no file system. [`parse`] takes the file's bytes and a
//! closure that reads `@file` includes, so every rule can be tested from strings.
//!
//! What is accepted (PgBouncer's doc/config.md "HBA file format" and its src/hba.c), and what
//! is refused with the file and line — never silently skipped, because skipping a `reject`
//! line would let a later, more permissive line match:
//! - connection types `local`, `host`, `hostssl`, `hostnossl` (`local` is for Unix sockets,
//!   which pgheal does not listen on yet: such lines never match a TCP client);
//! - database: `all`, `sameuser`, `replication` (matches only replication connections, which
//!   pgheal does not accept: never matches), names, quoted names (a quoted keyword is a plain
//!   name), comma lists, `@file` includes; refused: `samerole`, `samegroup`, regular
//!   expressions (`/…`);
//! - user: `all`, names, quoted names, comma lists, `@file`; refused: `+group`, regular
//!   expressions;
//! - address: `all`, an IPv4 or IPv6 address with a CIDR length, or an address followed by a
//!   mask; refused: `samehost`, `samenet`, host names and domain suffixes;
//! - method: `trust`, `reject`, `md5` (SCRAM for users whose stored secret is SCRAM, as
//!   PgBouncer's `auth_type = md5`), `password`, `scram-sha-256`, `cert` (`hostssl` only, as
//!   PostgreSQL) and `peer` (`local` only); any other method, and any option (`map=`,
//!   `clientcert=`, …), is refused: pgheal has no `auth_ident_file`;
//! - `#` comments outside quotes, `""` inside quotes for a quote, and PostgreSQL's backslash
//!   line continuation.
//!
//! Names are bytes: the file is not required to be UTF-8 and names compare byte for byte.
//!
//! A client address that is an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a dual-stack
//! listener reports IPv4 clients) is matched as the IPv4 address it is.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// How deep `@file` includes may nest (a loop would otherwise never end).
const MAX_INCLUDE_DEPTH: usize = 10;

/// A line of the HBA file (or of an included file) that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {reason}", file.display())]
pub struct HbaError {
    /// The file the bad line is in (an `@file` include names itself).
    pub file: PathBuf,
    /// 1-based line number (the first line of a continued record).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

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
struct Names {
    all: bool,
    /// `sameuser` (database field only).
    same_user: bool,
    /// `replication` (database field only).
    replication: bool,
    names: Vec<Vec<u8>>,
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
enum Address {
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
    databases: Names,
    users: Names,
    /// `None` for `local` lines.
    address: Option<Address>,
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
    rules: Vec<HbaRule>,
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

/// A token of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Unquoted text.
    Word(Vec<u8>),
    /// Double-quoted text, quotes removed: never a keyword.
    Quoted(Vec<u8>),
    Comma,
}

/// Splits one record into tokens. `#` outside quotes ends the record.
fn tokenize(line: &[u8]) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if b == b'#' {
            break;
        } else if b == b',' {
            out.push(Token::Comma);
            i += 1;
        } else if b == b'"' {
            let mut text = Vec::new();
            i += 1;
            loop {
                match line.get(i) {
                    None => return Err("unterminated quoted name".into()),
                    Some(b'"') if line.get(i + 1) == Some(&b'"') => {
                        text.push(b'"');
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        text.push(c);
                        i += 1;
                    }
                }
            }
            out.push(Token::Quoted(text));
        } else {
            let start = i;
            while i < line.len() && !matches!(line[i], b',' | b'#' | b'"') {
                if line[i].is_ascii_whitespace() {
                    break;
                }
                i += 1;
            }
            out.push(Token::Word(line[start..i].to_vec()));
        }
    }
    Ok(out)
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The records of a file: (first line number, joined text), blank records included.
/// A line ending in a backslash continues on the next one (PostgreSQL).
fn records(text: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, Vec<u8>)> = None;
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let (line, continued) = match raw.strip_suffix(b"\\") {
            Some(head) => (head, true),
            None => (raw, false),
        };
        let rec = current.get_or_insert_with(|| (i + 1, Vec::new()));
        rec.1.extend_from_slice(line);
        if continued {
            rec.1.push(b' ');
        } else if let Some(done) = current.take() {
            out.push(done);
        }
    }
    out.extend(current);
    out
}

/// Reads an `@file` include; the error text is shown to the operator.
pub type ReadInclude<'a> = dyn FnMut(&Path) -> Result<Vec<u8>, String> + 'a;

struct Parser<'r, 'a> {
    read: &'r mut ReadInclude<'a>,
}

impl Parser<'_, '_> {
    /// Parses a database or user field starting at `tokens[*pos]`.
    fn names(
        &mut self,
        tokens: &[Token],
        pos: &mut usize,
        is_db: bool,
        here: &Path,
        depth: usize,
        into: &mut Names,
    ) -> Result<(), String> {
        let what = if is_db { "database" } else { "user" };
        loop {
            match tokens.get(*pos) {
                None => return Err(format!("missing {what} name")),
                Some(Token::Comma) => return Err(format!("empty {what} name in a list")),
                Some(Token::Quoted(n)) => into.names.push(n.clone()),
                Some(Token::Word(w)) => self.word(w, is_db, here, depth, into)?,
            }
            *pos += 1;
            if tokens.get(*pos) == Some(&Token::Comma) {
                *pos += 1;
            } else {
                return Ok(());
            }
        }
    }

    fn word(
        &mut self,
        w: &[u8],
        is_db: bool,
        here: &Path,
        depth: usize,
        into: &mut Names,
    ) -> Result<(), String> {
        match w {
            b"all" => into.all = true,
            b"sameuser" if is_db => into.same_user = true,
            b"replication" if is_db => into.replication = true,
            b"samerole" | b"samegroup" if is_db => {
                return Err(format!("{} is not supported (as in PgBouncer)", show(w)))
            }
            _ if w.starts_with(b"+") => {
                return Err(format!(
                    "group membership ({}) is not supported (as in PgBouncer)",
                    show(w)
                ))
            }
            _ if w.starts_with(b"/") => {
                return Err(format!(
                    "regular expressions ({}) are not supported",
                    show(w)
                ))
            }
            _ if w.starts_with(b"@") => self.include(&w[1..], is_db, here, depth, into)?,
            _ => into.names.push(w.to_vec()),
        }
        Ok(())
    }

    /// `@file`: names separated by commas or white space, on any number of lines, relative
    /// to the directory of the file that names it.
    fn include(
        &mut self,
        name: &[u8],
        is_db: bool,
        here: &Path,
        depth: usize,
        into: &mut Names,
    ) -> Result<(), String> {
        if name.is_empty() {
            return Err("@ without a file name".into());
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(format!(
                "@{}: includes nested more than {MAX_INCLUDE_DEPTH} deep",
                show(name)
            ));
        }
        let rel = PathBuf::from(show(name));
        let path = match here.parent() {
            Some(dir) if rel.is_relative() => dir.join(rel),
            _ => rel,
        };
        let text = (self.read)(&path).map_err(|e| format!("@{}: {e}", path.display()))?;
        for (line, rec) in records(&text) {
            let located = |reason: String| format!("{}:{line}: {reason}", path.display());
            let tokens = tokenize(&rec).map_err(located)?;
            let mut pos = 0;
            while pos < tokens.len() {
                if tokens[pos] == Token::Comma {
                    pos += 1;
                    continue;
                }
                self.names(&tokens, &mut pos, is_db, &path, depth + 1, into)
                    .map_err(located)?;
            }
        }
        Ok(())
    }

    fn line(
        &mut self,
        tokens: &[Token],
        file: &Path,
        line: usize,
    ) -> Result<Option<HbaRule>, String> {
        let Some(first) = tokens.first() else {
            return Ok(None);
        };
        let conn_type = match first {
            Token::Word(w) if w == b"local" => ConnType::Local,
            Token::Word(w) if w == b"host" => ConnType::Host,
            Token::Word(w) if w == b"hostssl" => ConnType::HostSsl,
            Token::Word(w) if w == b"hostnossl" => ConnType::HostNoSsl,
            Token::Word(w) if w.starts_with(b"hostgss") || w.starts_with(b"hostnogss") => {
                return Err(format!(
                    "connection type {} is not supported (local, host, hostssl, hostnossl are)",
                    show(w)
                ))
            }
            Token::Word(w) if w == b"include" || w.starts_with(b"include_") => {
                return Err(format!("{} is not supported", show(w)))
            }
            other => {
                return Err(format!(
                    "unknown connection type {} (local, host, hostssl, hostnossl)",
                    token_text(other)
                ))
            }
        };
        let mut pos = 1;
        let mut databases = Names::default();
        self.names(tokens, &mut pos, true, file, 0, &mut databases)?;
        let mut users = Names::default();
        self.names(tokens, &mut pos, false, file, 0, &mut users)?;
        let address = if conn_type == ConnType::Local {
            None
        } else {
            Some(address(tokens, &mut pos)?)
        };
        let method = match tokens.get(pos) {
            None => return Err("missing authentication method".into()),
            Some(Token::Word(w)) => match w.as_slice() {
                b"trust" => HbaMethod::Trust,
                b"reject" => HbaMethod::Reject,
                b"md5" => HbaMethod::Md5,
                b"password" => HbaMethod::Password,
                b"scram-sha-256" => HbaMethod::ScramSha256,
                b"cert" => HbaMethod::Cert,
                b"peer" => HbaMethod::Peer,
                other => return Err(format!(
                    "authentication method {} is not supported (trust, reject, md5, password, scram-sha-256, cert, peer are)",
                    show(other)
                )),
            },
            Some(other) => {
                return Err(format!(
                    "expected an authentication method, found {}",
                    token_text(other)
                ))
            }
        };
        pos += 1;
        if let Some(extra) = tokens.get(pos) {
            let text = token_text(extra);
            return Err(if text.starts_with("map=") {
                "map= needs auth_ident_file, which pgheal does not support".to_owned()
            } else {
                format!("authentication option {text} is not supported")
            });
        }
        match (method, conn_type) {
            (HbaMethod::Peer, t) if t != ConnType::Local => {
                return Err("peer authentication is only supported on local sockets".into())
            }
            (HbaMethod::Cert, t) if t != ConnType::HostSsl => {
                return Err("cert authentication is only supported on hostssl connections".into())
            }
            _ => {}
        }
        Ok(Some(HbaRule {
            file: file.to_owned(),
            line,
            conn_type,
            databases,
            users,
            address,
            method,
        }))
    }
}

fn token_text(t: &Token) -> String {
    match t {
        Token::Word(w) => show(w),
        Token::Quoted(q) => format!("\"{}\"", show(q)),
        Token::Comma => ",".into(),
    }
}

/// The address field: `all`, `addr/len`, or `addr mask`.
fn address(tokens: &[Token], pos: &mut usize) -> Result<Address, String> {
    let word = match tokens.get(*pos) {
        None => return Err("missing client address".into()),
        Some(Token::Word(w)) => show(w),
        Some(other) => {
            return Err(format!(
                "expected a client address, found {}",
                token_text(other)
            ))
        }
    };
    *pos += 1;
    if word == "all" {
        return Ok(Address::All);
    }
    if word == "samehost" || word == "samenet" {
        return Err(format!("{word} is not supported (as in PgBouncer)"));
    }
    let (ip_text, len) = match word.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (word.as_str(), None),
    };
    let addr: IpAddr = ip_text.parse().map_err(|_| {
        format!("invalid client address {word}: host names and domains are not supported, only IP addresses")
    })?;
    let mask = match len {
        Some(len) => {
            let bits: u32 = len
                .parse()
                .map_err(|_| format!("invalid CIDR mask in address {word}"))?;
            match addr {
                IpAddr::V4(_) if bits <= 32 => {
                    IpAddr::V4(u32::MAX.checked_shl(32 - bits).unwrap_or(0).into())
                }
                IpAddr::V6(_) if bits <= 128 => {
                    IpAddr::V6(u128::MAX.checked_shl(128 - bits).unwrap_or(0).into())
                }
                _ => return Err(format!("invalid CIDR mask in address {word}")),
            }
        }
        None => {
            let mask_text = match tokens.get(*pos) {
                Some(Token::Word(w)) => show(w),
                _ => {
                    return Err(format!(
                        "address {word} needs a CIDR length or a mask in the next field"
                    ))
                }
            };
            *pos += 1;
            let mask: IpAddr = mask_text
                .parse()
                .map_err(|_| format!("invalid IP mask {mask_text}"))?;
            if mask.is_ipv4() != addr.is_ipv4() {
                return Err(format!(
                    "IP address {word} and mask {mask_text} do not match in family"
                ));
            }
            mask
        }
    };
    Ok(Address::Net { addr, mask })
}

/// Parses an HBA file. `path` names the file in errors and anchors relative `@file` includes;
/// `read_include` reads those.
pub fn parse(
    text: &[u8],
    path: &Path,
    read_include: &mut ReadInclude<'_>,
) -> Result<HbaRules, HbaError> {
    let mut parser = Parser { read: read_include };
    let mut rules = Vec::new();
    for (line, rec) in records(text) {
        let err = |reason: String| HbaError {
            file: path.to_owned(),
            line,
            reason,
        };
        let tokens = tokenize(&rec).map_err(err)?;
        if let Some(rule) = parser.line(&tokens, path, line).map_err(err)? {
            rules.push(rule);
        }
    }
    Ok(HbaRules { rules })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn no_includes(p: &Path) -> Result<Vec<u8>, String> {
        Err(format!("unexpected include {}", p.display()))
    }

    fn rules(text: &str) -> HbaRules {
        parse(
            text.as_bytes(),
            Path::new("/etc/hba.conf"),
            &mut no_includes,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> HbaError {
        match parse(
            text.as_bytes(),
            Path::new("/etc/hba.conf"),
            &mut no_includes,
        ) {
            Ok(r) => panic!("parsed: {r:?}"),
            Err(e) => e,
        }
    }

    fn client<'a>(addr: &str, tls: bool, db: &'a str, user: &'a str) -> HbaClient<'a> {
        HbaClient {
            addr: Some(addr.parse().expect("test address")),
            tls,
            replication: false,
            database: db.as_bytes(),
            user: user.as_bytes(),
        }
    }

    /// The method and line of the first match.
    fn eval(r: &HbaRules, c: HbaClient<'_>) -> Option<(HbaMethod, usize)> {
        r.evaluate(&c).map(|rule| (rule.method, rule.line))
    }

    #[test]
    fn first_match_wins_and_no_match_is_none() {
        let r = rules(
            "# comment\n\nhost app alice 10.0.0.0/8 trust\nhost all all 10.1.0.0/16 reject\nhost all all 0.0.0.0/0 scram-sha-256 # tail\n",
        );
        assert_eq!(
            eval(&r, client("10.1.2.3", false, "app", "alice")),
            Some((HbaMethod::Trust, 3))
        );
        assert_eq!(
            eval(&r, client("10.1.2.3", false, "app", "bob")),
            Some((HbaMethod::Reject, 4))
        );
        assert_eq!(
            eval(&r, client("192.168.0.1", false, "x", "y")),
            Some((HbaMethod::ScramSha256, 5))
        );
        // 0.0.0.0/0 is IPv4 only.
        assert_eq!(eval(&r, client("::1", false, "x", "y")), None);
    }

    #[test]
    fn connection_types() {
        let r = rules(
            "local all all peer\nhostssl all tls 0.0.0.0/0 md5\nhostnossl all plain 0.0.0.0/0 password\nhost all all ::/0 md5\n",
        );
        assert_eq!(eval(&r, client("1.2.3.4", false, "d", "tls")), None);
        assert_eq!(
            eval(&r, client("1.2.3.4", true, "d", "tls")),
            Some((HbaMethod::Md5, 2))
        );
        assert_eq!(
            eval(&r, client("1.2.3.4", false, "d", "plain")),
            Some((HbaMethod::Password, 3))
        );
        assert_eq!(eval(&r, client("1.2.3.4", true, "d", "plain")), None);
        let unix = HbaClient {
            addr: None,
            tls: false,
            replication: false,
            database: b"d",
            user: b"u",
        };
        assert_eq!(eval(&r, unix), Some((HbaMethod::Peer, 1)));
        // A local line never matches TCP.
        assert_eq!(
            eval(&r, client("::1", false, "d", "u")),
            Some((HbaMethod::Md5, 4))
        );
    }

    #[test]
    fn addresses_cidr_mask_all_and_mapped() {
        let r = rules(
            "host all a 127.0.0.1/32 trust\nhost all b 192.168.1.0 255.255.255.0 trust\nhost all c ::1/128 trust\nhost all d all trust\nhost all e 192.168.1.77/24 trust\nhost all f fe80::/10 trust\nhost all g 10.0.0.0/0 trust\n",
        );
        let m = |a: &str, u: &str| eval(&r, client(a, false, "db", u)).map(|x| x.1);
        assert_eq!(m("127.0.0.1", "a"), Some(1));
        assert_eq!(m("127.0.0.2", "a"), None);
        assert_eq!(m("::ffff:127.0.0.1", "a"), Some(1));
        assert_eq!(m("::1", "a"), None);
        assert_eq!(m("192.168.1.200", "b"), Some(2));
        assert_eq!(m("192.168.2.1", "b"), None);
        assert_eq!(m("::1", "c"), Some(3));
        assert_eq!(m("127.0.0.1", "c"), None);
        assert_eq!(m("::1", "d"), Some(4));
        assert_eq!(m("8.8.8.8", "d"), Some(4));
        // Host bits in the address are ignored, as PostgreSQL does.
        assert_eq!(m("192.168.1.3", "e"), Some(5));
        assert_eq!(m("fe80::1234", "f"), Some(6));
        assert_eq!(m("fec0::1", "f"), None);
        assert_eq!(m("1.2.3.4", "g"), Some(7));
    }

    #[test]
    fn database_and_user_lists() {
        let r = rules(
            "host \"all\",sameuser all all trust\nhost a , b \"c d\",\"e\"\"f\" all md5\nhost replication all all password\n",
        );
        let m = |db: &str, u: &str| eval(&r, client("1.1.1.1", false, db, u)).map(|x| x.1);
        // A quoted keyword is a name.
        assert_eq!(m("all", "x"), Some(1));
        assert_eq!(m("bob", "bob"), Some(1));
        assert_eq!(m("bob", "alice"), None);
        assert_eq!(m("a", "c d"), Some(2));
        assert_eq!(m("b", "e\"f"), Some(2));
        assert_eq!(m("b", "c"), None);
        // `replication` matches only replication connections.
        assert_eq!(m("replication", "x"), None);
        let repl = HbaClient {
            replication: true,
            ..client("1.1.1.1", false, "whatever", "x")
        };
        assert_eq!(eval(&r, repl).map(|x| x.1), Some(3));
        // `all` does not match a replication connection, as in PostgreSQL.
        let r2 = rules("host all all all trust\n");
        assert_eq!(eval(&r2, repl), None);
    }

    #[test]
    fn names_are_bytes() {
        let text = b"host caf\xe9 \"\xff\" all trust\n";
        let r = parse(text, Path::new("h"), &mut no_includes).expect("bytes");
        let c = HbaClient {
            addr: Some("1.1.1.1".parse().expect("ip")),
            tls: false,
            replication: false,
            database: b"caf\xe9",
            user: b"\xff",
        };
        assert_eq!(eval(&r, c).map(|x| x.1), Some(1));
        let c2 = HbaClient {
            database: "café".as_bytes(),
            ..c
        };
        assert_eq!(eval(&r, c2), None);
    }

    #[test]
    fn continuation_and_crlf() {
        let r = rules("host all \\\n  alice \\\n 10.0.0.0/8 md5\r\nhost all all all reject\r\n");
        assert_eq!(
            eval(&r, client("10.9.9.9", false, "d", "alice")),
            Some((HbaMethod::Md5, 1))
        );
        assert_eq!(
            eval(&r, client("10.9.9.9", false, "d", "bob")),
            Some((HbaMethod::Reject, 4))
        );
        // A '#' inside quotes is part of the name.
        let r = rules("host \"a#b\" all all trust\n");
        assert_eq!(
            eval(&r, client("1.1.1.1", false, "a#b", "u")).map(|x| x.1),
            Some(1)
        );
    }

    #[test]
    fn includes_relative_nested_and_looping() {
        let files: HashMap<PathBuf, &str> = [
            ("/etc/pg/dbs.txt", "app1, app2\n# comment\napp3 @more.txt\n"),
            ("/etc/pg/more.txt", "app4\n"),
            ("/abs/users", "\"quoted user\" alice\n"),
            ("/etc/pg/loop", "@loop\n"),
            ("/etc/pg/bad", "+group\n"),
        ]
        .into_iter()
        .map(|(k, v)| (PathBuf::from(k), v))
        .collect();
        let mut read = |p: &Path| {
            files
                .get(p)
                .map(|t| t.as_bytes().to_vec())
                .ok_or_else(|| "No such file or directory".to_owned())
        };
        let r = parse(
            b"host @dbs.txt @/abs/users all trust\n",
            Path::new("/etc/pg/hba.conf"),
            &mut read,
        )
        .expect("parse");
        for db in ["app1", "app2", "app3", "app4"] {
            assert!(
                r.evaluate(&client("1.1.1.1", false, db, "alice")).is_some(),
                "{db}"
            );
        }
        assert!(r
            .evaluate(&client("1.1.1.1", false, "app4", "quoted user"))
            .is_some());
        assert!(r
            .evaluate(&client("1.1.1.1", false, "app5", "alice"))
            .is_none());
        let e = parse(
            b"\nhost @missing all all trust\n",
            Path::new("/etc/pg/hba.conf"),
            &mut read,
        )
        .expect_err("missing include");
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("/etc/pg/missing"), "{e}");
        let e = parse(
            b"host @loop all all trust\n",
            Path::new("/etc/pg/hba.conf"),
            &mut read,
        )
        .expect_err("loop");
        assert!(e.reason.contains("nested"), "{e}");
        let e = parse(
            b"host all @bad all trust\n",
            Path::new("/etc/pg/hba.conf"),
            &mut read,
        )
        .expect_err("group in include");
        assert!(e.reason.contains("/etc/pg/bad:1"), "{e}");
    }

    #[test]
    fn unsupported_is_an_error_with_line() {
        let cases = [
            ("host samerole all all trust", "samerole"),
            ("host samegroup all all trust", "samegroup"),
            ("host all +admins all trust", "group"),
            ("host all /^a all trust", "regular expressions"),
            ("host all all samehost trust", "samehost"),
            ("host all all samenet trust", "samenet"),
            ("host all all db.example.com trust", "host names"),
            ("host all all .example.com trust", "host names"),
            ("host all all 10.0.0.0/33 trust", "CIDR"),
            ("host all all ::/129 trust", "CIDR"),
            ("host all all 10.0.0.0/x trust", "CIDR"),
            ("host all all 10.0.0.0 trust", "mask"),
            ("host all all 10.0.0.0 ffff:: trust", "family"),
            ("host all all all gss", "gss"),
            ("host all all all ldap", "ldap"),
            ("host all all all ident", "ident"),
            ("host all all all pam", "pam"),
            ("host all all all", "missing authentication method"),
            ("host all all all md5 clientcert=verify-full", "clientcert"),
            ("hostssl all all all cert map=omicron", "auth_ident_file"),
            ("host all all all peer", "local sockets"),
            ("host all all all cert", "hostssl"),
            ("hostgssenc all all all trust", "hostgssenc"),
            ("include other.conf", "include"),
            ("hots all all all trust", "unknown connection type"),
            ("host \"all", "unterminated"),
            ("host all", "missing user"),
            ("host , all all trust", "empty database"),
            (
                "host all all \"10.0.0.0/8\" trust",
                "expected a client address",
            ),
            ("local all all 127.0.0.1/32 trust", "not supported"),
        ];
        for (line, expect) in cases {
            let e = error(&format!("# first\nhost all all all trust\n{line}\n"));
            assert_eq!(e.line, 3, "{line}: {e}");
            assert!(e.reason.contains(expect), "{line}: {e}");
            assert!(e.to_string().starts_with("/etc/hba.conf:3: "), "{e}");
        }
    }

    #[test]
    fn local_lines_have_no_address() {
        let r = rules("local all all trust\n");
        assert_eq!(r.rules().len(), 1);
        assert_eq!(r.rules()[0].conn_type, ConnType::Local);
        assert_eq!(eval(&r, client("127.0.0.1", false, "d", "u")), None);
    }

    #[test]
    fn every_method_parses() {
        let r = rules(
            "host all a all trust\nhost all b all reject\nhost all c all md5\nhost all d all password\nhost all e all scram-sha-256\nhostssl all f all cert\nlocal all g peer\n",
        );
        let methods: Vec<_> = r.rules().iter().map(|r| r.method).collect();
        assert_eq!(
            methods,
            [
                HbaMethod::Trust,
                HbaMethod::Reject,
                HbaMethod::Md5,
                HbaMethod::Password,
                HbaMethod::ScramSha256,
                HbaMethod::Cert,
                HbaMethod::Peer
            ]
        );
    }
}
