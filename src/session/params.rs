//! A client's startup parameters (application_name, client_encoding, DateStyle, `options`
//! with `-c name=value`, ...) applied to its server connection with `set_config`, since
//! pooled connections were opened with pgheal's own startup packet.
//!
//! PostgreSQL refuses a login whose startup parameter it rejects (`FATAL 22023 invalid value
//! for parameter "statement_timeout": "abc"`); pgheal must too, in both pool modes. Session
//! pooling applies the settings at login anyway. Transaction pooling answers logins without a
//! server connection when it can, so it checks each new combination of startup settings once
//! per pool on a server connection ([`validate`]) and remembers what the server made of it
//! ([`StartupMemo`]): the client's settings as a snapshot reads them (so clients with the same
//! startup settings share connections without restores) and the exact ParameterStatus values
//! (`DateStyle=german` is reported as `German, DMY`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::pool::{PoolKey, ServerConn};
use crate::protocol::startup::StartupParams;
use crate::protocol::{backend, encode, Frame};

use super::settings::{self, ClientSettings, SettingsError, PRISTINE, UNKNOWN};
use super::settings_sql::set_config_sql;
use super::settings_watch::SettingsWatch;
use super::SessionError;

/// Startup keys that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// The settings a startup packet asks for, including `-c name=value` / `--name=value` from
/// `options`.
pub fn requested_settings(p: &StartupParams) -> Result<Vec<(String, String)>, SessionError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in &p.params {
        if k == "replication" {
            return Err(SessionError::UnsupportedParam(k.clone()));
        }
        if !NOT_SETTINGS.contains(&k.as_str()) {
            out.push((k.clone(), v.clone()));
        }
    }
    if let Some(options) = p.get("options") {
        let mut words = options.split_whitespace();
        while let Some(w) = words.next() {
            let setting = if w == "-c" {
                words.next()
            } else {
                w.strip_prefix("--").or_else(|| w.strip_prefix("-c"))
            };
            match setting.and_then(|s| s.split_once('=')) {
                Some((k, v)) => out.push((k.replace('-', "_"), v.to_owned())),
                None => return Err(SessionError::UnsupportedParam("options".into())),
            }
        }
    }
    Ok(out)
}

/// Bring a session-pooling server connection to the client's startup settings (on top of
/// whatever `server_reset_query` left; a connection of unknown state is reset first). A setting
/// the server refuses refuses the login with the server's error as FATAL, as PostgreSQL
/// refuses a bad startup parameter. Not cancel-safe.
pub async fn apply(
    conn: &mut ServerConn,
    settings: &[(String, String)],
) -> Result<(), SessionError> {
    let mut sql = String::new();
    if conn.applied_settings != PRISTINE {
        sql.push_str("RESET SESSION AUTHORIZATION;RESET ROLE;RESET ALL;");
    }
    set_config_sql(
        &mut sql,
        settings.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    );
    conn.applied_settings = UNKNOWN;
    if sql.is_empty() {
        conn.applied_settings = PRISTINE;
        return Ok(());
    }
    match conn
        .simple_query(&sql)
        .await
        .map_err(crate::pool::PoolError::from)?
    {
        None => Ok(()),
        Some(err) => Err(SessionError::ParamRejected(as_fatal(&err))),
    }
}

/// What the server made of a combination of startup settings: the client's settings as a
/// snapshot reads them, and the ParameterStatus values a client with them is sent at login.
#[derive(Debug)]
pub struct Accepted {
    pub settings: ClientSettings,
    /// Shared by every client that logs in with these settings (see [`Reported`]).
    pub reported: Arc<BTreeMap<String, String>>,
}

/// Transaction pooling: check the client's startup settings on a server connection, as
/// PostgreSQL checks them at login, and learn what they amount to. Restores the connection to
/// exactly these settings, then takes a snapshot. `Ok(Err(frame))`: the server refused one;
/// the frame is its error as FATAL, and the connection is left [`UNKNOWN`] (restored before
/// its next use). Not cancel-safe.
pub async fn validate(
    conn: &mut ServerConn,
    settings: &[(String, String)],
    login_user: &str,
) -> Result<Result<Accepted, Frame>, SettingsError> {
    conn.applied_settings = UNKNOWN;
    let mut sql = String::from("RESET SESSION AUTHORIZATION;RESET ROLE;RESET ALL;");
    set_config_sql(
        &mut sql,
        settings.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    );
    if let Some(err) = conn.simple_query(&sql).await? {
        return Ok(Err(as_fatal(&err)));
    }
    let watch = SettingsWatch::with_startup(settings);
    let settings = settings::snapshot(conn, &watch, login_user).await?;
    Ok(Ok(Accepted {
        settings,
        reported: Arc::new(conn.params.clone()),
    }))
}

/// Startup-setting combinations the server accepted, per pool, so that transaction pooling
/// checks each combination once (one checkout) instead of on every login. Bounded: the oldest
/// combination is forgotten first (and checked again when it comes back).
#[derive(Debug, Default)]
pub struct StartupMemo {
    inner: Mutex<MemoInner>,
}

#[derive(Debug, Default)]
struct MemoInner {
    map: HashMap<MemoKey, Arc<Accepted>>,
    order: VecDeque<MemoKey>,
}

type MemoKey = (PoolKey, Vec<(String, String)>);

/// Combinations remembered (all pools together).
const MEMO_CAP: usize = 1024;

impl StartupMemo {
    pub fn get(&self, pool: &PoolKey, settings: &[(String, String)]) -> Option<Arc<Accepted>> {
        let inner = self.inner.lock().ok()?;
        inner.map.get(&(pool.clone(), settings.to_vec())).cloned()
    }

    pub fn insert(&self, pool: &PoolKey, settings: &[(String, String)], a: Arc<Accepted>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let key = (pool.clone(), settings.to_vec());
        if inner.map.insert(key.clone(), a).is_none() {
            inner.order.push_back(key);
        }
        while inner.order.len() > MEMO_CAP {
            if let Some(old) = inner.order.pop_front() {
                inner.map.remove(&old);
            }
        }
    }
}

/// The same ErrorResponse with severity FATAL: a startup setting the server refuses with ERROR
/// on `SET` refuses the login, as it does in a startup packet.
fn as_fatal(err: &Frame) -> Frame {
    let body = err.body();
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        out.push(code);
        match code {
            b'S' | b'V' => out.extend_from_slice(b"FATAL"),
            _ => out.extend_from_slice(&tail[..end]),
        }
        out.push(0);
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    out.push(0);
    encode::raw(backend::ERROR_RESPONSE, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> StartupParams {
        StartupParams {
            params: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn settings_from_params_and_options() {
        let p = params(&[
            ("user", "app"),
            ("database", "db"),
            ("application_name", "web"),
            (
                "options",
                "-c search_path=shop --statement-timeout=5s -cwork_mem=8MB",
            ),
        ]);
        assert_eq!(
            requested_settings(&p).unwrap(),
            vec![
                ("application_name".to_string(), "web".to_string()),
                ("search_path".to_string(), "shop".to_string()),
                ("statement_timeout".to_string(), "5s".to_string()),
                ("work_mem".to_string(), "8MB".to_string()),
            ]
        );
        assert!(requested_settings(&params(&[("replication", "true")])).is_err());
        assert!(requested_settings(&params(&[("options", "-x")])).is_err());
    }

    #[test]
    fn errors_become_fatal() {
        let err = encode::error_response("ERROR", "22023", "invalid value");
        let fatal = as_fatal(&err);
        let f = crate::protocol::backend::ErrorFields::decode(&fatal).unwrap();
        assert_eq!(f.get(b'S'), Some(&b"FATAL"[..]));
        assert_eq!(f.get(b'V'), Some(&b"FATAL"[..]));
        assert_eq!(f.code(), Some("22023"));
        assert_eq!(f.message(), Some(&b"invalid value"[..]));
        // Truncated input: no panic, the fields that were whole are kept.
        let cut = encode::raw(b'E', b"SERROR\0C220");
        let f = as_fatal(&cut);
        assert_eq!(f.body(), b"SFATAL\0C220\0\0");
    }
}
