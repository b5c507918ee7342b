//! Connection limits beyond a pool's own size (PgBouncer's `reserve_pool_*`, `max_db_*`,
//! `max_user_*`), global with per-database and per-user values on top.
//!
//! Why a separate struct: these keys come in three layers (the `[pgbouncer]` section, a
//! `[databases]` entry, a `[users]` entry) and are read in three places (the pools' shared
//! capacity, the login's client counts, the console). [`Limits`] holds the global values with
//! PgBouncer's defaults; [`DbLimits`] the values a database resolved against them (its own,
//! else the global one). The per-user values live in [`super::UserSettings`] and are resolved
//! by [`super::Config::user_limits`].
//!
//! Semantics, as PgBouncer 1.25 (0 = no limit everywhere):
//! - `reserve_pool_size`: extra server connections a pool may open for a client that has
//!   waited `reserve_pool_timeout` already (the `[users]` value wins over the database's, which
//!   wins over the global one);
//! - `max_db_connections` / `max_user_connections`: server connections (idle ones included) of
//!   every pool of a database / of a server user; a client over them waits, it is not refused;
//! - `max_db_client_connections` / `max_user_client_connections`: client connections of a
//!   database / of a login user; a login over them is refused.

use std::time::Duration;

/// The global limits (`[pgbouncer]` / `[pgheal]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub reserve_pool_size: usize,
    /// How long a client waits before it may use the reserve (PgBouncer: 5 s; 0 disables
    /// the reserve).
    pub reserve_pool_timeout: Duration,
    pub max_db_connections: usize,
    pub max_user_connections: usize,
    pub max_db_client_connections: usize,
    pub max_user_client_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            reserve_pool_size: 0,
            reserve_pool_timeout: Duration::from_secs(5),
            max_db_connections: 0,
            max_user_connections: 0,
            max_db_client_connections: 0,
            max_user_client_connections: 0,
        }
    }
}

/// A database's limits, resolved against the global ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbLimits {
    pub reserve_pool_size: usize,
    pub max_db_connections: usize,
    pub max_db_client_connections: usize,
}

/// A server or login user's limits, resolved against the global ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLimits {
    pub max_user_connections: usize,
    pub max_user_client_connections: usize,
}

impl Limits {
    /// A database's limits: its own value of each key, else the global one.
    pub fn for_database(
        &self,
        reserve_pool_size: Option<usize>,
        max_db_connections: Option<usize>,
        max_db_client_connections: Option<usize>,
    ) -> DbLimits {
        DbLimits {
            reserve_pool_size: reserve_pool_size.unwrap_or(self.reserve_pool_size),
            max_db_connections: max_db_connections.unwrap_or(self.max_db_connections),
            max_db_client_connections: max_db_client_connections
                .unwrap_or(self.max_db_client_connections),
        }
    }

    /// A user's limits: its own value of each key, else the global one.
    pub fn for_user(&self, u: Option<&super::UserSettings>) -> UserLimits {
        UserLimits {
            max_user_connections: u
                .and_then(|u| u.max_user_connections)
                .unwrap_or(self.max_user_connections),
            max_user_client_connections: u
                .and_then(|u| u.max_user_client_connections)
                .unwrap_or(self.max_user_client_connections),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserSettings;

    #[test]
    fn a_database_or_user_value_wins_over_the_global_one() {
        let g = Limits {
            reserve_pool_size: 2,
            max_db_connections: 10,
            max_user_connections: 7,
            max_user_client_connections: 3,
            ..Limits::default()
        };
        let d = g.for_database(Some(5), None, Some(0));
        assert_eq!(d.reserve_pool_size, 5);
        assert_eq!(d.max_db_connections, 10);
        assert_eq!(d.max_db_client_connections, 0);
        let u = UserSettings {
            max_user_connections: Some(1),
            ..UserSettings::default()
        };
        assert_eq!(g.for_user(Some(&u)).max_user_connections, 1);
        assert_eq!(g.for_user(Some(&u)).max_user_client_connections, 3);
        assert_eq!(g.for_user(None).max_user_connections, 7);
    }
}
