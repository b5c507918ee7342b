//! PgBouncer's `auth_file` (`userlist.txt`) format, so an existing PgBouncer user list works
//! unchanged with pgheal.
//!
//! Each line holds at least two fields in double quotes: `"username" "secret"`. A `""` inside a
//! field is one literal quote. Fields after the second are ignored, as PgBouncer does. Blank
//! lines and lines whose first non-blank character is `;` or `#` are ignored. Each secret is read
//! with [`Secret::parse`], so it may be plain, `md5…` or `SCRAM-SHA-256$…`.
//!
//! Errors name the 1-based line and a fixed reason; they never include the line's text, which
//! holds a secret.

use super::{AuthError, Secret};

/// Parses a PgBouncer auth_file: one `"username" "secret"` per line, `""` escapes a quote inside,
/// lines starting with `;` or `#` and blank lines ignored.
///
/// Entries are returned in file order; a user listed twice appears twice (collecting into a map
/// keeps the last one, as PgBouncer does).
pub fn parse_userlist(text: &str) -> Result<Vec<(String, Secret)>, AuthError> {
    let mut entries = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let bad = |reason| AuthError::BadAuthFile { line, reason };
        let rest = raw.strip_suffix('\r').unwrap_or(raw).trim_start();
        if rest.is_empty() || rest.starts_with(';') || rest.starts_with('#') {
            continue;
        }
        let (user, rest) = quoted(rest).map_err(bad)?;
        if user.is_empty() {
            return Err(bad("empty username"));
        }
        let rest = rest.trim_start();
        if rest.is_empty() {
            return Err(bad("missing secret after the username"));
        }
        let (secret, rest) = quoted(rest).map_err(bad)?;
        if rest.chars().next().is_some_and(|c| !c.is_whitespace()) {
            return Err(bad("expected whitespace after the secret"));
        }
        let secret = Secret::parse(&secret).map_err(|err| match err {
            AuthError::Malformed(reason) => bad(reason),
            _ => bad("invalid secret"),
        })?;
        entries.push((user, secret));
    }
    Ok(entries)
}

/// Reads one `"…"` field at the start of `s`, undoing `""` escapes. Returns the field and the
/// text after its closing quote.
fn quoted(s: &str) -> Result<(String, &str), &'static str> {
    let Some(body) = s.strip_prefix('"') else {
        return Err("expected a field in double quotes");
    };
    let mut value = String::new();
    let mut rest = body;
    loop {
        let Some(end) = rest.find('"') else {
            return Err("unterminated quoted field");
        };
        value.push_str(&rest[..end]);
        let after = &rest[end + 1..];
        match after.strip_prefix('"') {
            Some(more) => {
                value.push('"');
                rest = more;
            }
            None => return Ok((value, after)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_quotes_comments_and_kinds() {
        let text = concat!(
            "; PgBouncer user list\n",
            "# another comment\n",
            "\n",
            "   \n",
            "\"alice\" \"hunter2\"\n",
            "  \"bob\"\t\"md53175bce1d3201d16594cebf9d7eb3f9d\" \"extra field\"\r\n",
            "\"quo\"\"ted\" \"pa\"\"ss word\"\n",
            "\"scram\" \"SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=\"\n",
            "\"empty\" \"\"",
        );
        let Ok(entries) = parse_userlist(text) else {
            panic!("valid userlist rejected");
        };
        let users: Vec<&str> = entries.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(users, ["alice", "bob", "quo\"ted", "scram", "empty"]);
        assert!(matches!(&entries[0].1, Secret::Plain(p) if p == "hunter2"));
        assert!(matches!(&entries[1].1, Secret::Md5(_)));
        assert!(matches!(&entries[2].1, Secret::Plain(p) if p == "pa\"ss word"));
        assert!(matches!(&entries[3].1, Secret::Scram(s) if s.iterations == 4096));
        assert!(matches!(&entries[4].1, Secret::Plain(p) if p.is_empty()));
    }

    #[test]
    fn empty_file_is_empty_list() {
        assert!(matches!(parse_userlist(""), Ok(v) if v.is_empty()));
        assert!(matches!(parse_userlist("\n;x\n"), Ok(v) if v.is_empty()));
    }

    #[test]
    fn bad_lines_name_the_line_and_hide_the_secret() {
        let cases = [
            ("\"ok\" \"pw\"\n\"alice\" \"topsecret\n", 2),
            ("\"alice\"\n", 1),
            ("alice topsecret\n", 1),
            ("\n\n\"\" \"topsecret\"\n", 3),
            ("\"alice\" topsecret\n", 1),
            ("\"alice\" \"topsecret\"x\n", 1),
            (
                "\"a\" \"b\"\n\"alice\" \"SCRAM-SHA-256$4096:topsecret\"\n",
                2,
            ),
        ];
        for (text, expected_line) in cases {
            match parse_userlist(text) {
                Err(err @ AuthError::BadAuthFile { line, .. }) => {
                    assert_eq!(line, expected_line, "{text:?}");
                    let shown = format!("{err} {err:?}");
                    assert!(shown.contains(&format!("line {expected_line}")), "{shown}");
                    assert!(!shown.contains("topsecret"), "{shown}");
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in any::<String>()) {
            let _ = parse_userlist(&text);
        }

        #[test]
        fn never_panics_on_quote_heavy_text(text in "[\"a ;#\\r\\n\t]{0,64}") {
            let _ = parse_userlist(&text);
        }

        #[test]
        fn round_trips_escaped_fields(user in "[^\\r\\n]{1,20}", pw in "[^\\r\\n]{0,20}") {
            let esc = |s: &str| s.replace('"', "\"\"");
            let text = format!("\"{}\" \"{}\"\n", esc(&user), esc(&pw));
            let parsed = parse_userlist(&text);
            match Secret::parse(&pw) {
                Ok(_) => {
                    let entries = parsed.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(entries.len(), 1);
                    prop_assert_eq!(&entries[0].0, &user);
                }
                Err(_) => prop_assert!(parsed.is_err()),
            }
        }
    }
}
