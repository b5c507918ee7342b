//! Session state in transaction pooling.
//!
//! A client's server connection changes between transactions, so session-level state set on
//! one connection is missing on the next. pgheal carries what it can:
//! - **Settings**: startup parameters and `SET`/`RESET` sent as simple queries outside a
//!   transaction block are remembered and re-applied (`RESET ALL` + the `SET`s) whenever the
//!   client gets a connection whose applied settings differ (compared by fingerprint, so
//!   clients with the same settings share connections without extra round trips).
//! - **Not carried** (logged once per client): `LISTEN`, SQL-level `PREPARE`, `WITH HOLD`
//!   cursors, session advisory locks, temporary tables. Use session pooling for clients that
//!   need them.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    /// (lower-case name, the SQL statement that sets it), in the order first set.
    list: Vec<(String, String)>,
}

fn quote_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

impl ClientSettings {
    pub fn from_startup(settings: &[(String, String)]) -> Self {
        let mut s = ClientSettings::default();
        for (k, v) in settings {
            let stmt = format!(
                "SET {} = {}",
                crate::statements::sql_prepare::quote_ident(k),
                quote_literal(v)
            );
            s.put(k.to_ascii_lowercase(), stmt);
        }
        s
    }

    fn put(&mut self, name: String, stmt: String) {
        match self.list.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 = stmt,
            None => self.list.push((name, stmt)),
        }
    }

    /// Watch a simple query sent outside a transaction block. Returns true when the settings
    /// changed.
    pub fn observe(&mut self, sql: &str) -> bool {
        let stmt = sql.trim().trim_end_matches(';').trim();
        if stmt.contains(';') {
            return false;
        }
        let lower = stmt.to_ascii_lowercase();
        let mut words = lower.split_whitespace();
        match words.next() {
            Some("set") => {
                let mut name = words.next().unwrap_or("");
                if name == "session" {
                    name = words.next().unwrap_or("");
                }
                if name.is_empty() || name == "local" || name == "transaction" {
                    return false;
                }
                let name = match name {
                    "time" => "timezone".to_owned(),
                    "names" => "client_encoding".to_owned(),
                    n => n
                        .split('=')
                        .next()
                        .unwrap_or(n)
                        .trim_matches('"')
                        .to_owned(),
                };
                self.put(name, stmt.to_owned());
                true
            }
            Some("reset") => match words.next() {
                Some("all") => {
                    let changed = !self.list.is_empty();
                    self.list.clear();
                    changed
                }
                Some(name) => {
                    let before = self.list.len();
                    self.list.retain(|(n, _)| n != name);
                    before != self.list.len()
                }
                None => false,
            },
            _ => false,
        }
    }

    /// What makes a connection carry exactly these settings.
    pub fn apply_sql(&self) -> String {
        let mut sql = String::from("RESET ALL;");
        for (_, stmt) in &self.list {
            sql.push_str(stmt);
            sql.push(';');
        }
        sql
    }

    /// Identifies the settings; 0 is reserved for "none applied".
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.list.hash(&mut h);
        h.finish() | 1
    }

    /// What transaction pooling keys statement texts by (see `statements::names`): the
    /// `search_path` and the `client_encoding` the client asked for, as written; the same bytes
    /// are another statement under another encoding.
    pub fn search_path(&self) -> Option<Arc<str>> {
        let mut key = String::new();
        for (n, stmt) in &self.list {
            if n == "search_path" || n == "client_encoding" {
                key.push_str(stmt);
                key.push('\n');
            }
        }
        (!key.is_empty()).then(|| key.trim_end().into())
    }
}

/// Session state that transaction pooling cannot carry, warned about once per client.
#[derive(Debug, Default)]
pub struct StateWarnings {
    warned: u8,
}

impl StateWarnings {
    /// Log a warning the first time a client uses each kind of session state.
    pub fn check(&mut self, sql: &str) {
        const KINDS: [(&str, &str); 6] = [
            ("listen ", "LISTEN"),
            ("prepare ", "SQL-level PREPARE"),
            ("with hold", "WITH HOLD cursors"),
            ("pg_advisory_lock", "session advisory locks"),
            ("create temp", "temporary tables"),
            ("create temporary", "temporary tables"),
        ];
        let lower = sql.to_ascii_lowercase();
        for (i, (needle, what)) in KINDS.iter().enumerate() {
            let bit = 1u8 << i;
            if self.warned & bit == 0 && lower.contains(needle) {
                self.warned |= bit;
                tracing::warn!(
                    state = what,
                    "session state does not survive transaction pooling: the next transaction may run on another server connection"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_set_and_reset() {
        let mut s = ClientSettings::from_startup(&[("application_name".into(), "web".into())]);
        let f0 = s.fingerprint();
        assert!(s.observe("SET search_path TO shop, public"));
        assert!(s.observe("set statement_timeout = '5s';"));
        assert!(!s.observe("SET LOCAL work_mem = '1MB'"));
        assert!(!s.observe("SELECT 1"));
        assert!(s.observe("SET TIME ZONE 'UTC'"));
        assert_eq!(
            s.apply_sql(),
            "RESET ALL;SET \"application_name\" = 'web';SET search_path TO shop, public;set statement_timeout = '5s';SET TIME ZONE 'UTC';"
        );
        assert_eq!(
            s.search_path().as_deref(),
            Some("SET search_path TO shop, public")
        );
        assert!(s.observe("SET NAMES 'LATIN9'"));
        assert_eq!(
            s.search_path().as_deref(),
            Some("SET search_path TO shop, public\nSET NAMES 'LATIN9'")
        );
        assert!(s.observe("RESET client_encoding"));
        assert!(s.observe("RESET statement_timeout"));
        assert_ne!(s.fingerprint(), f0);
        assert!(s.observe("RESET ALL"));
        assert_eq!(s.apply_sql(), "RESET ALL;");
    }
}
