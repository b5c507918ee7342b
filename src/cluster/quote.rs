//! Quoting for the four languages a throwaway cluster writes in: URLs (percent-encoding),
//! `postgresql.conf` values, libpq conninfo values, and SQL identifiers and literals. Each has
//! its own rules, and getting one wrong breaks a cluster on the first password with a quote
//! in it, so they live together with their tests.

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(super) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A value for `postgresql.conf`: single-quoted unless the caller already quoted it.
pub(super) fn conf_value(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    }
}

/// A value for a libpq conninfo string.
pub(super) fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An SQL identifier, always double-quoted.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal (`standard_conforming_strings` is on).
pub(super) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_unreserved_only() {
        assert_eq!(percent_encode("app_user-1.x~"), "app_user-1.x~");
        assert_eq!(
            percent_encode("p@ss:w/rd %é"),
            "p%40ss%3Aw%2Frd%20%25%C3%A9"
        );
    }

    #[test]
    fn conf_values_are_quoted_once() {
        assert_eq!(conf_value("on"), "'on'");
        assert_eq!(conf_value("'on'"), "'on'");
        assert_eq!(conf_value("it's"), "'it''s'");
    }

    #[test]
    fn sql_quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(conninfo_quote("a'b\\c"), "'a\\'b\\\\c'");
    }
}
