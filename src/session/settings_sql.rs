//! The SQL pgheal runs to read a client's settings from its server connection (the snapshot)
//! and to bring another server connection to exactly those settings (the restore), and the
//! parsing of the snapshot's answer. Pure: strings in, strings or [`ClientSettings`] out.
//!
//! Both statements run on connections whose state a client chose, so they are written to mean
//! the same whatever that state is:
//! - **Every name is schema-qualified**, operators included (`OPERATOR(pg_catalog.=)`): a client
//!   may have set `search_path = evil, pg_catalog`, where an unqualified `pg_settings` or `=`
//!   could resolve to its own objects.
//! - **Values travel hex-encoded, as the server's own bytes.** The snapshot reads
//!   `encode(convert_to(value, getdatabaseencoding()), 'hex')` and the restore writes
//!   `convert_from(decode('…', 'hex'), getdatabaseencoding())`. The SQL is then pure ASCII made
//!   of hex digits inside plain literals, so it means the same under any `client_encoding`
//!   (the server converts a Query from the encoding in force when it arrives, which is the
//!   previous client's) and any `standard_conforming_strings` (no backslash, no quote inside a
//!   literal), and values are bytes end to end, never decoded as UTF-8 by pgheal.
//! - **Settings are written with `set_config(name, value, false)`**, not `SET name = 'value'`:
//!   `SET search_path = 'a, b'` would set one schema named "a, b", while `set_config` parses the
//!   value as the server shows it, so what the snapshot read is exactly what the restore writes.
//!   `role` and `session_authorization` are settings too: `set_config('role', …)` is `SET ROLE`.

use super::settings::{ClientSettings, Setting};

/// The three `transaction_*` parameters show source `session` after a transaction that set
/// them, but they belong to one transaction and cannot be set at a session's top level.
const PER_TRANSACTION: [&[u8]; 3] = [
    b"transaction_isolation",
    b"transaction_read_only",
    b"transaction_deferrable",
];

/// `role` when no `SET ROLE` is in force (a role cannot be named "none").
const NO_ROLE: &[u8] = b"none";

/// A custom (placeholder) parameter name pgheal can put in a literal as it is: ASCII letters,
/// digits, `_`, `$` and at least one inner dot. Such names are lower-cased (the server matches
/// parameter names case-insensitively).
pub fn is_plain_custom_name(name: &[u8]) -> bool {
    name.contains(&b'.')
        && name.first() != Some(&b'.')
        && name.last() != Some(&b'.')
        && name.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'$' || b == b'.'
        })
}

fn hex_of(expr: &str) -> String {
    format!(
        "pg_catalog.encode(pg_catalog.convert_to({expr}, pg_catalog.getdatabaseencoding()), 'hex')"
    )
}

/// The snapshot query: one row per setting the session changed, as
/// `(kind, hex name, hex value)`: kind `g` for a parameter listed by `pg_settings` with source
/// `session`, `c` for each custom name the client was seen to use (`pg_settings` does not list
/// placeholders; a NULL value means the name is not defined on this connection), `r` for
/// `role`, `a` for `session_authorization` and `p` for whether the current role may read
/// every setting (`pg_settings` hides superuser-only ones from the others; hex 01 or 00).
pub fn snapshot_sql<'a>(custom_names: impl IntoIterator<Item = &'a str>) -> String {
    let mut sql = format!(
        "SELECT 'g', {}, {} FROM pg_catalog.pg_settings s WHERE s.source OPERATOR(pg_catalog.=) 'session'",
        hex_of("s.name"),
        hex_of("s.setting")
    );
    sql.push_str(&format!(
        " UNION ALL SELECT 'r', '', {}",
        hex_of("pg_catalog.current_setting('role')")
    ));
    sql.push_str(&format!(
        " UNION ALL SELECT 'a', '', {}",
        hex_of("pg_catalog.current_setting('session_authorization')")
    ));
    sql.push_str(
        " UNION ALL SELECT 'p', '', CASE WHEN pg_catalog.pg_has_role('pg_read_all_settings', \
         'USAGE') THEN '01' ELSE '00' END",
    );
    let mut values = String::new();
    for name in custom_names {
        if !is_plain_custom_name(name.as_bytes()) {
            continue;
        }
        if !values.is_empty() {
            values.push_str(", ");
        }
        values.push_str(&format!("('{name}')"));
    }
    if !values.is_empty() {
        sql.push_str(&format!(
            " UNION ALL SELECT 'c', {}, {} FROM (VALUES {values}) v(n)",
            hex_of("v.n"),
            hex_of("pg_catalog.current_setting(v.n, true)")
        ));
    }
    sql
}

/// Why a snapshot's answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected answer to the settings snapshot: {0}")]
pub struct BadSnapshot(pub &'static str);

/// Reads the rows of [`snapshot_sql`] (text columns). `login_user`: the user pgheal logged in
/// as (a `session_authorization` equal to it is no change). `untracked`: see
/// [`ClientSettings::untracked`]; forced on when the current role cannot read every setting
/// while a role or session authorization is in force (what is hidden cannot be carried, so the
/// connection must never be shared on the strength of this snapshot).
pub fn parse_snapshot(
    rows: &[Vec<Option<Vec<u8>>>],
    login_user: &[u8],
    untracked: Option<u64>,
    client_id: u64,
) -> Result<ClientSettings, BadSnapshot> {
    let mut gucs: Vec<Setting> = Vec::new();
    let mut custom: Vec<Setting> = Vec::new();
    let (mut role, mut session_authorization, mut reads_all) = (None, None, true);
    for row in rows {
        let [Some(kind), Some(name), value] = row.as_slice() else {
            return Err(BadSnapshot("a row without three columns"));
        };
        let name = unhex(name).ok_or(BadSnapshot("a name is not hex"))?;
        let value = match value {
            Some(v) => Some(unhex(v).ok_or(BadSnapshot("a value is not hex"))?),
            None => None,
        };
        match (kind.as_slice(), value) {
            (b"g", Some(v)) => {
                if !PER_TRANSACTION.contains(&name.as_slice()) {
                    gucs.push((name, v));
                }
            }
            (b"c", Some(v)) => custom.push((name, v)),
            (b"c", None) => {}
            (b"r", Some(v)) => role = (v != NO_ROLE).then_some(v),
            (b"a", Some(v)) => session_authorization = (v != login_user).then_some(v),
            (b"p", Some(v)) => reads_all = v == [1],
            _ => return Err(BadSnapshot("an unknown row kind or a NULL value")),
        }
    }
    // A custom name that is also a real parameter (an extension loaded after the name was
    // first used) is listed by pg_settings already.
    for (name, value) in custom {
        if !gucs.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            gucs.push((name, value));
        }
    }
    let hidden = !reads_all && (role.is_some() || session_authorization.is_some());
    let untracked = untracked.or(hidden.then_some(client_id));
    Ok(ClientSettings::new(
        gucs,
        session_authorization,
        role,
        untracked,
    ))
}

/// The restore: what makes a server connection carry exactly `s`, whatever it carried before.
/// `RESET ALL` leaves `role` and `session_authorization` alone (they are marked
/// `GUC_NO_RESET_ALL`), hence the two RESETs before it. Session authorization is set before
/// the role (setting it resets the role), both after the parameters (the role may be allowed
/// fewer of them than the user pgheal logged in as, who could set them all when the client
/// did). One Query: the statements run in one implicit transaction, so a failure leaves the
/// connection as it was, and the caller closes it anyway.
pub fn restore_sql(s: &ClientSettings) -> String {
    let mut sql = String::from("RESET SESSION AUTHORIZATION;RESET ROLE;RESET ALL;");
    set_config_sql(&mut sql, s.settings());
    if let Some(a) = s.session_authorization() {
        set_config_sql(&mut sql, [(&b"session_authorization"[..], a)]);
    }
    if let Some(r) = s.role() {
        set_config_sql(&mut sql, [(&b"role"[..], r)]);
    }
    sql
}

/// `SELECT set_config(…)` per (name, value), in order, appended to `sql`.
pub fn set_config_sql<'a>(sql: &mut String, pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
    for (name, value) in pairs {
        sql.push_str("SELECT pg_catalog.set_config(");
        push_server_text(sql, name);
        sql.push_str(", ");
        push_server_text(sql, value);
        sql.push_str(", false);");
    }
}

/// An expression whose value is the text with these bytes in the server's encoding.
fn push_server_text(sql: &mut String, bytes: &[u8]) {
    sql.push_str("pg_catalog.convert_from(pg_catalog.decode('");
    push_hex(sql, bytes);
    sql.push_str("', 'hex'), pg_catalog.getdatabaseencoding())");
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

/// The bytes of a hex string (as `encode(…, 'hex')` writes it).
fn unhex(hex: &[u8]) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Hex of bytes, for keys that must tell any two byte strings apart.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, name: &[u8], value: Option<&[u8]>) -> Vec<Option<Vec<u8>>> {
        vec![
            Some(kind.as_bytes().to_vec()),
            Some(hex(name).into_bytes()),
            value.map(|v| hex(v).into_bytes()),
        ]
    }

    #[test]
    fn hex_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(hex(&all).as_bytes()), Some(all));
        assert_eq!(unhex(b"abc"), None);
        assert_eq!(unhex(b"zz"), None);
    }

    #[test]
    fn snapshot_rows_become_settings() {
        let rows = vec![
            row("g", b"search_path", Some(b"shop, \"B c\"")),
            row("g", b"transaction_isolation", Some(b"read committed")),
            row("r", b"", Some(b"tenant_a")),
            row("a", b"", Some(b"app")),
            row("p", b"", Some(&[1])),
            row("c", b"app.tenant", Some(b"\xe9t\xe9")),
            row("c", b"app.unset", None),
        ];
        let s = parse_snapshot(&rows, b"app", None, 7).unwrap();
        assert_eq!(
            s.settings().collect::<Vec<_>>(),
            vec![
                (&b"app.tenant"[..], &b"\xe9t\xe9"[..]),
                (&b"search_path"[..], &b"shop, \"B c\""[..])
            ]
        );
        assert_eq!(s.role(), Some(&b"tenant_a"[..]));
        assert_eq!(s.session_authorization(), None);
        assert_eq!(s.untracked(), None);
        let sql = restore_sql(&s);
        assert!(sql.starts_with("RESET SESSION AUTHORIZATION;RESET ROLE;RESET ALL;SELECT"));
        assert!(sql.is_ascii() && !sql.contains('\\'));
        assert!(sql.ends_with(&format!(
            "SELECT pg_catalog.set_config(pg_catalog.convert_from(pg_catalog.decode('{}', 'hex'), \
             pg_catalog.getdatabaseencoding()), pg_catalog.convert_from(pg_catalog.decode('{}', \
             'hex'), pg_catalog.getdatabaseencoding()), false);",
            hex(b"role"),
            hex(b"tenant_a")
        )));
    }

    #[test]
    fn hidden_settings_make_a_snapshot_untracked() {
        let rows = vec![row("r", b"", Some(b"tenant_a")), row("p", b"", Some(&[0]))];
        let s = parse_snapshot(&rows, b"app", None, 7).unwrap();
        assert_eq!(s.untracked(), Some(7));
        let rows = vec![row("r", b"", Some(b"none")), row("p", b"", Some(&[0]))];
        let s = parse_snapshot(&rows, b"app", None, 7).unwrap();
        assert_eq!(s, ClientSettings::default());
        assert!(parse_snapshot(&[vec![Some(b"x".to_vec())]], b"app", None, 7).is_err());
        assert!(parse_snapshot(&[row("g", b"a", None)], b"app", None, 7).is_err());
    }

    #[test]
    fn snapshot_sql_lists_plain_custom_names_only() {
        let sql = snapshot_sql(["app.tenant", "evil');--.x", "nodot"]);
        assert!(sql.contains("(VALUES ('app.tenant')) v(n)"), "{sql}");
        assert!(!sql.contains("evil") && !sql.contains("nodot"));
        assert!(!snapshot_sql(["nodot"]).contains("VALUES"));
    }
}
