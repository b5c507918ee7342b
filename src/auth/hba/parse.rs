//! The parser of an HBA file: records (with PostgreSQL's backslash continuation), tokens
//! (quotes, commas, `#` comments), the fields of a line, and `@file` includes. Whatever
//! pgheal does not support is refused here with the file and line, never skipped, so the
//! rules in [`super::rules`] are exactly what the file says.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::rules::{Address, ConnType, HbaMethod, HbaRule, HbaRules, Names};

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
