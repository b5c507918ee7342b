//! The LISTEN and UNLISTEN statements pgheal answers itself in transaction pooling (see
//! [`super::listen`]), read from a simple query's text. Pure: bytes in, statements out.
//!
//! Only a query made of nothing but `LISTEN channel`, `UNLISTEN channel` and `UNLISTEN *`
//! statements (one or more, separated by `;`) is recognised; anything else (a comment, another
//! statement in the same query, `U&"..."` identifiers) is left to the server, where the
//! session-state check of [`super::pin`] notices a LISTEN that took effect on a pooled
//! connection. Channel names follow PostgreSQL's identifier rules
//! (<https://www.postgresql.org/docs/current/sql-syntax-lexical.html#SQL-SYNTAX-IDENTIFIERS>):
//! unquoted names are folded to lower case (ASCII letters only, as PostgreSQL does for
//! multibyte encodings), quoted names keep their case and `""` stands for `"`, and names longer
//! than 63 bytes are truncated at a character boundary.

use crate::protocol::Frame;

/// A Query message's SQL text as bytes, without decoding it (its terminating NUL dropped).
pub fn query_text(f: &Frame) -> &[u8] {
    let body = f.body();
    body.strip_suffix(&[0]).unwrap_or(body)
}

/// One statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenOp {
    Listen(String),
    Unlisten(String),
    UnlistenAll,
}

impl ListenOp {
    /// The command tag PostgreSQL answers it with.
    pub fn tag(&self) -> &'static str {
        match self {
            ListenOp::Listen(_) => "LISTEN",
            ListenOp::Unlisten(_) | ListenOp::UnlistenAll => "UNLISTEN",
        }
    }
}

/// PostgreSQL's NAMEDATALEN - 1: identifiers are truncated to this many bytes.
const MAX_IDENT: usize = 63;

/// Whether `sql` may be a LISTEN/UNLISTEN-only query or `DISCARD ALL` (its first word starts
/// like one): the cheap test every simple query goes through.
pub fn may_be_listen(sql: &[u8]) -> bool {
    let mut p = Scan { sql, at: 0 };
    p.skip_space();
    matches!(p.peek(), Some(b'l' | b'L' | b'u' | b'U' | b'd' | b'D'))
}

/// The statements of `sql` when it holds only LISTEN/UNLISTEN statements; `None` otherwise.
pub fn listen_ops(sql: &[u8]) -> Option<Vec<ListenOp>> {
    let mut p = Scan { sql, at: 0 };
    p.skip_space();
    if !matches!(p.peek(), Some(b'l' | b'L' | b'u' | b'U')) {
        return None;
    }
    let mut ops = Vec::new();
    loop {
        p.skip_space();
        if p.peek().is_none() {
            break;
        }
        let word = p.word()?;
        let op = if word.eq_ignore_ascii_case(b"listen") {
            ListenOp::Listen(p.ident()?)
        } else if word.eq_ignore_ascii_case(b"unlisten") {
            p.skip_space();
            if p.peek() == Some(b'*') {
                p.at += 1;
                ListenOp::UnlistenAll
            } else {
                ListenOp::Unlisten(p.ident()?)
            }
        } else {
            return None;
        };
        ops.push(op);
        p.skip_space();
        match p.peek() {
            None => break,
            Some(b';') => {
                p.at += 1;
                // Empty statements (";;") are allowed, as PostgreSQL allows them.
                while {
                    p.skip_space();
                    p.peek() == Some(b';')
                } {
                    p.at += 1;
                }
            }
            Some(_) => return None,
        }
    }
    (!ops.is_empty()).then_some(ops)
}

/// Whether `sql` is `DISCARD ALL` alone (which, among other things, unlistens everything).
pub fn is_discard_all(sql: &[u8]) -> bool {
    let mut p = Scan { sql, at: 0 };
    p.skip_space();
    if !matches!(p.peek(), Some(b'd' | b'D')) {
        return false;
    }
    let ok = |w: Option<&[u8]>, want: &[u8]| w.is_some_and(|w| w.eq_ignore_ascii_case(want));
    if !ok(p.word(), b"discard") {
        return false;
    }
    p.skip_space();
    if !ok(p.word(), b"all") {
        return false;
    }
    p.skip_space();
    while p.peek() == Some(b';') {
        p.at += 1;
        p.skip_space();
    }
    p.peek().is_none()
}

struct Scan<'a> {
    sql: &'a [u8],
    at: usize,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn ident_cont(b: u8) -> bool {
    ident_start(b) || b.is_ascii_digit() || b == b'$'
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.sql.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.at += 1;
        }
    }

    /// An unquoted word, as written.
    fn word(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        if !self.peek().is_some_and(ident_start) {
            return None;
        }
        while self.peek().is_some_and(ident_cont) {
            self.at += 1;
        }
        Some(&self.sql[start..self.at])
    }

    /// An identifier (after optional white space), as PostgreSQL reads it.
    fn ident(&mut self) -> Option<String> {
        self.skip_space();
        let name = if self.peek() == Some(b'"') {
            self.at += 1;
            let mut name = Vec::new();
            loop {
                match self.peek()? {
                    b'"' if self.sql.get(self.at + 1) == Some(&b'"') => {
                        name.push(b'"');
                        self.at += 2;
                    }
                    b'"' => {
                        self.at += 1;
                        break;
                    }
                    b => {
                        name.push(b);
                        self.at += 1;
                    }
                }
            }
            if name.is_empty() {
                // PostgreSQL: zero-length delimited identifier. Its error, not ours.
                return None;
            }
            name
        } else {
            self.word()?.to_ascii_lowercase()
        };
        // "U&" identifiers: the word scan stops before '&'; make sure no such thing follows.
        if self.peek() == Some(b'&') {
            return None;
        }
        let name = String::from_utf8(name).ok()?;
        Some(truncate(name))
    }
}

/// Truncate to [`MAX_IDENT`] bytes at a character boundary, as PostgreSQL does.
fn truncate(mut name: String) -> String {
    if name.len() > MAX_IDENT {
        let mut end = MAX_IDENT;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use ListenOp::*;

    fn ops(sql: &str) -> Option<Vec<ListenOp>> {
        listen_ops(sql.as_bytes())
    }

    #[test]
    fn recognises_listen_statements() {
        assert_eq!(ops("LISTEN jobs"), Some(vec![Listen("jobs".into())]));
        assert_eq!(ops("  listen Jobs ;"), Some(vec![Listen("jobs".into())]));
        assert_eq!(
            ops("LISTEN \"Jobs\"\"x\""),
            Some(vec![Listen("Jobs\"x".into())])
        );
        assert_eq!(ops("listen\"a b\";"), Some(vec![Listen("a b".into())]));
        assert_eq!(ops("UNLISTEN *"), Some(vec![UnlistenAll]));
        assert_eq!(ops("unlisten*;"), Some(vec![UnlistenAll]));
        assert_eq!(
            ops("LISTEN a; UNLISTEN b;; listen c_1$"),
            Some(vec![
                Listen("a".into()),
                Unlisten("b".into()),
                Listen("c_1$".into())
            ])
        );
        assert_eq!(ops("LISTEN café"), Some(vec![Listen("café".into())]));
        assert_eq!(ops("LISTEN CAFÉ"), Some(vec![Listen("cafÉ".into())]));
        let long = "x".repeat(70);
        assert_eq!(
            ops(&format!("LISTEN {long}")),
            Some(vec![Listen("x".repeat(63))])
        );
        // A multibyte character across byte 63 is dropped whole.
        let name = format!("{}é", "x".repeat(62));
        assert_eq!(
            ops(&format!("LISTEN \"{name}\"")),
            Some(vec![Listen("x".repeat(62))])
        );
    }

    #[test]
    fn leaves_everything_else_to_the_server() {
        for sql in [
            "",
            ";",
            "SELECT 1",
            "LISTEN",
            "LISTEN ;",
            "LISTEN a b",
            "LISTEN a; SELECT 1",
            "SELECT 1; LISTEN a",
            "listener a",
            "LISTEN \"\"",
            "LISTEN \"open",
            "LISTEN a -- comment",
            "/* c */ LISTEN a",
            "LISTEN U&\"d\\0061t\"",
            "LISTEN 1abc",
            "UNLISTEN",
            "UNLISTEN * *",
            "NOTIFY a",
            "LISTEN a, b",
        ] {
            assert_eq!(ops(sql), None, "{sql:?}");
        }
        assert_eq!(listen_ops(b"LISTEN \xff\xfe"), None);
    }

    #[test]
    fn cheap_first_test() {
        assert!(may_be_listen(b"  listen x"));
        assert!(may_be_listen(b"UNLISTEN *"));
        assert!(may_be_listen(b"DISCARD ALL"));
        assert!(!may_be_listen(b"SELECT 1"));
        assert!(!may_be_listen(b""));
        let f = crate::protocol::encode::query("LISTEN x");
        assert_eq!(query_text(&f), b"LISTEN x");
    }

    #[test]
    fn discard_all() {
        assert!(is_discard_all(b"DISCARD ALL"));
        assert!(is_discard_all(b" discard  all ;"));
        assert!(!is_discard_all(b"DISCARD TEMP"));
        assert!(!is_discard_all(b"DISCARD ALL; SELECT 1"));
        assert!(!is_discard_all(b"DISCARD ALLx"));
        assert!(!is_discard_all(b"SELECT 1"));
    }
}
