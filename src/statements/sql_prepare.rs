//! SQL-level prepared statements: `PREPARE name [(types)] AS ...`, `EXECUTE name`,
//! `DEALLOCATE [PREPARE] name | ALL` and `DISCARD ALL`, seen in simple-protocol queries.
//!
//! The server gives `EXECUTE` of a stale SQL-level statement the same cached-plan error. To heal
//! it pgheal must know the text, so it watches these commands. The scanner is deliberately
//! small: it splits on `;` outside quotes and comments and reads the first words of each
//! statement; anything it does not understand is simply not tracked.
//!
//! **Bytes, in the client's encoding.** The text is never decoded. Keywords, quotes, `;`,
//! blanks and comment markers are ASCII, and in every encoding a server can have (UTF-8,
//! LATIN*, EUC_*, SQL_ASCII, ...) each byte of a multibyte character is ≥ 0x80, so an ASCII
//! byte always is that ASCII character. Bytes ≥ 0x80 are identifier characters, as in
//! PostgreSQL's lexer, and unquoted identifiers fold ASCII letters only (as PostgreSQL does for
//! multibyte server encodings and for the `C` locale).
//!
//! The client-only encodings SJIS, BIG5, GBK, UHC and GB18030 break the rule: the second byte
//! of a two-byte character may be ASCII, in `0x40..=0x7E` (a letter, `@`, `[`, `\`, `]`, `^`,
//! `_`, `` ` ``, `{`, `|`, `}`, `~`), and GB18030's four-byte characters carry digits. Such a
//! byte is never a quote, `;`, `-`, `/`, `*`, `$` or a blank, so splitting into statements and
//! skipping comments and quoted identifiers stay right. Unquoted identifiers are where it could
//! go wrong: folding an ASCII capital that is really a second byte would name another
//! statement, and a second byte such as `\` would cut the identifier short. So an unquoted
//! identifier with bytes ≥ 0x80 that contains an ASCII capital, or is followed by a byte in
//! `0x40..=0x7E`, is not read at all: at worst a statement goes untracked, which is where any
//! statement this scanner does not understand ends up.

use std::collections::HashMap;

/// Protocol-level statements that a simple-protocol command also removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dealloc {
    /// `DEALLOCATE name`: SQL-level and protocol-level statements share one namespace.
    Name(Vec<u8>),
    /// `DEALLOCATE ALL` or `DISCARD ALL`.
    All,
}

/// A statement-management command that is the only statement of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Management {
    DiscardAll,
    DeallocateAll,
    Deallocate(Vec<u8>),
}

#[derive(Debug, Default, Clone)]
pub struct SqlPrepared {
    /// Name → the PREPARE statement's text.
    texts: HashMap<Vec<u8>, Vec<u8>>,
}

impl SqlPrepared {
    /// Watch a simple-protocol query text; returns what it deallocates.
    pub fn observe(&mut self, sql: &[u8]) -> Vec<Dealloc> {
        let mut effects = Vec::new();
        for stmt in split_statements(sql) {
            let mut words = Words::new(stmt);
            match words.keyword().as_deref() {
                Some(b"prepare") => {
                    if let Some(name) = words.ident() {
                        self.texts.insert(name, stmt.trim_ascii().to_vec());
                    }
                }
                Some(b"deallocate") => match deallocated(&mut words) {
                    Some(Dealloc::All) => {
                        self.texts.clear();
                        effects.push(Dealloc::All);
                    }
                    Some(Dealloc::Name(name)) => {
                        self.texts.remove(&name);
                        effects.push(Dealloc::Name(name));
                    }
                    None => {}
                },
                Some(b"discard") if words.keyword().as_deref() == Some(&b"all"[..]) => {
                    self.texts.clear();
                    effects.push(Dealloc::All);
                }
                _ => {}
            }
        }
        effects
    }

    /// Tracked names that a query executes, each with its PREPARE text.
    pub fn executed_by(&self, sql: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        if self.texts.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for stmt in split_statements(sql) {
            let mut words = Words::new(stmt);
            if words.keyword().as_deref() == Some(&b"execute"[..]) {
                if let Some(name) = words.ident() {
                    if let Some(text) = self.texts.get(&name) {
                        if !out.iter().any(|(n, _)| *n == name) {
                            out.push((name, text.clone()));
                        }
                    }
                }
            }
        }
        out
    }

    pub fn clear(&mut self) {
        self.texts.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// `DEALLOCATE [PREPARE] name | ALL`, after the keyword.
fn deallocated(words: &mut Words<'_>) -> Option<Dealloc> {
    let mut next = words.ident()?;
    if next == b"prepare" {
        next = words.ident()?;
    }
    Some(if next == b"all" {
        Dealloc::All
    } else {
        Dealloc::Name(next)
    })
}

/// `DISCARD ALL`, `DEALLOCATE [PREPARE] ALL` or `DEALLOCATE [PREPARE] name` when it is the only
/// statement of `sql` (a trailing `;` is allowed).
pub fn management_command(sql: &[u8]) -> Option<Management> {
    let [stmt] = split_statements(sql)[..] else {
        return None;
    };
    let mut words = Words::new(stmt);
    let command = match words.keyword()?.as_slice() {
        b"discard" => (words.keyword()? == b"all").then_some(Management::DiscardAll)?,
        b"deallocate" => match deallocated(&mut words)? {
            Dealloc::All => Management::DeallocateAll,
            Dealloc::Name(name) => Management::Deallocate(name),
        },
        _ => return None,
    };
    words.at_end().then_some(command)
}

/// Quote an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quote an identifier given as bytes in the client's encoding (`"` is never part of a
/// multibyte character, so doubling it is right in every encoding).
pub fn quote_ident_bytes(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    out.push(b'"');
    for &b in name {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

/// Split on `;` outside quotes, dollar quotes are not handled (rare in PREPARE/EXECUTE).
fn split_statements(b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                out.push(&b[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < b.len() {
        out.push(&b[start..]);
    }
    out.retain(|s| !s.trim_ascii().is_empty());
    out
}

/// Bytes of an unquoted identifier after its first: PostgreSQL's `ident_cont`
/// (`[A-Za-z\200-\377_0-9\$]`).
fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Reads words and identifiers from the start of a statement, skipping blanks and comments.
struct Words<'a> {
    s: &'a [u8],
}

impl<'a> Words<'a> {
    fn new(s: &'a [u8]) -> Self {
        Words { s }
    }

    fn skip_blank(&mut self) {
        loop {
            let t = self.s.trim_ascii_start();
            if let Some(rest) = t.strip_prefix(b"--") {
                self.s = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(&[][..], |i| &rest[i + 1..]);
            } else if let Some(rest) = t.strip_prefix(b"/*") {
                self.s = rest
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(&[][..], |i| &rest[i + 2..]);
            } else {
                self.s = t;
                return;
            }
        }
    }

    /// Nothing but blanks and comments left.
    fn at_end(&mut self) -> bool {
        self.skip_blank();
        self.s.is_empty()
    }

    fn keyword(&mut self) -> Option<Vec<u8>> {
        self.ident()
    }

    /// An identifier: unquoted ones fold ASCII capitals to lower case, quoted ones keep their
    /// case. `None` when there is none, or when it cannot be read safely (see the module docs).
    fn ident(&mut self) -> Option<Vec<u8>> {
        self.skip_blank();
        if let Some(rest) = self.s.strip_prefix(b"\"") {
            let mut name = Vec::new();
            let mut i = 0;
            while i < rest.len() {
                if rest[i] == b'"' {
                    if rest.get(i + 1) == Some(&b'"') {
                        name.push(b'"');
                        i += 2;
                        continue;
                    }
                    self.s = &rest[i + 1..];
                    return Some(name);
                }
                name.push(rest[i]);
                i += 1;
            }
            return None;
        }
        if self
            .s
            .first()
            .is_none_or(|b| b.is_ascii_digit() || *b == b'$')
        {
            return None;
        }
        let end = self
            .s
            .iter()
            .position(|&b| !ident_byte(b))
            .unwrap_or(self.s.len());
        if end == 0 {
            return None;
        }
        let word = &self.s[..end];
        if word.iter().any(|&b| b >= 0x80)
            && (word.iter().any(u8::is_ascii_uppercase)
                || self.s.get(end).is_some_and(|b| (0x40..=0x7e).contains(b)))
        {
            // Perhaps second bytes of SJIS/BIG5/GBK/UHC/GB18030 characters: leave it alone.
            return None;
        }
        self.s = &self.s[end..];
        Some(word.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_prepare_execute_deallocate() {
        let mut t = SqlPrepared::default();
        t.observe(b"PREPARE q1 (int) AS SELECT * FROM orders WHERE id = $1;");
        t.observe(b"prepare \"Q2\" as select 1");
        assert_eq!(
            t.executed_by(b"EXECUTE q1(1)"),
            vec![(
                b"q1".to_vec(),
                b"PREPARE q1 (int) AS SELECT * FROM orders WHERE id = $1".to_vec()
            )]
        );
        assert_eq!(t.executed_by(b"execute \"Q2\"").len(), 1);
        assert!(
            t.executed_by(b"execute q2").is_empty(),
            "quoted names keep case"
        );
        assert!(t.executed_by(b"SELECT 'EXECUTE q1'").is_empty());
        assert_eq!(
            t.observe(b"DEALLOCATE PREPARE q1"),
            vec![Dealloc::Name(b"q1".to_vec())]
        );
        assert!(t.executed_by(b"EXECUTE q1(1)").is_empty());
        assert_eq!(t.observe(b"/* c */ DISCARD ALL"), vec![Dealloc::All]);
        assert!(t.is_empty());
    }

    #[test]
    fn splits_outside_quotes_and_comments() {
        assert_eq!(
            split_statements(b"select ';'; -- x;\nselect 2 /* ; */"),
            vec![&b"select ';'"[..], &b" -- x;\nselect 2 /* ; */"[..]]
        );
    }

    #[test]
    fn names_in_any_client_encoding() {
        let mut t = SqlPrepared::default();
        // LATIN9 "café" unquoted and "Été" quoted; EUC_JP "日本" unquoted.
        t.observe(b"PREPARE caf\xe9 AS SELECT '\xa4'; PREPARE \"\xc9t\xe9\" AS SELECT 2");
        t.observe(b"PREPARE \xc6\xfc\xcb\xdc AS SELECT 3");
        assert_eq!(
            t.executed_by(b"EXECUTE caf\xe9"),
            vec![(
                b"caf\xe9".to_vec(),
                b"PREPARE caf\xe9 AS SELECT '\xa4'".to_vec()
            )]
        );
        // Capitals beside bytes >= 0x80 may be second bytes: not folded, not read.
        assert!(t.executed_by(b"EXECUTE CAF\xe9").is_empty());
        assert_eq!(t.executed_by(b"execute \"\xc9t\xe9\"").len(), 1);
        assert_eq!(t.executed_by(b"EXECUTE \xc6\xfc\xcb\xdc").len(), 1);
        assert_eq!(
            t.observe(b"DEALLOCATE \"\xc9t\xe9\""),
            vec![Dealloc::Name(b"\xc9t\xe9".to_vec())]
        );
        assert_eq!(quote_ident_bytes(b"a\"\xe9"), b"\"a\"\"\xe9\"");
    }

    #[test]
    fn second_bytes_in_ascii_range_are_not_guessed() {
        let mut t = SqlPrepared::default();
        // SJIS "表" is 0x95 0x5C (a backslash second byte); "ソ" is 0x83 0x5C; "A" in a
        // name next to a multibyte character may be a second byte: none of it is tracked.
        t.observe(b"PREPARE \x95\x5c AS SELECT 1");
        t.observe(b"PREPARE a\x83\x5cb AS SELECT 1");
        t.observe(b"PREPARE \x82A AS SELECT 1");
        assert!(t.is_empty());
        assert_eq!(t.observe(b"DEALLOCATE \x95\x5c"), vec![]);
        // Quoted, the same name is read exactly.
        t.observe(b"PREPARE \"\x95\x5c\" AS SELECT 1");
        assert_eq!(t.executed_by(b"EXECUTE \"\x95\x5c\"").len(), 1);
        // Plain ASCII names still fold.
        t.observe(b"PREPARE Q3 AS SELECT 1");
        assert_eq!(t.executed_by(b"EXECUTE q3").len(), 1);
    }

    #[test]
    fn management_commands_alone() {
        assert_eq!(
            management_command(b"DISCARD ALL;"),
            Some(Management::DiscardAll)
        );
        assert_eq!(
            management_command(b" deallocate prepare all "),
            Some(Management::DeallocateAll)
        );
        assert_eq!(
            management_command(b"DEALLOCATE \"P1\""),
            Some(Management::Deallocate(b"P1".to_vec()))
        );
        assert_eq!(
            management_command(b"DEALLOCATE caf\xe9"),
            Some(Management::Deallocate(b"caf\xe9".to_vec()))
        );
        assert_eq!(management_command(b"DEALLOCATE p1; SELECT 1"), None);
        assert_eq!(management_command(b"DEALLOCATE p1 x"), None);
        assert_eq!(management_command(b"DISCARD PLANS"), None);
        assert_eq!(management_command(b"SELECT 1"), None);
        assert_eq!(management_command(b""), None);
    }
}
