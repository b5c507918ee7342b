//! The `key=value key='quoted value'` strings of `pgbouncer.ini`'s `[databases]`, `[users]` and
//! `[peers]` sections, read the way PgBouncer 1.25 reads them (`cstr_get_pair` in its
//! `src/loader.c`), which is libpq-like but not libpq:
//!
//! - pairs are separated by spaces (pgheal also accepts tabs); spaces around `=` are allowed;
//! - a key runs up to `=` or a space and may not be empty;
//! - a value is either a run of non-space characters, or single-quoted, where `''` stands for
//!   one quote. A backslash is an ordinary character, in and outside quotes: PgBouncer has no
//!   backslash escapes (libpq does), and a password such as `pa\ss` must mean the same thing to
//!   both poolers;
//! - a value may not be empty (`host=` and `host=''` are errors), as in PgBouncer.
//!
//! PgBouncer silently eats the character after a closing quote (`host='a'port=1` reads a key
//! `ort`); pgheal asks for a space there instead. Errors never repeat the text: it may hold a
//! password.

/// One `key=value` pair, in the order written; a key may appear twice (the last one wins when
/// the pairs are applied, as in PgBouncer).
#[derive(Clone, PartialEq, Eq)]
pub struct Pair {
    pub key: String,
    pub value: String,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be passwords.
        write!(f, "{}=<{} bytes>", self.key, self.value.len())
    }
}

/// Why a connection string could not be read. Carries key names (from the text) but never a
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnStrError {
    #[error("syntax error in the connection string: expected key=value, found a word without '='")]
    MissingEquals,
    #[error("syntax error in the connection string: a key is empty")]
    EmptyKey,
    #[error("syntax error in the connection string: the value of `{0}` is empty")]
    EmptyValue(String),
    #[error(
        "syntax error in the connection string: the quoted value of `{0}` has no closing quote"
    )]
    Unterminated(String),
    #[error("syntax error in the connection string: the quoted value of `{0}` is followed by text without a space")]
    JunkAfterQuote(String),
}

fn is_sep(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parses a whole connection string. An empty (or blank) string is no pairs: `foodb =` is a
/// valid database entry.
pub fn parse(s: &str) -> Result<Vec<Pair>, ConnStrError> {
    let mut pairs = Vec::new();
    let mut rest = s.trim_start_matches(is_sep);
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || is_sep(c))
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        let after_key = rest[key_end..].trim_start_matches(is_sep);
        let Some(after_eq) = after_key.strip_prefix('=') else {
            return Err(ConnStrError::MissingEquals);
        };
        if key.is_empty() {
            return Err(ConnStrError::EmptyKey);
        }
        let after_eq = after_eq.trim_start_matches(is_sep);
        let (value, after_value) = match after_eq.strip_prefix('\'') {
            Some(quoted) => {
                let (v, after) =
                    unquote(quoted).ok_or_else(|| ConnStrError::Unterminated(key.to_owned()))?;
                if after.starts_with(|c: char| !is_sep(c)) {
                    return Err(ConnStrError::JunkAfterQuote(key.to_owned()));
                }
                (v, after)
            }
            None => {
                let end = after_eq.find(is_sep).unwrap_or(after_eq.len());
                (after_eq[..end].to_owned(), &after_eq[end..])
            }
        };
        if value.is_empty() {
            return Err(ConnStrError::EmptyValue(key.to_owned()));
        }
        pairs.push(Pair {
            key: key.to_owned(),
            value,
        });
        rest = after_value.trim_start_matches(is_sep);
    }
    Ok(pairs)
}

/// The body of a quoted value (after its opening quote): the value with `''` undone, and the
/// text after the closing quote. `None` if the quote is never closed.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut rest = s;
    loop {
        let end = rest.find('\'')?;
        value.push_str(&rest[..end]);
        let after = &rest[end + 1..];
        match after.strip_prefix('\'') {
            Some(more) => {
                value.push('\'');
                rest = more;
            }
            None => return Some((value, after)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kv(s: &str) -> Vec<(String, String)> {
        match parse(s) {
            Ok(p) => p.into_iter().map(|p| (p.key, p.value)).collect(),
            Err(e) => panic!("{s:?}: {e}"),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_pairs_spaces_and_empty_strings() {
        assert_eq!(kv(""), pairs(&[]));
        assert_eq!(kv("   "), pairs(&[]));
        assert_eq!(
            kv("host=localhost dbname=bazdb"),
            pairs(&[("host", "localhost"), ("dbname", "bazdb")])
        );
        assert_eq!(
            kv("  host = db1   port =5433\tuser= app "),
            pairs(&[("host", "db1"), ("port", "5433"), ("user", "app")])
        );
        // Values may hold '=' and other punctuation; keys are case-sensitive and kept as written.
        assert_eq!(
            kv("options=-c=x Host=a,b"),
            pairs(&[("options", "-c=x"), ("Host", "a,b")])
        );
        // Duplicates are kept in order.
        assert_eq!(kv("port=1 port=2"), pairs(&[("port", "1"), ("port", "2")]));
    }

    #[test]
    fn quoted_values_as_pgbouncer_reads_them() {
        assert_eq!(
            kv("connect_query='SELECT 1' user=baz"),
            pairs(&[("connect_query", "SELECT 1"), ("user", "baz")])
        );
        assert_eq!(
            kv("password='it''s a secret'"),
            pairs(&[("password", "it's a secret")])
        );
        // A backslash is an ordinary character, quoted or not (no libpq escapes in PgBouncer).
        assert_eq!(
            kv(r"password=pa\ss auth_query='SELECT a\b'"),
            pairs(&[("password", r"pa\ss"), ("auth_query", r"SELECT a\b")])
        );
        assert_eq!(kv(r"password='x\'"), pairs(&[("password", r"x\")]));
        // A quote inside an unquoted value is literal.
        assert_eq!(kv("password=it's"), pairs(&[("password", "it's")]));
        assert_eq!(kv("a=''''"), pairs(&[("a", "'")]));
    }

    #[test]
    fn errors_name_the_key_but_never_the_value() {
        let cases = [
            ("host", ConnStrError::MissingEquals),
            ("host=a port", ConnStrError::MissingEquals),
            ("=a", ConnStrError::EmptyKey),
            ("host=", ConnStrError::EmptyValue("host".into())),
            ("host=''", ConnStrError::EmptyValue("host".into())),
            (
                "password='topsecret",
                ConnStrError::Unterminated("password".into()),
            ),
            (
                "password='topsecret''",
                ConnStrError::Unterminated("password".into()),
            ),
            (
                "password='top'secret",
                ConnStrError::JunkAfterQuote("password".into()),
            ),
        ];
        for (text, expected) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e, expected, "{text:?}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        let p = parse("password=topsecret").unwrap();
        assert!(!format!("{p:?}").contains("topsecret"));
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn quoting_round_trips(key in "[a-z_]{1,10}", value in "[^\\x00]{1,30}") {
            let text = format!("{key}='{}' next=1", value.replace('\'', "''"));
            let got = parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got.len(), 2);
            prop_assert_eq!(&got[0].key, &key);
            prop_assert_eq!(&got[0].value, &value);
        }
    }
}
