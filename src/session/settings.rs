//! Session state in transaction pooling.
//!
//! A client's server connection changes between transactions, so session-level state set on
//! one connection is missing on the next. pgheal carries what it can:
//! - **Settings**: startup parameters and `SET`/`RESET` sent as simple queries outside a
//!   transaction block are remembered and re-applied (`RESET ALL` + the `SET`s) whenever the
//!   client gets a connection whose applied settings differ (compared by fingerprint, so
//!   clients with the same settings share connections without extra round trips).
//! - **Held for the client** ([`super::listen`]): `LISTEN`, on a listening connection of
//!   pgheal's own.
//! - **Kept with its connection** ([`super::pin`]): temporary objects, `WITH HOLD` cursors and
//!   session advisory locks, found in the client's SQL by [`session_state_in`]; the client keeps
//!   its server connection while they last.

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

/// Session state a statement may leave on its server connection, as a bit set: what makes
/// pgheal check the connection at the end of the transaction (see [`super::pin`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateKinds(u8);

impl StateKinds {
    pub const NONE: StateKinds = StateKinds(0);
    /// Temporary tables, views, sequences, functions or types (`CREATE TEMP ...`,
    /// `SELECT ... INTO TEMP`, anything in `pg_temp`).
    pub const TEMP: StateKinds = StateKinds(1);
    /// `DECLARE ... CURSOR WITH HOLD`.
    pub const HOLD_CURSOR: StateKinds = StateKinds(2);
    /// Session-level advisory locks (`pg_advisory_lock`, `pg_try_advisory_lock` and their
    /// `_shared` variants; the `_xact_` ones end with the transaction).
    pub const ADVISORY_LOCK: StateKinds = StateKinds(4);
    /// A `LISTEN` that reached the server (pgheal answers plain ones itself, see
    /// [`super::listen`]).
    pub const LISTEN: StateKinds = StateKinds(8);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: StateKinds) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: StateKinds) -> StateKinds {
        StateKinds(self.0 | other.0)
    }
}

/// The session state `sql` (a simple query or a Parse's text) may create. Words are compared
/// ASCII case-insensitively, without telling code from string literals or comments: a false
/// positive costs one check query, a miss would hand state to another client. State created
/// inside functions (a PL/pgSQL `CREATE TEMP TABLE`, a function taking an advisory lock) is not
/// visible here.
pub fn session_state_in(sql: &[u8]) -> StateKinds {
    let mut kinds = StateKinds::NONE;
    let mut prev: &[u8] = b"";
    let mut i = 0;
    while i < sql.len() {
        let b = sql[i];
        if !(b.is_ascii_alphabetic() || b == b'_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < sql.len() && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_' || sql[i] == b'$')
        {
            i += 1;
        }
        let word = &sql[start..i];
        let is = |w: &[u8], want: &[u8]| w.eq_ignore_ascii_case(want);
        let found = match word.len() {
            4 | 9 if is(word, b"temp") || is(word, b"temporary") => {
                // CREATE [OR REPLACE] [LOCAL|GLOBAL] TEMP ..., SELECT ... INTO TEMP ...
                if [&b"create"[..], b"replace", b"local", b"global", b"into"]
                    .iter()
                    .any(|w| is(prev, w))
                {
                    StateKinds::TEMP
                } else {
                    StateKinds::NONE
                }
            }
            7 if is(word, b"pg_temp") => StateKinds::TEMP,
            4 if is(word, b"hold") && is(prev, b"with") => StateKinds::HOLD_CURSOR,
            6 if is(word, b"listen") => StateKinds::LISTEN,
            16 | 20 | 23 | 27
                if is(word, b"pg_advisory_lock")
                    || is(word, b"pg_try_advisory_lock")
                    || is(word, b"pg_advisory_lock_shared")
                    || is(word, b"pg_try_advisory_lock_shared") =>
            {
                StateKinds::ADVISORY_LOCK
            }
            _ => StateKinds::NONE,
        };
        kinds = kinds.union(found);
        prev = word;
    }
    kinds
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

    #[test]
    fn finds_session_state() {
        let k = |sql: &str| session_state_in(sql.as_bytes());
        for sql in [
            "CREATE TEMP TABLE t(x int)",
            "create temporary table t as select 1",
            "CREATE LOCAL TEMPORARY TABLE t()",
            "CREATE GLOBAL TEMP TABLE t()",
            "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
            "CREATE TEMP SEQUENCE s",
            "SELECT 1 AS x INTO TEMP t",
            "create table pg_temp.t()",
            "CREATE FUNCTION PG_TEMP.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "BEGIN; CREATE\n TEMP\tTABLE t(); COMMIT",
        ] {
            assert_eq!(k(sql), StateKinds::TEMP, "{sql}");
        }
        assert_eq!(
            k("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
            StateKinds::HOLD_CURSOR
        );
        assert_eq!(
            k("declare c cursor with\nhold for select 1"),
            StateKinds::HOLD_CURSOR
        );
        for sql in [
            "SELECT pg_advisory_lock(1)",
            "select PG_TRY_ADVISORY_LOCK($1, $2)",
            "SELECT pg_advisory_lock_shared(7)",
            "SELECT pg_try_advisory_lock_shared(7)",
        ] {
            assert_eq!(k(sql), StateKinds::ADVISORY_LOCK, "{sql}");
        }
        assert_eq!(k("SELECT 1; LISTEN jobs"), StateKinds::LISTEN);
        assert_eq!(
            k("CREATE TEMP TABLE t(); SELECT pg_advisory_lock(1)"),
            StateKinds::TEMP.union(StateKinds::ADVISORY_LOCK)
        );
        for sql in [
            "SELECT 1",
            "SELECT temp FROM weather",
            "SELECT template_x, temperature FROM t",
            "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1",
            "SELECT pg_advisory_xact_lock(1)",
            "SELECT pg_try_advisory_xact_lock(1)",
            "SELECT pg_advisory_unlock(1)",
            "SELECT my_pg_advisory_lock(1)",
            "SELECT listener FROM t",
            "PREPARE TRANSACTION 'x'",
            "NOTIFY jobs",
        ] {
            assert_eq!(k(sql), StateKinds::NONE, "{sql}");
        }
    }
}
