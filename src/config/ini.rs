//! The `pgbouncer.ini` file format, read the way PgBouncer 1.25 reads it
//! (`parse_ini_file` in libusual's `cfparser.c`), so an existing file loads unchanged:
//!
//! - `[section]` starts a section; the name is taken verbatim (`[ databases ]` is another name).
//!   Text after `]` on the same line is read as if it started a line.
//! - `key = value`: a key is ASCII letters, digits and `_.-*`, or quoted: `'any text'` (what
//!   PgBouncer's parser does) or `"any text"` with `""` for a quote (what its documentation
//!   describes for database names). The value is the rest of the line with the blanks around it
//!   removed; it is never unquoted here (`[databases]` values are connection strings, see
//!   [`super::connstr`]).
//! - A line whose first non-blank character is `;` or `#` is a comment. Those characters are
//!   ordinary later in a line: `server_reset_query = DISCARD ALL ; x` keeps `; x`.
//! - `%include FILE` at the start of a line reads another file in place, nested at most
//!   [`MAX_INCLUDE_DEPTH`] deep. The current section carries into and out of included files, as
//!   in PgBouncer. A relative name is looked up next to the including file first, then (PgBouncer's
//!   rule) relative to the working directory; see [`include_path`].
//!
//! The parser does no I/O of its own: included files are read through [`Files`], so every rule is
//! unit-tested without a disk. Errors are typed and carry the file and line ([`Location`]).
//! What sections and keys mean is decided elsewhere ([`super::pgbouncer`]).

use std::path::{Path, PathBuf};

/// PgBouncer's `MAX_INCLUDE`: the top file is level 0, so ten nested includes are allowed.
pub const MAX_INCLUDE_DEPTH: usize = 10;

/// A line of a file, for messages: `path:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One `key = value` line, with the section it belongs to.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    pub at: Location,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values can be passwords (connection strings, auth_ldap_options).
        write!(
            f,
            "[{}] {} = <{} bytes> ({})",
            self.section,
            self.key,
            self.value.len(),
            self.at
        )
    }
}

/// A parsed file (with its includes): every entry and every section header, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ini {
    pub entries: Vec<Entry>,
    /// Section headers as written (a section may appear several times).
    pub sections: Vec<(String, Location)>,
}

/// Why a file could not be read. Never includes a value (it may be a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IniError {
    #[error("{at}: syntax error: {what}")]
    Syntax { at: Location, what: &'static str },
    #[error("{at}: `{key}` is not inside a [section]")]
    OutsideSection { at: Location, key: String },
    #[error("{at}: cannot include {}: {reason}", path.display())]
    Include {
        at: Location,
        path: PathBuf,
        reason: String,
    },
    #[error("{at}: %include nested more than {MAX_INCLUDE_DEPTH} deep")]
    IncludeDepth { at: Location },
}

impl IniError {
    pub fn location(&self) -> &Location {
        match self {
            IniError::Syntax { at, .. }
            | IniError::OutsideSection { at, .. }
            | IniError::Include { at, .. }
            | IniError::IncludeDepth { at } => at,
        }
    }
}

/// How the parser reaches included files.
pub trait Files {
    fn read(&mut self, path: &Path) -> std::io::Result<String>;
    fn exists(&self, path: &Path) -> bool;
}

/// Where `%include NAME` in `including` points: an absolute name as is; a relative one next to
/// the including file if such a file exists, else relative to the working directory, which is
/// what PgBouncer does (and what a file written for PgBouncer may rely on).
pub fn include_path(including: &Path, name: &str, files: &dyn Files) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_path_buf();
    }
    if let Some(dir) = including.parent() {
        let beside = dir.join(name);
        if files.exists(&beside) {
            return beside;
        }
    }
    name.to_path_buf()
}

/// Parses `text`, the contents of `path`, reading includes through `files`.
pub fn parse(path: &Path, text: &str, files: &mut dyn Files) -> Result<Ini, IniError> {
    let mut p = Parser {
        files,
        section: None,
        out: Ini::default(),
    };
    p.file(path, text, 0)?;
    Ok(p.out)
}

/// C's `isspace` (Rust's `is_ascii_whitespace` leaves out vertical tab).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*')
}

struct Parser<'f> {
    files: &'f mut dyn Files,
    section: Option<String>,
    out: Ini,
}

impl Parser<'_> {
    fn file(&mut self, path: &Path, text: &str, depth: usize) -> Result<(), IniError> {
        for (index, line) in text.split('\n').enumerate() {
            let at = || Location {
                file: path.to_path_buf(),
                line: index + 1,
            };
            self.line(line, depth, path, &at)?;
        }
        Ok(())
    }

    fn line(
        &mut self,
        line: &str,
        depth: usize,
        path: &Path,
        at: &dyn Fn() -> Location,
    ) -> Result<(), IniError> {
        let syntax = |what| IniError::Syntax { at: at(), what };
        let mut rest = line;
        loop {
            rest = rest.trim_start_matches(is_space);
            if rest.is_empty() || rest.starts_with(['#', ';']) {
                return Ok(());
            }
            if let Some(after) = rest.strip_prefix("%include") {
                if after.starts_with(is_blank) {
                    return self.include(after.trim_matches(is_space), depth, path, at);
                }
            }
            if let Some(header) = rest.strip_prefix('[') {
                let Some(end) = header.find(']') else {
                    return Err(syntax("a section header without ']'"));
                };
                let name = header[..end].to_owned();
                self.out.sections.push((name.clone(), at()));
                self.section = Some(name);
                rest = &header[end + 1..];
                continue;
            }
            let (key, after_key) = read_key(rest).map_err(syntax)?;
            let after_key = after_key.trim_start_matches(is_blank);
            let Some(value) = after_key.strip_prefix('=') else {
                return Err(syntax("expected '=' after the key"));
            };
            let value = value
                .trim_start_matches(is_blank)
                .trim_end_matches(is_space);
            let Some(section) = self.section.clone() else {
                return Err(IniError::OutsideSection { at: at(), key });
            };
            self.out.entries.push(Entry {
                section,
                key,
                value: value.to_owned(),
                at: at(),
            });
            return Ok(());
        }
    }

    fn include(
        &mut self,
        name: &str,
        depth: usize,
        path: &Path,
        at: &dyn Fn() -> Location,
    ) -> Result<(), IniError> {
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(IniError::IncludeDepth { at: at() });
        }
        if name.is_empty() {
            return Err(IniError::Syntax {
                at: at(),
                what: "%include without a file name",
            });
        }
        let target = include_path(path, name, &*self.files);
        let text = self.files.read(&target).map_err(|e| IniError::Include {
            at: at(),
            path: target.clone(),
            reason: e.to_string(),
        })?;
        self.file(&target, &text, depth + 1)
    }
}

/// A key at the start of `s` and the text after it.
fn read_key(s: &str) -> Result<(String, &str), &'static str> {
    if let Some(body) = s.strip_prefix('\'') {
        let end = body
            .find('\'')
            .ok_or("a quoted key without its closing quote")?;
        if end == 0 {
            return Err("an empty key");
        }
        return Ok((body[..end].to_owned(), &body[end + 1..]));
    }
    if let Some(body) = s.strip_prefix('"') {
        let mut key = String::new();
        let mut rest = body;
        loop {
            let end = rest
                .find('"')
                .ok_or("a quoted key without its closing quote")?;
            key.push_str(&rest[..end]);
            match rest[end + 1..].strip_prefix('"') {
                Some(more) => {
                    key.push('"');
                    rest = more;
                }
                None if key.is_empty() => return Err("an empty key"),
                None => return Ok((key, &rest[end + 1..])),
            }
        }
    }
    let end = s.find(|c| !is_key_char(c)).unwrap_or(s.len());
    if end == 0 {
        return Err("expected a key (letters, digits, _ . - *) or a [section]");
    }
    Ok((s[..end].to_owned(), &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Files in memory; `reads` records what was read, in order.
    #[derive(Default)]
    struct Mem {
        files: BTreeMap<PathBuf, String>,
        reads: Vec<PathBuf>,
    }

    impl Mem {
        fn with(files: &[(&str, &str)]) -> Mem {
            Mem {
                files: files
                    .iter()
                    .map(|(p, t)| (PathBuf::from(p), t.to_string()))
                    .collect(),
                reads: Vec::new(),
            }
        }
    }

    impl Files for Mem {
        fn read(&mut self, path: &Path) -> std::io::Result<String> {
            self.reads.push(path.to_path_buf());
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
        fn exists(&self, path: &Path) -> bool {
            self.files.contains_key(path)
        }
    }

    fn parse_str(text: &str) -> Result<Ini, IniError> {
        parse(
            Path::new("/etc/pgbouncer/pgbouncer.ini"),
            text,
            &mut Mem::default(),
        )
    }

    fn triples(ini: &Ini) -> Vec<(String, String, String, usize)> {
        ini.entries
            .iter()
            .map(|e| (e.section.clone(), e.key.clone(), e.value.clone(), e.at.line))
            .collect()
    }

    fn t(s: &str, k: &str, v: &str, line: usize) -> (String, String, String, usize) {
        (s.into(), k.into(), v.into(), line)
    }

    #[test]
    fn sections_keys_values_and_comments() {
        let text = concat!(
            ";;; a comment\n",
            "# another\n",
            "[databases]\n",
            "foodb =\n",
            "  bardb = host=localhost dbname=bazdb   \r\n",
            "   ; indented comment\n",
            "[pgbouncer]\n",
            "listen_port=6432\n",
            "server_reset_query = DISCARD ALL ; not a comment # either\n",
            "\tauth_type\t=\tmd5\n",
            "[users]  user1 = pool_mode=session\n",
            "* = host=fallback\n",
            "db.name-x = host=h\n",
        );
        let ini = parse_str(text).unwrap();
        assert_eq!(
            triples(&ini),
            vec![
                t("databases", "foodb", "", 4),
                t("databases", "bardb", "host=localhost dbname=bazdb", 5),
                t("pgbouncer", "listen_port", "6432", 8),
                t(
                    "pgbouncer",
                    "server_reset_query",
                    "DISCARD ALL ; not a comment # either",
                    9
                ),
                t("pgbouncer", "auth_type", "md5", 10),
                t("users", "user1", "pool_mode=session", 11),
                t("users", "*", "host=fallback", 12),
                t("users", "db.name-x", "host=h", 13),
            ]
        );
        let sections: Vec<(&str, usize)> = ini
            .sections
            .iter()
            .map(|(s, at)| (s.as_str(), at.line))
            .collect();
        assert_eq!(
            sections,
            [("databases", 3), ("pgbouncer", 7), ("users", 11)]
        );
    }

    #[test]
    fn quoted_keys() {
        let ini =
            parse_str("[databases]\n'my db' = host=a\n\"odd \"\"name\"\"\" = host=b\n'x'=host=c\n")
                .unwrap();
        let keys: Vec<&str> = ini.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["my db", "odd \"name\"", "x"]);
    }

    #[test]
    fn errors_carry_file_and_line() {
        let cases: [(&str, usize, &str); 9] = [
            ("[pgbouncer\n", 1, "section header"),
            ("[pgbouncer]\n\nlisten_port 6432\n", 3, "expected '='"),
            ("[pgbouncer]\nfoo bar = 1\n", 2, "expected '='"),
            ("[pgbouncer]\n\n\n= 1\n", 4, "expected a key"),
            ("[databases]\n'unterminated = x\n", 2, "closing quote"),
            ("[databases]\n'' = x\n", 2, "empty key"),
            ("[databases]\n\"\" = x\n", 2, "empty key"),
            ("[databases]\nnaïve = x\n", 2, "expected '='"),
            ("[pgbouncer]\n%include\t\n", 2, "without a file name"),
        ];
        for (text, line, what) in cases {
            let e = parse_str(text).expect_err(text);
            assert_eq!(e.location().line, line, "{text:?}: {e}");
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("/etc/pgbouncer/pgbouncer.ini:{line}: ")),
                "{shown}"
            );
            assert!(shown.contains(what), "{text:?}: {shown}");
        }
        let e = parse_str("\nlisten_port = 1\n").unwrap_err();
        assert!(
            matches!(&e, IniError::OutsideSection { key, at } if key == "listen_port" && at.line == 2),
            "{e}"
        );
    }

    #[test]
    fn errors_never_show_values() {
        let e = parse_str("[databases]\nfoo password=topsecret\n").unwrap_err();
        assert!(!e.to_string().contains("topsecret"));
        let ini = parse_str("[databases]\nfoo = password=topsecret\n").unwrap();
        assert!(!format!("{ini:?}").contains("topsecret"));
    }

    #[test]
    fn include_beside_the_including_file_with_sections_carried_across() {
        let mut files = Mem::with(&[
            // Relative to the including file's directory.
            (
                "/etc/pgbouncer/conf.d/dbs.ini",
                "appdb = host=a\n%include /abs/more.ini\nafter_nested = host=c\n[pgbouncer]\n",
            ),
            ("/abs/more.ini", "nested = host=b\n"),
        ]);
        let text = "[databases]\n%include conf.d/dbs.ini\nlisten_port = 7000\n";
        let ini = parse(Path::new("/etc/pgbouncer/pgbouncer.ini"), text, &mut files).unwrap();
        let got: Vec<(String, String, String)> = ini
            .entries
            .iter()
            .map(|e| (e.section.clone(), e.key.clone(), e.at.to_string()))
            .collect();
        let want = [
            ("databases", "appdb", "/etc/pgbouncer/conf.d/dbs.ini:1"),
            ("databases", "nested", "/abs/more.ini:1"),
            (
                "databases",
                "after_nested",
                "/etc/pgbouncer/conf.d/dbs.ini:3",
            ),
            // The section the included file switched to carries on after the include.
            ("pgbouncer", "listen_port", "/etc/pgbouncer/pgbouncer.ini:3"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(s, k, a)| (s.to_string(), k.to_string(), a.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn include_falls_back_to_the_working_directory() {
        let files = Mem::with(&[("rel/x.ini", "")]);
        assert_eq!(
            include_path(
                Path::new("/etc/pgbouncer/pgbouncer.ini"),
                "rel/x.ini",
                &files
            ),
            PathBuf::from("rel/x.ini")
        );
        let files = Mem::with(&[("/etc/pgbouncer/rel/x.ini", "")]);
        assert_eq!(
            include_path(
                Path::new("/etc/pgbouncer/pgbouncer.ini"),
                "rel/x.ini",
                &files
            ),
            PathBuf::from("/etc/pgbouncer/rel/x.ini")
        );
    }

    #[test]
    fn include_errors() {
        let mut files = Mem::default();
        let e = parse(
            Path::new("/etc/p.ini"),
            "[pgbouncer]\n\n%include /missing.ini\n",
            &mut files,
        )
        .unwrap_err();
        assert!(
            matches!(&e, IniError::Include { at, path, .. } if at.line == 3 && path == Path::new("/missing.ini")),
            "{e}"
        );
        // `%includefoo` is not an include (PgBouncer wants a blank after the word).
        let e = parse_str("[pgbouncer]\n%includefoo\n").unwrap_err();
        assert!(matches!(e, IniError::Syntax { .. }), "{e}");

        // A file that includes itself stops at the depth limit, with the innermost location.
        let mut files = Mem::with(&[("/loop.ini", "[pgbouncer]\n%include /loop.ini\n")]);
        let e = parse(Path::new("/loop.ini"), "%include /loop.ini\n", &mut files).unwrap_err();
        assert!(
            matches!(e, IniError::IncludeDepth { ref at } if at.line == 2),
            "{e}"
        );
        assert_eq!(files.reads.len(), MAX_INCLUDE_DEPTH);
    }

    #[test]
    fn never_panics_on_arbitrary_text() {
        use proptest::prelude::*;
        proptest!(|(text in "[\\[\\]'\"=;#% a-z\\t\\r\\n*._-]{0,80}")| {
            let _ = parse_str(&text);
        });
    }
}
