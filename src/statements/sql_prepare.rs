//! SQL-level prepared statements: `PREPARE name [(types)] AS ...`, `EXECUTE name`,
//! `DEALLOCATE [PREPARE] name | ALL` and `DISCARD ALL`, seen in simple-protocol queries.
//!
//! The server gives `EXECUTE` of a stale SQL-level statement the same cached-plan error. To heal
//! it pgheal must know the text, so it watches these commands. The scanner is deliberately
//! small: it splits on `;` outside quotes and comments and reads the first words of each
//! statement; anything it does not understand is simply not tracked.

use std::collections::HashMap;

/// Protocol-level statements that a simple-protocol command also removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dealloc {
    /// `DEALLOCATE name`: SQL-level and protocol-level statements share one namespace.
    Name(String),
    /// `DEALLOCATE ALL` or `DISCARD ALL`.
    All,
}

#[derive(Debug, Default, Clone)]
pub struct SqlPrepared {
    texts: HashMap<String, String>,
}

impl SqlPrepared {
    /// Watch a simple-protocol query text; returns what it deallocates.
    pub fn observe(&mut self, sql: &str) -> Vec<Dealloc> {
        let mut effects = Vec::new();
        for stmt in split_statements(sql) {
            let mut words = Words::new(stmt);
            match words.keyword().as_deref() {
                Some("prepare") => {
                    if let Some(name) = words.ident() {
                        self.texts.insert(name, stmt.trim().to_owned());
                    }
                }
                Some("deallocate") => {
                    let mut next = words.ident();
                    if next.as_deref() == Some("prepare") {
                        next = words.ident();
                    }
                    match next {
                        Some(name) if name == "all" => {
                            self.texts.clear();
                            effects.push(Dealloc::All);
                        }
                        Some(name) => {
                            self.texts.remove(&name);
                            effects.push(Dealloc::Name(name));
                        }
                        None => {}
                    }
                }
                Some("discard") => {
                    let what = words.keyword();
                    if what.as_deref() == Some("all") {
                        self.texts.clear();
                        effects.push(Dealloc::All);
                    }
                }
                _ => {}
            }
        }
        effects
    }

    /// Tracked names that a query executes, each with its PREPARE text.
    pub fn executed_by(&self, sql: &str) -> Vec<(String, String)> {
        if self.texts.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for stmt in split_statements(sql) {
            let mut words = Words::new(stmt);
            if words.keyword().as_deref() == Some("execute") {
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

/// Quote an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Split on `;` outside quotes, dollar quotes are not handled (rare in PREPARE/EXECUTE).
fn split_statements(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
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
                out.push(&sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < sql.len() {
        out.push(&sql[start..]);
    }
    out.retain(|s| !s.trim().is_empty());
    out
}

/// Reads words and identifiers from the start of a statement, skipping blanks and comments.
struct Words<'a> {
    s: &'a str,
}

impl<'a> Words<'a> {
    fn new(s: &'a str) -> Self {
        Words { s }
    }

    fn skip_blank(&mut self) {
        loop {
            let t = self.s.trim_start();
            if let Some(rest) = t.strip_prefix("--") {
                self.s = rest.split_once('\n').map_or("", |x| x.1);
            } else if let Some(rest) = t.strip_prefix("/*") {
                self.s = rest.split_once("*/").map_or("", |x| x.1);
            } else {
                self.s = t;
                return;
            }
        }
    }

    fn keyword(&mut self) -> Option<String> {
        self.ident()
    }

    /// An identifier: unquoted ones fold to lower case, quoted ones keep their case.
    fn ident(&mut self) -> Option<String> {
        self.skip_blank();
        if let Some(rest) = self.s.strip_prefix('"') {
            let mut name = String::new();
            let mut it = rest.char_indices().peekable();
            while let Some((i, c)) = it.next() {
                if c == '"' {
                    if let Some((_, '"')) = it.peek() {
                        name.push('"');
                        it.next();
                        continue;
                    }
                    self.s = &rest[i + 1..];
                    return Some(name);
                }
                name.push(c);
            }
            return None;
        }
        let end = self
            .s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(self.s.len());
        if end == 0 {
            return None;
        }
        let word = self.s[..end].to_lowercase();
        self.s = &self.s[end..];
        Some(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_prepare_execute_deallocate() {
        let mut t = SqlPrepared::default();
        t.observe("PREPARE q1 (int) AS SELECT * FROM orders WHERE id = $1;");
        t.observe("prepare \"Q2\" as select 1");
        assert_eq!(
            t.executed_by("EXECUTE q1(1)"),
            vec![(
                "q1".to_string(),
                "PREPARE q1 (int) AS SELECT * FROM orders WHERE id = $1".to_string()
            )]
        );
        assert_eq!(t.executed_by("execute \"Q2\"").len(), 1);
        assert!(
            t.executed_by("execute q2").is_empty(),
            "quoted names keep case"
        );
        assert!(t.executed_by("SELECT 'EXECUTE q1'").is_empty());
        assert_eq!(
            t.observe("DEALLOCATE PREPARE q1"),
            vec![Dealloc::Name("q1".into())]
        );
        assert!(t.executed_by("EXECUTE q1(1)").is_empty());
        assert_eq!(t.observe("/* c */ DISCARD ALL"), vec![Dealloc::All]);
        assert!(t.is_empty());
    }

    #[test]
    fn splits_outside_quotes_and_comments() {
        assert_eq!(
            split_statements("select ';'; -- x;\nselect 2 /* ; */"),
            vec!["select ';'", " -- x;\nselect 2 /* ; */"]
        );
    }
}
