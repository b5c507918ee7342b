//! Session settings in transaction pooling: a security boundary between the clients that
//! share server connections.
//!
//! A client's server connection changes between transactions, so whatever it set on one
//! connection (`SET`, `SET ROLE`, `SET SESSION AUTHORIZATION`, `set_config`, startup
//! parameters) must follow it to the next one, and must never reach another client.
//!
//! **Learned from the server, not parsed from SQL.** When a transaction may have changed
//! settings ([`super::settings_watch`] notices `SET`/`RESET`/`DISCARD ALL`/`DO`/`CALL` tags,
//! ParameterStatus and `set_config`), pgheal reads the session's state back on the same connection at the
//! transaction's end, before releasing it: the parameters `pg_settings` lists with source
//! `session`, the custom names the client used, `role` and `session_authorization` (see
//! [`super::settings_sql`]). That snapshot *is* the client's settings, so a `SET` in a
//! rolled-back transaction, `SET LOCAL`, a `SET` the server rejected, `RESET` and `RESET ALL`
//! are right by construction, however the SQL was written and whichever protocol carried it.
//! The snapshot costs a round trip only in transactions that may have changed something, and
//! it is invisible to the client (its ReadyForQuery was already forwarded).
//!
//! **Restored before a connection serves another client.** Each connection records the
//! [`ClientSettings::fingerprint`] of the settings it carries ([`UNKNOWN`] when a transaction
//! changed them and no snapshot followed). When a client gets a connection with another
//! fingerprint, pgheal runs `RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL;` and the
//! client's `set_config` calls (`RESET ALL` alone keeps the role: that is how `SET ROLE`
//! leaked). Clients with the same settings share connections without a round trip. A restore
//! that fails closes that connection; pgheal tries another.
//!
//! **What the client is told.** The client's ParameterStatus view ([`Reported`]) is what it
//! was sent at login plus every ParameterStatus forwarded since. Whenever the connection it
//! is attached to reports other values (a restore, a server whose defaults changed), pgheal
//! sends ParameterStatus for the differences before any answer, so libpq never escapes
//! strings for a `standard_conforming_strings` the server does not have.
//!
//! **Not carried** (see the README): settings changed inside functions called from a query,
//! without a ParameterStatus (they are not seen, and the connection is not marked), and
//! session state that is not a setting: `LISTEN` is held by pgheal ([`super::listen`]);
//! temporary objects, `WITH HOLD` cursors and session advisory locks, found by
//! [`session_state_in`], keep the client on its connection ([`super::pin`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use crate::pool::{ServerConn, ServerError};
use crate::protocol::{backend, encode, Frame};

use super::settings_sql::{self, BadSnapshot};
use super::settings_watch::SettingsWatch;

/// A connection whose settings pgheal does not know: restored before any client uses it.
pub const UNKNOWN: u64 = 0;
/// A connection carrying no session settings (as logged in, or after a restore to none).
pub const PRISTINE: u64 = 1;

/// A parameter name and value, as the server's bytes.
pub type Setting = (Vec<u8>, Vec<u8>);

/// One client's session settings, as the server reported them in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Sorted by name.
    settings: Vec<Setting>,
    session_authorization: Option<Vec<u8>>,
    role: Option<Vec<u8>>,
    /// See [`Self::untracked`].
    untracked: Option<u64>,
    fingerprint: u64,
    statement_key: Option<Arc<str>>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings::new(Vec::new(), None, None, None)
    }
}

impl ClientSettings {
    pub fn new(
        mut settings: Vec<Setting>,
        session_authorization: Option<Vec<u8>>,
        role: Option<Vec<u8>>,
        untracked: Option<u64>,
    ) -> Self {
        settings.sort();
        settings.dedup_by(|a, b| a.0 == b.0);
        let pristine = settings.is_empty()
            && session_authorization.is_none()
            && role.is_none()
            && untracked.is_none();
        let fingerprint = if pristine {
            PRISTINE
        } else {
            let mut h = DefaultHasher::new();
            (&settings, &session_authorization, &role, untracked).hash(&mut h);
            // Never UNKNOWN nor PRISTINE.
            h.finish() | 2
        };
        let search_path = settings
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"search_path"))
            .map(|(_, v)| v.as_slice());
        // The same bytes are other characters in another client encoding: statements of
        // clients with different encodings are never shared.
        let client_encoding = settings
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"client_encoding"))
            .map(|(_, v)| v.as_slice());
        let statement_key = (search_path.is_some()
            || client_encoding.is_some()
            || role.is_some()
            || session_authorization.is_some())
        .then(|| {
            let hex = |v: Option<&[u8]>| v.map(settings_sql::hex).unwrap_or_default();
            Arc::from(format!(
                "{}/{}/{}/{}",
                hex(search_path),
                hex(client_encoding),
                hex(role.as_deref()),
                hex(session_authorization.as_deref())
            ))
        });
        ClientSettings {
            settings,
            session_authorization,
            role,
            untracked,
            fingerprint,
            statement_key,
        }
    }

    /// The parameters, sorted by name.
    pub fn settings(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.settings
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
    }

    /// The session user set by `SET SESSION AUTHORIZATION`, if not the user pgheal logged in as.
    pub fn session_authorization(&self) -> Option<&[u8]> {
        self.session_authorization.as_deref()
    }

    /// The role set by `SET ROLE`.
    pub fn role(&self) -> Option<&[u8]> {
        self.role.as_deref()
    }

    /// Set when the client changed settings pgheal cannot name (see
    /// [`super::settings_watch`]): a per-client id that makes the fingerprint unique, so no
    /// other client ever gets a connection it used without a restore.
    pub fn untracked(&self) -> Option<u64> {
        self.untracked
    }

    /// Identifies the settings: [`PRISTINE`] for none, never [`UNKNOWN`].
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// What transaction pooling keys pool-wide statement names by, besides their text: the
    /// search_path, and the role and session user (`"$user"` in a search_path resolves to
    /// the current user). None for the defaults.
    pub fn statement_key(&self) -> Option<Arc<str>> {
        self.statement_key.clone()
    }
}

/// Why the client's settings could not be read or carried.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The server refused a statement; its ErrorResponse.
    #[error("the server refused a settings statement: {}", error_message(.0))]
    Rejected(Frame),
    #[error(transparent)]
    BadSnapshot(#[from] BadSnapshot),
}

fn error_message(f: &Frame) -> String {
    backend::ErrorFields::decode(f)
        .ok()
        .and_then(|e| {
            Some(format!(
                "{} {}",
                e.code()?,
                String::from_utf8_lossy(e.message()?)
            ))
        })
        .unwrap_or_default()
}

/// Bring `conn` to exactly the settings `s` and record their fingerprint on it. On error the
/// connection's state is unknown: the caller closes it. Not cancel-safe.
pub async fn restore(conn: &mut ServerConn, s: &ClientSettings) -> Result<(), SettingsError> {
    conn.applied_settings = UNKNOWN;
    match conn.simple_query(&settings_sql::restore_sql(s)).await? {
        None => {
            conn.applied_settings = s.fingerprint();
            Ok(())
        }
        Some(err) => Err(SettingsError::Rejected(err)),
    }
}

/// Read the settings the session on `conn` carries, and record their fingerprint on it.
/// `login_user`: the user pgheal logged in as. Not cancel-safe.
pub async fn snapshot(
    conn: &mut ServerConn,
    watch: &SettingsWatch,
    login_user: &str,
) -> Result<ClientSettings, SettingsError> {
    conn.applied_settings = UNKNOWN;
    let sql = settings_sql::snapshot_sql(watch.custom_names());
    let rows = conn
        .query_rows(&sql)
        .await?
        .map_err(SettingsError::Rejected)?;
    let s =
        settings_sql::parse_snapshot(&rows, login_user.as_bytes(), watch.untracked(), watch.id())?;
    conn.applied_settings = s.fingerprint();
    Ok(s)
}

/// The ParameterStatus values a client was told, to tell it what changes when pgheal moves it
/// to another server connection.
///
/// Shared until it differs: every client of a pool starts from the same values (an `Arc` of
/// the pool's map, not a copy of about 1.4 KiB per client), and a client's own copy is made
/// at its first ParameterStatus that changes one.
#[derive(Debug, Default)]
pub struct Reported {
    told: Arc<BTreeMap<String, String>>,
    /// The `params_gen` of the connection last compared with `told`.
    synced: u64,
}

impl Reported {
    /// What the client was sent at login.
    pub fn new(told: Arc<BTreeMap<String, String>>) -> Self {
        Reported { told, synced: 0 }
    }

    /// What the client was told (an online restart takes it along).
    pub fn told(&self) -> &BTreeMap<String, String> {
        &self.told
    }

    /// A ParameterStatus forwarded to the client.
    pub fn forwarded(&mut self, f: &Frame) {
        // Values that are not UTF-8 (a non-ASCII value in a client encoding that is not) are
        // not tracked, as on the server connection (`ServerConn::note_parameter`).
        let Ok((k, v)) = backend::decode_parameter_status(f) else {
            return;
        };
        if let (Ok(k), Ok(v)) = (std::str::from_utf8(k), std::str::from_utf8(v)) {
            if self.told.get(k).map(String::as_str) != Some(v) {
                Arc::make_mut(&mut self.told).insert(k.to_owned(), v.to_owned());
            }
        }
    }

    /// ParameterStatus for every value `conn` reports differently from what the client was
    /// told, appended to `to_client`. A comparison of one counter when nothing changed since
    /// the last call.
    pub fn sync(&mut self, conn: &ServerConn, to_client: &mut Vec<Bytes>) {
        if conn.params_gen == self.synced {
            return;
        }
        for (k, v) in &conn.params {
            if self.told.get(k) != Some(v) {
                to_client.push(encode::parameter_status(k, v).bytes);
                Arc::make_mut(&mut self.told).insert(k.clone(), v.clone());
            }
        }
        self.synced = conn.params_gen;
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

    fn s(settings: &[(&str, &str)], role: Option<&str>) -> ClientSettings {
        ClientSettings::new(
            settings
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            None,
            role.map(|r| r.as_bytes().to_vec()),
            None,
        )
    }

    #[test]
    fn fingerprints_tell_settings_apart() {
        assert_eq!(ClientSettings::default().fingerprint(), PRISTINE);
        assert_eq!(ClientSettings::default().statement_key(), None);
        let a = s(&[("TimeZone", "UTC"), ("application_name", "a")], None);
        let same = s(&[("application_name", "a"), ("TimeZone", "UTC")], None);
        assert_eq!(a.fingerprint(), same.fingerprint());
        assert!(a.fingerprint() > PRISTINE);
        assert_eq!(a.statement_key(), None);
        let role = s(&[("TimeZone", "UTC"), ("application_name", "a")], Some("x"));
        assert_ne!(a.fingerprint(), role.fingerprint());
        assert!(role.statement_key().is_some());
        let untracked = ClientSettings::new(Vec::new(), None, None, Some(3));
        assert!(untracked.fingerprint() > PRISTINE);
        assert_ne!(
            untracked.fingerprint(),
            ClientSettings::new(Vec::new(), None, None, Some(4)).fingerprint()
        );
        let p1 = s(&[("search_path", "a")], None);
        let p2 = s(&[("search_path", "b")], None);
        assert_ne!(p1.statement_key(), p2.statement_key());
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
