//! `auth_user` / `auth_query` / `auth_dbname` (PgBouncer's): the secret of a client user that
//! is not in the auth_file, looked up on the server.
//!
//! pgheal connects as the database entry's `auth_user` (credentials from the auth_file: a plain
//! password or an md5 hash) to `auth_dbname` (default: the entry's server database) and runs
//! `auth_query` with the client's user name as `$1`, over the extended protocol so the name is
//! a parameter, never SQL. The second column of the one row is the secret (a SCRAM verifier, an
//! md5 hash, or NULL). No row, NULL or an unparsable value: the user gets the same mock
//! exchange and the same `28P01` as a wrong password, so nothing tells whether it exists.
//!
//! The query runs at every login of such a user, so a password changed on the server is picked
//! up by the next login and the old one stops working at once (a cache that served logins
//! would keep accepting the old password, even lending idle server connections to it). What
//! the pool keeps ("cached per pool") is what the server login needs: the md5 hash, or the
//! SCRAM pass-through keys of the last client login (see [`super::server::PassthroughSlot`]).
//! The lookups' own server connections are kept, a few per (server, database, auth_user).

use std::sync::Arc;

use dashmap::DashMap;

use crate::auth::Secret;
use crate::config::{Config, Database};

use super::server::{ServerConn, ServerError, ServerLogin};

/// Idle lookup connections kept per (server, database, auth_user).
const IDLE_LOOKUP_CONNS: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LookupKey {
    host: String,
    port: u16,
    dbname: String,
    user: String,
}

/// The lookup connections, shared by every session.
#[derive(Default)]
pub struct AuthLookups {
    idle: DashMap<LookupKey, Arc<std::sync::Mutex<Vec<ServerConn>>>>,
}

impl AuthLookups {
    /// The secret of `user` by `db`'s auth_query. `Ok(None)`: `db` has no `auth_user`, or the
    /// server knows no usable secret for `user` (both refuse the login the same way).
    /// `Err`: the lookup itself failed (auth_user cannot log in, the query is wrong...).
    pub async fn secret_for(
        &self,
        cfg: &Config,
        db: &Database,
        user: &str,
    ) -> Result<Option<Secret>, ServerError> {
        let Some(auth_user) = db.auth_user.as_deref() else {
            return Ok(None);
        };
        let login = lookup_login(cfg, db, auth_user);
        let key = LookupKey {
            host: login.host.clone(),
            port: login.port,
            dbname: login.dbname.clone(),
            user: login.user.clone(),
        };
        let slot = self.idle.entry(key).or_default().clone();
        let idle = slot.lock().ok().and_then(|mut v| v.pop());
        let mut conn = match idle {
            Some(c) if !c.is_broken_while_idle() => c.at_home().map_err(ServerError::Connect)?.0,
            _ => ServerConn::connect(&login).await?,
        };
        let rows = conn.query_params(&db.auth_query, &[user]).await?;
        if let Ok(mut v) = slot.lock() {
            if v.len() < IDLE_LOOKUP_CONNS {
                v.push(conn);
            }
        }
        let rows = rows.map_err(|frame| {
            let message = crate::protocol::backend::ErrorFields::decode(&frame)
                .ok()
                .and_then(|e| e.message().map(|m| String::from_utf8_lossy(m).into_owned()))
                .unwrap_or_default();
            ServerError::AuthQuery(message)
        })?;
        Ok(secret_from_rows(rows))
    }
}

/// How pgheal logs in as `auth_user`: its auth_file entry (plain or md5), or the entry's own
/// password when the entry logs in as that user.
fn lookup_login(cfg: &Config, db: &Database, auth_user: &str) -> ServerLogin {
    let password = match cfg.users.get(auth_user) {
        Some(Secret::Plain(p)) => Some(p.clone()),
        Some(Secret::Md5(h)) => Some(h.clone()),
        _ => None,
    }
    .or_else(|| {
        db.password
            .clone()
            .filter(|_| db.user.as_deref() == Some(auth_user))
    });
    ServerLogin {
        host: db.host.clone(),
        port: db.port,
        dbname: db.auth_dbname.clone().unwrap_or_else(|| db.dbname.clone()),
        user: auth_user.to_owned(),
        password,
        connect_timeout: cfg.server_connect_timeout,
        keepalive: cfg.keepalive,
        max_message_len: cfg.max_message_len,
        max_prepared: 0,
        tls: db.tls.clone(),
        passthrough: Default::default(),
        extras: Default::default(),
    }
}

/// The secret in the query's answer: one row, its second column. Anything else is no secret.
fn secret_from_rows(rows: Vec<Vec<Option<Vec<u8>>>>) -> Option<Secret> {
    let [row] = <[_; 1]>::try_from(rows).ok()?;
    let value = row.into_iter().nth(1)??;
    let text = String::from_utf8(value).ok()?;
    if text.is_empty() {
        return None;
    }
    match Secret::parse(&text) {
        Ok(s) => Some(s),
        Err(_) => {
            tracing::warn!("auth_query returned a secret that does not parse; login refused");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[Option<&str>]) -> Vec<Option<Vec<u8>>> {
        cols.iter()
            .map(|c| c.map(|s| s.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn secret_is_the_second_column_of_the_one_row() {
        let md5 = "md53175bce1d3201d16594cebf9d7eb3f9d";
        assert!(matches!(
            secret_from_rows(vec![row(&[Some("u"), Some(md5)])]),
            Some(Secret::Md5(_))
        ));
        assert!(secret_from_rows(vec![]).is_none());
        assert!(secret_from_rows(vec![row(&[Some("u"), None])]).is_none());
        assert!(secret_from_rows(vec![row(&[Some("u"), Some("")])]).is_none());
        assert!(secret_from_rows(vec![row(&[Some("u")])]).is_none());
        assert!(secret_from_rows(vec![
            row(&[Some("u"), Some(md5)]),
            row(&[Some("u"), Some(md5)])
        ])
        .is_none());
        assert!(secret_from_rows(vec![row(&[Some("u"), Some("SCRAM-SHA-256$broken")])]).is_none());
    }
}
