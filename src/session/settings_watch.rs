//! Noticing, while relaying, that a transaction may have changed the client's session settings,
//! so that pgheal reads them back from the server at the transaction's end (see
//! [`super::settings`]).
//!
//! Signals, from the most to the least reliable:
//! - the server's CommandComplete tags `SET`, `RESET` and `DISCARD ALL` (every form of `SET`,
//!   `SET ROLE`, `SET SESSION AUTHORIZATION`, `SET TIME ZONE`, `SET NAMES`, ... included; a tag
//!   is what the server ran, whatever the protocol and however the SQL was written), and `DO`
//!   and `CALL`, whose code may set anything;
//! - a ParameterStatus from the server (a reported parameter changed, also inside a function);
//! - `set_config` in the text of a Query, or of a Parse whose statement is then bound (its tag
//!   is `SELECT`), and any FunctionCall message.
//!
//! `pg_settings` does not list custom placeholder parameters (`app.tenant`), so the snapshot
//! asks for each by name: names are learned from the client's `SET a.b`, `RESET a.b` and
//! `set_config('a.b', ...)`. When a client sets parameters pgheal cannot name (`set_config($1,
//! ...)`, a FunctionCall, more names than [`MAX_NAMES`]), it is marked *untracked*: its
//! settings get a fingerprint of their own, so a server connection it used is always restored
//! before another client gets it (nothing leaks), though the unnamed settings do not follow it
//! to other connections.
//!
//! The text scanning works on bytes. SQL keywords are ASCII in every client encoding, but in
//! SJIS, BIG5, GBK, UHC and GB18030 the second byte of a character may be in the ASCII range
//! (a quote, a backslash): the lexer may then mistake where a literal ends. What depends on the
//! lexer is only the learning of names; whether `set_config` occurs at all is a plain byte
//! search, and any occurrence the lexer could not pair with a literal name marks the client
//! untracked. So a confused lexer costs restores, never a leak.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::{backend, frontend, Frame};

use super::settings_sql::is_plain_custom_name;

/// Custom parameter names remembered per client.
pub const MAX_NAMES: usize = 64;
/// Prepared statements remembered per client as calling `set_config`.
const MAX_STATEMENTS: usize = 256;

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// Whether the current transaction may have changed settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drift {
    Steady,
    Changed,
}

/// Statements of the client whose text calls `set_config`.
#[derive(Debug)]
enum SetConfigStatements {
    Known(HashSet<Box<[u8]>>),
    /// Too many to remember: every Bind counts as a possible change.
    Any,
}

/// What one client did that may change its settings.
#[derive(Debug)]
pub struct SettingsWatch {
    drift: Drift,
    names: BTreeSet<String>,
    statements: SetConfigStatements,
    untracked: bool,
    /// Unique per client for the life of the process (a reused pid would not be).
    id: u64,
}

impl Default for SettingsWatch {
    fn default() -> Self {
        SettingsWatch {
            drift: Drift::Steady,
            names: BTreeSet::new(),
            statements: SetConfigStatements::Known(HashSet::new()),
            untracked: false,
            id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl SettingsWatch {
    /// A watch that already knows the custom names among the client's startup settings.
    pub fn with_startup(settings: &[(String, String)]) -> Self {
        let mut w = SettingsWatch::default();
        for (name, _) in settings {
            w.learn(name.as_bytes());
        }
        w
    }

    /// Whether the transaction so far may have changed settings.
    pub fn changed(&self) -> bool {
        self.drift == Drift::Changed
    }

    /// Whether the transaction may have changed settings; resets for the next one.
    pub fn take_changed(&mut self) -> bool {
        std::mem::replace(&mut self.drift, Drift::Steady) == Drift::Changed
    }

    /// The custom names to ask the server for.
    pub fn custom_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Set when the client set parameters pgheal cannot name: the id that makes its
    /// fingerprint its own.
    pub fn untracked(&self) -> Option<u64> {
        self.untracked.then_some(self.id)
    }

    /// This client's id (see [`Self::untracked`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The client's `DISCARD ALL` reset its settings: nothing is hidden any more.
    pub fn discarded(&mut self) {
        self.untracked = false;
    }

    /// A message from the client (transaction pooling).
    pub fn client_frame(&mut self, f: &Frame) {
        match f.tag {
            frontend::QUERY => {
                if let Ok(sql) = frontend::decode_query(f) {
                    if self.scan(sql) {
                        self.drift = Drift::Changed;
                    }
                }
            }
            frontend::PARSE => {
                if let Ok(p) = frontend::Parse::decode(f) {
                    let calls = self.scan(p.query);
                    self.remember_statement(p.name, calls);
                }
            }
            frontend::BIND => {
                let calls = match &self.statements {
                    // The usual case: no statement calls set_config, nothing to decode.
                    SetConfigStatements::Known(s) if s.is_empty() => false,
                    SetConfigStatements::Known(s) => {
                        frontend::Bind::decode(f).is_ok_and(|b| s.contains(b.statement))
                    }
                    SetConfigStatements::Any => true,
                };
                if calls {
                    self.drift = Drift::Changed;
                }
            }
            frontend::FUNCTION_CALL => {
                self.drift = Drift::Changed;
                self.untracked = true;
            }
            _ => {}
        }
    }

    /// A message from the server (transaction pooling).
    pub fn server_frame(&mut self, f: &Frame) {
        let changes = match f.tag {
            backend::COMMAND_COMPLETE => {
                backend::decode_command_complete(f).is_ok_and(is_settings_tag)
            }
            backend::PARAMETER_STATUS => true,
            _ => false,
        };
        if changes {
            self.drift = Drift::Changed;
        }
    }

    fn remember_statement(&mut self, name: &[u8], calls_set_config: bool) {
        let SetConfigStatements::Known(set) = &mut self.statements else {
            return;
        };
        if !calls_set_config {
            set.remove(name);
        } else if set.len() < MAX_STATEMENTS {
            set.insert(name.into());
        } else {
            self.statements = SetConfigStatements::Any;
        }
    }

    /// Learns custom names from `sql`; whether it calls `set_config`.
    fn scan(&mut self, sql: &[u8]) -> bool {
        let mentions = count_ci(sql, b"set_config");
        if mentions == 0 && count_ci(sql, b"set") == 0 {
            return false;
        }
        let found = scan_sql(sql);
        for name in &found.names {
            self.learn(name);
        }
        if found.named_set_config_calls < mentions {
            self.untracked = true;
        }
        mentions > 0
    }

    fn learn(&mut self, name: &[u8]) {
        let lower = name.to_ascii_lowercase();
        if !is_plain_custom_name(&lower) {
            return;
        }
        let Ok(lower) = String::from_utf8(lower) else {
            return;
        };
        if self.names.contains(&lower) {
            return;
        }
        if self.names.len() < MAX_NAMES {
            self.names.insert(lower);
        } else {
            self.untracked = true;
        }
    }
}

/// A query that is `DISCARD ALL` alone, as the engine recognises it (`heal::local`): in
/// transaction pooling the engine answers it itself, to keep pgheal's prepared statements on
/// the server, so its reset of the settings is pgheal's to do.
pub fn is_discard_all(sql: &[u8]) -> bool {
    let sql = sql.trim_ascii();
    let sql = sql.strip_suffix(b";").unwrap_or(sql);
    let mut words = sql
        .split(|c| c.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    matches!(
        (words.next(), words.next(), words.next()),
        (Some(d), Some(a), None) if d.eq_ignore_ascii_case(b"discard") && a.eq_ignore_ascii_case(b"all")
    )
}

/// Command tags of statements that change session settings, or may (`DO` blocks and
/// procedures run arbitrary code, and are rare enough to be worth a snapshot).
pub fn is_settings_tag(tag: &[u8]) -> bool {
    matches!(tag, b"SET" | b"RESET" | b"DISCARD ALL" | b"DO" | b"CALL")
}

/// Occurrences of an ASCII needle, case-insensitively.
fn count_ci(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len())
        .filter(|w| w.eq_ignore_ascii_case(needle))
        .count()
}

/// What [`scan_sql`] recognised.
#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    /// Dotted names after `SET`/`RESET` and literal first arguments of `set_config`.
    names: Vec<Vec<u8>>,
    /// `set_config(` calls whose first argument is a plain literal.
    named_set_config_calls: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a [u8]),
    QuotedWord(Cow<'a, [u8]>),
    Str(Cow<'a, [u8]>),
    Punct(u8),
    /// Anything else: numbers, parameters, escape strings, dollar-quoted strings.
    Other,
}

impl Tok<'_> {
    fn is_word(&self, w: &[u8]) -> bool {
        match self {
            Tok::Word(x) => x.eq_ignore_ascii_case(w),
            Tok::QuotedWord(x) => x.as_ref() == w,
            _ => false,
        }
    }

    fn name_part(&self) -> Option<&[u8]> {
        match self {
            Tok::Word(x) => Some(x),
            Tok::QuotedWord(x) => Some(x),
            _ => None,
        }
    }
}

/// Where [`scan_sql`] is in the patterns it looks for.
enum Expect<'a> {
    Nothing,
    /// After `SET`/`RESET`: `SESSION`/`LOCAL` (if `modifier`), then a name.
    Name {
        modifier: bool,
    },
    /// A name's first part, kept borrowed until a dot shows it is a custom name (`UPDATE t
    /// SET col = ...` then costs no allocation).
    FirstPart(Tok<'a>),
    /// A dotted name, before another part.
    AfterDot(Vec<u8>),
    /// A dotted name, before another dot or its end.
    Dotted(Vec<u8>),
    /// After `set_config`: `(`, then the literal name.
    SetConfigParen,
    SetConfigName,
}

/// What a token starts, outside any pattern.
fn start(t: &Tok) -> Expect<'static> {
    if t.is_word(b"set_config") {
        Expect::SetConfigParen
    } else if t.is_word(b"set") || t.is_word(b"reset") {
        Expect::Name { modifier: true }
    } else {
        Expect::Nothing
    }
}

/// Custom names after `SET`/`RESET` and in `set_config('name', ...)`, in one pass over the
/// tokens; allocates only for what it finds.
fn scan_sql(sql: &[u8]) -> Found {
    let mut found = Found::default();
    let mut state = Expect::Nothing;
    for t in (Lexer { s: sql, i: 0 }) {
        state = match (state, t) {
            (Expect::SetConfigParen, Tok::Punct(b'(')) => Expect::SetConfigName,
            (Expect::SetConfigName, Tok::Str(name)) => {
                found.named_set_config_calls += 1;
                found.names.push(name.into_owned());
                Expect::Nothing
            }
            (Expect::Name { modifier: true }, t)
                if t.is_word(b"session") || t.is_word(b"local") =>
            {
                Expect::Name { modifier: false }
            }
            (Expect::Name { .. }, t) if t.name_part().is_some() && !t.is_word(b"set_config") => {
                Expect::FirstPart(t)
            }
            (Expect::FirstPart(first), Tok::Punct(b'.')) => {
                let mut name = first.name_part().unwrap_or_default().to_vec();
                name.push(b'.');
                Expect::AfterDot(name)
            }
            (Expect::AfterDot(mut name), t) if t.name_part().is_some() => {
                name.extend_from_slice(t.name_part().unwrap_or_default());
                Expect::Dotted(name)
            }
            (Expect::Dotted(mut name), Tok::Punct(b'.')) => {
                name.push(b'.');
                Expect::AfterDot(name)
            }
            (Expect::Dotted(name), t) => {
                found.names.push(name);
                start(&t)
            }
            (_, t) => start(&t),
        };
    }
    if let Expect::Dotted(name) = state {
        found.names.push(name);
    }
    found
}

/// A rough SQL lexer: enough to find words, literals and punctuation outside comments.
struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self, k: usize) -> Option<u8> {
        self.s.get(self.i + k).copied()
    }

    /// A quoted run closed by `q`, with doubled `q` standing for one; `i` is past the opening
    /// quote.
    fn quoted(&mut self, q: u8) -> Cow<'a, [u8]> {
        let start = self.i;
        let mut owned: Option<Vec<u8>> = None;
        while let Some(c) = self.peek(0) {
            self.i += 1;
            if c == q {
                if self.peek(0) == Some(q) {
                    self.i += 1;
                    owned
                        .get_or_insert_with(|| self.s[start..self.i - 2].to_vec())
                        .push(q);
                    continue;
                }
                return match owned {
                    Some(v) => Cow::Owned(v),
                    None => Cow::Borrowed(&self.s[start..self.i - 1]),
                };
            }
            if let Some(v) = owned.as_mut() {
                v.push(c);
            }
        }
        owned.map_or(Cow::Borrowed(&self.s[start..]), Cow::Owned)
    }

    /// Skips an escape string's body (`i` past the opening quote).
    fn skip_escape_string(&mut self) {
        while let Some(c) = self.peek(0) {
            self.i += 1;
            match c {
                b'\\' => self.i += 1,
                b'\'' if self.peek(0) == Some(b'\'') => self.i += 1,
                b'\'' => return,
                _ => {}
            }
        }
    }

    /// Skips a dollar-quoted string if one starts at `i` (a `$`); false when it is not one.
    fn skip_dollar_string(&mut self) -> bool {
        let rest = &self.s[self.i + 1..];
        let tag_len = rest
            .iter()
            .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
            .count();
        if rest.first().is_some_and(u8::is_ascii_digit) || rest.get(tag_len) != Some(&b'$') {
            return false;
        }
        let delim = &self.s[self.i..self.i + tag_len + 2];
        let body = self.i + delim.len();
        self.i = match self.s[body..].windows(delim.len()).position(|w| w == delim) {
            Some(p) => body + p + delim.len(),
            None => self.s.len(),
        };
        true
    }
}

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Tok<'a>;

    fn next(&mut self) -> Option<Tok<'a>> {
        loop {
            let c = self.peek(0)?;
            match c {
                c if c.is_ascii_whitespace() => self.i += 1,
                b'-' if self.peek(1) == Some(b'-') => {
                    while self.peek(0).is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                b'/' if self.peek(1) == Some(b'*') => {
                    self.i += 2;
                    let mut depth = 1;
                    while depth > 0 {
                        match (self.peek(0), self.peek(1)) {
                            (None, _) => break,
                            (Some(b'*'), Some(b'/')) => {
                                depth -= 1;
                                self.i += 2;
                            }
                            (Some(b'/'), Some(b'*')) => {
                                depth += 1;
                                self.i += 2;
                            }
                            _ => self.i += 1,
                        }
                    }
                }
                b'\'' => {
                    self.i += 1;
                    return Some(Tok::Str(self.quoted(b'\'')));
                }
                b'"' => {
                    self.i += 1;
                    return Some(Tok::QuotedWord(self.quoted(b'"')));
                }
                b'e' | b'E' if self.peek(1) == Some(b'\'') => {
                    self.i += 2;
                    self.skip_escape_string();
                    return Some(Tok::Other);
                }
                b'$' => {
                    if !self.skip_dollar_string() {
                        self.i += 1;
                        while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                            self.i += 1;
                        }
                    }
                    return Some(Tok::Other);
                }
                c if is_word_start(c) => {
                    let start = self.i;
                    while self.peek(0).is_some_and(is_word_byte) {
                        self.i += 1;
                    }
                    return Some(Tok::Word(&self.s[start..self.i]));
                }
                c if c.is_ascii_digit() => {
                    while self
                        .peek(0)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_')
                    {
                        self.i += 1;
                    }
                    return Some(Tok::Other);
                }
                c => {
                    self.i += 1;
                    return Some(Tok::Punct(c));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> (Vec<String>, usize) {
        let f = scan_sql(sql.as_bytes());
        (
            f.names
                .into_iter()
                .map(|n| String::from_utf8(n).unwrap())
                .collect(),
            f.named_set_config_calls,
        )
    }

    #[test]
    fn learns_names_from_set_reset_and_set_config() {
        assert_eq!(
            names("SET app.tenant = 'a'"),
            (vec!["app.tenant".into()], 0)
        );
        assert_eq!(
            names("set session \"App\".x TO 1; RESET my.y"),
            (vec!["App.x".into(), "my.y".into()], 0)
        );
        assert_eq!(names("SET LOCAL a.b.c = 1"), (vec!["a.b.c".into()], 0));
        assert_eq!(names("SET search_path = a, b"), (vec![], 0));
        assert_eq!(names("SET ROLE tenant_a"), (vec![], 0));
        assert_eq!(
            names("SELECT pg_catalog.set_config('app.tenant', $1, false), SET_CONFIG ( 'it''s.x', 'v', true)"),
            (vec!["app.tenant".into(), "it's.x".into()], 2)
        );
        assert_eq!(names("SELECT set_config($1, $2, false)"), (vec![], 0));
        assert_eq!(
            names("/* SET a.b */ -- SET c.d\nSELECT 'SET e.f', $$SET g.h$$, $q$ x $q$, E'\\' SET i.j'"),
            (vec![], 0)
        );
    }

    #[test]
    fn discard_all_alone() {
        for yes in ["DISCARD ALL", " discard  all ;", "Discard\tAll;\n"] {
            assert!(is_discard_all(yes.as_bytes()), "{yes:?}");
        }
        for no in [
            "DISCARD ALL; SELECT 1",
            "DISCARD PLANS",
            "DISCARD",
            "SELECT 'DISCARD ALL'",
        ] {
            assert!(!is_discard_all(no.as_bytes()), "{no:?}");
        }
    }

    #[test]
    fn the_watch_marks_changes_and_untracked_clients() {
        let mut w = SettingsWatch::default();
        w.client_frame(&crate::protocol::encode::query("SELECT 1"));
        assert!(!w.changed());
        w.client_frame(&crate::protocol::encode::query(
            "SELECT set_config('app.t', 'x', false)",
        ));
        assert!(w.take_changed());
        assert!(!w.changed());
        assert_eq!(w.custom_names().collect::<Vec<_>>(), vec!["app.t"]);
        assert_eq!(w.untracked(), None);

        // A prepared set_config: the Bind of its statement is the change.
        w.client_frame(&crate::protocol::encode::parse(
            "s1",
            "SELECT set_config($1, $2, false)",
            &[],
        ));
        assert!(!w.changed());
        assert_eq!(w.untracked(), Some(w.id()));
        let bind = |stmt: &str| {
            let mut body = vec![0u8];
            body.extend_from_slice(stmt.as_bytes());
            body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
            crate::protocol::encode::raw(b'B', &body)
        };
        w.client_frame(&bind("other"));
        assert!(!w.changed());
        w.client_frame(&bind("s1"));
        assert!(w.take_changed());
        // Re-parsed with other text: no longer a change.
        w.client_frame(&crate::protocol::encode::parse("s1", "SELECT 1", &[]));
        w.client_frame(&bind("s1"));
        assert!(!w.changed());

        w.server_frame(&crate::protocol::encode::command_complete("SELECT 1"));
        assert!(!w.changed());
        w.server_frame(&crate::protocol::encode::command_complete("SET"));
        assert!(w.take_changed());
        w.server_frame(&crate::protocol::encode::parameter_status(
            "TimeZone", "UTC",
        ));
        assert!(w.take_changed());
    }

    #[test]
    fn a_mention_the_lexer_cannot_pair_with_a_name_marks_untracked() {
        let mut w = SettingsWatch::default();
        // A mention inside a literal, as the lexer sees it (also what a literal misjudged
        // because of an SJIS trail byte would look like).
        w.client_frame(&crate::protocol::encode::query(
            "SELECT 'it''s set_config(''app.a'', ''b'', false)'",
        ));
        assert!(w.take_changed());
        assert_eq!(w.untracked(), Some(w.id()));
        let mut many = SettingsWatch::default();
        for i in 0..=MAX_NAMES {
            many.learn(format!("app.n{i}").as_bytes());
        }
        assert_eq!(many.custom_names().count(), MAX_NAMES);
        assert!(many.untracked().is_some());
    }
}
