//! The pools of every (database, server user), created on first use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::auth::scram_client::PassthroughKeys;
use crate::auth::Secret;
use crate::config::live::LiveConfig;
use crate::config::{Config, Database, PoolMode};
use crate::heal::SchemaEpoch;
use crate::metrics::Metrics;
use crate::statements::StatementNames;

use super::auth_query::AuthLookups;
use super::bounded::{Pool, PoolKey, PoolSettings, SharedLimits};
use super::control::{Controls, PoolControl};
use super::listen::Listeners;
use super::server::ServerLogin;
use super::shared_limit::SharedLimit;

pub struct Pools {
    pools: DashMap<PoolKey, Arc<Pool>>,
    /// Server-side statement names of each pool (transaction pooling).
    names: DashMap<PoolKey, Arc<StatementNames>>,
    /// Schema epoch of each database.
    epochs: DashMap<String, Arc<SchemaEpoch>>,
    /// The listening connection of each database (LISTEN in transaction pooling).
    listeners: Arc<Listeners>,
    /// Pause, disable and reconnect of each database and of the process.
    controls: Controls,
    /// auth_query lookups and their connections.
    auth_lookups: AuthLookups,
    /// `max_db_connections` of each database and `max_user_connections` of each server user,
    /// shared by their pools (see [`super::shared_limit`]).
    db_limits: DashMap<String, Arc<SharedLimit>>,
    user_limits: DashMap<String, Arc<SharedLimit>>,
    /// Clients logged in per database and per login user (`max_db_client_connections`,
    /// `max_user_client_connections`).
    db_clients: DashMap<String, Arc<AtomicUsize>>,
    user_clients: DashMap<String, Arc<AtomicUsize>>,
    /// The configuration in force (a reload replaces it; see [`Pools::reconfigure`]).
    config: Arc<LiveConfig>,
    metrics: Arc<Metrics>,
}

/// A client counted against `max_db_client_connections` and `max_user_client_connections`
/// while it lives (a session keeps it for its whole life).
#[derive(Debug)]
pub struct ClientAdmission {
    db: Arc<AtomicUsize>,
    user: Arc<AtomicUsize>,
}

impl Drop for ClientAdmission {
    fn drop(&mut self) {
        self.db.fetch_sub(1, Ordering::AcqRel);
        self.user.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which client limit refused a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLimit {
    Database,
    User,
}

impl ClientLimit {
    /// The key's name, as PgBouncer's message gives it.
    pub fn key(self) -> &'static str {
        match self {
            ClientLimit::Database => "max_db_client_connections",
            ClientLimit::User => "max_user_client_connections",
        }
    }
}

/// How a pool of `db` logs into the server as `user` with `password`.
fn login_for(cfg: &Config, db: &Database, user: String, password: Option<String>) -> ServerLogin {
    ServerLogin {
        host: db.host.clone(),
        port: db.port,
        dbname: db.dbname.clone(),
        user,
        password,
        connect_timeout: cfg.server_connect_timeout,
        keepalive: cfg.keepalive,
        max_message_len: cfg.max_message_len,
        max_prepared: match db.pool_mode {
            PoolMode::Session => usize::MAX,
            PoolMode::Transaction | PoolMode::Statement => cfg.max_prepared_statements,
        },
        tls: db.tls.clone(),
        passthrough: Default::default(),
        extras: super::hosts::LoginExtras {
            choice: super::hosts::HostChoice::new(
                db.connect.load_balance_hosts,
                cfg.servers.login_retry,
            ),
            ports: db.connect.ports.clone(),
            startup_params: db.connect.startup_params.clone(),
            connect_query: db.connect.connect_query.clone(),
        },
    }
}

/// The sizes and timeouts of a pool of `db`.
fn settings_for(cfg: &Config, db: &Database) -> PoolSettings {
    PoolSettings {
        mode: db.pool_mode,
        size: db.pool_size,
        min_size: db.min_pool_size,
        query_wait_timeout: cfg.query_wait_timeout,
        server_lifetime: cfg.server_lifetime,
        server_idle_timeout: cfg.server_idle_timeout,
        reset_query: cfg.server_reset_query.clone(),
        reset_query_always: cfg.server_reset_query_always,
        reserve_size: db.limits.reserve_pool_size,
        reserve_timeout: cfg.limits.reserve_pool_timeout,
        servers: cfg.servers.clone(),
    }
}

/// A usable configured secret for logging into the server: plain text or an md5 hash.
fn usable(secret: Option<&Secret>) -> Option<String> {
    match secret {
        Some(Secret::Plain(p)) => Some(p.clone()),
        Some(Secret::Md5(h)) => Some(h.clone()),
        _ => None,
    }
}

/// The password of a database's configured server user: its own, else its auth_file entry
/// (as in PgBouncer).
fn configured_password(cfg: &Config, db: &Database, user: &str) -> Option<String> {
    db.password.clone().or_else(|| usable(cfg.users.get(user)))
}

impl Pools {
    pub fn new(config: Arc<LiveConfig>, metrics: Arc<Metrics>) -> Arc<Pools> {
        Arc::new(Pools {
            pools: DashMap::new(),
            names: DashMap::new(),
            epochs: DashMap::new(),
            listeners: Listeners::new(metrics.clone()),
            controls: Controls::default(),
            auth_lookups: AuthLookups::default(),
            db_limits: DashMap::new(),
            user_limits: DashMap::new(),
            db_clients: DashMap::new(),
            user_clients: DashMap::new(),
            config,
            metrics,
        })
    }

    /// The pool a client of `db` logged in as `client_user` uses. pgheal logs into the server
    /// as the database's configured user if there is one, else as the client's user with the
    /// client's configured secret (plain text, or an md5 hash for md5 servers), or by SCRAM
    /// pass-through with `passthrough`, the keys the client's SCRAM login revealed (kept in
    /// the pool for its later connections, when the server user is the client's and has no
    /// configured password).
    pub fn pool_for(
        &self,
        db: &Database,
        client_user: &str,
        client_secret: Option<&Secret>,
        passthrough: Option<PassthroughKeys>,
    ) -> Arc<Pool> {
        let cfg = self.config.current();
        let (user, password) = match &db.user {
            Some(u) => (u.clone(), configured_password(&cfg, db, u)),
            None => (client_user.to_owned(), usable(client_secret)),
        };
        let key = PoolKey {
            database: db.name.clone(),
            user: user.clone(),
        };
        let pool = self
            .pools
            .entry(key.clone())
            .or_insert_with(|| {
                let login = login_for(&cfg, db, user, password);
                let settings = settings_for(&cfg, db);
                let control = PoolControl {
                    database: self.controls.database(&db.name),
                    global: self.controls.global().clone(),
                    own: Default::default(),
                };
                let shared = SharedLimits {
                    db: self.db_limit_entry(&db.name, db.limits.max_db_connections),
                    user: self.user_limit_entry(
                        &key.user,
                        cfg.user_limits(&key.user).max_user_connections,
                    ),
                };
                Pool::new(key, login, settings, control, shared, self.metrics.clone())
            })
            .clone();
        // The pool logs in as the client's user with the client's secret: keep what this login
        // brought (the secret may have changed since the pool was made, with auth_query).
        let login = pool.login();
        if login.user == client_user && (db.user.is_none() || db.password.is_none()) {
            if let Some(keys) = passthrough {
                login.passthrough.store(keys);
            }
            if let Some(p) = usable(client_secret) {
                login.passthrough.store_password(p);
            }
        }
        pool
    }

    fn db_limit_entry(&self, database: &str, limit: usize) -> Arc<SharedLimit> {
        self.db_limits
            .entry(database.to_owned())
            .or_insert_with(|| SharedLimit::new("max_db_connections", database, limit))
            .clone()
    }

    fn user_limit_entry(&self, user: &str, limit: usize) -> Arc<SharedLimit> {
        self.user_limits
            .entry(user.to_owned())
            .or_insert_with(|| SharedLimit::new("max_user_connections", user, limit))
            .clone()
    }

    /// `max_db_connections` of a database, if one of its pools exists.
    pub fn db_limit(&self, database: &str) -> Option<Arc<SharedLimit>> {
        self.db_limits.get(database).map(|l| l.clone())
    }

    /// `max_user_connections` of a server user, if one of its pools exists.
    pub fn user_limit(&self, user: &str) -> Option<Arc<SharedLimit>> {
        self.user_limits.get(user).map(|l| l.clone())
    }

    /// Clients logged in to a database.
    pub fn db_client_count(&self, database: &str) -> usize {
        self.db_clients
            .get(database)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Clients logged in as a user.
    pub fn user_client_count(&self, user: &str) -> usize {
        self.user_clients
            .get(user)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Count a client of `db` logged in as `user`, or refuse it when that goes over the
    /// database's `max_db_client_connections` or the user's `max_user_client_connections`
    /// (PgBouncer's `check_db_connection_count` / `check_user_connection_count`). The admin
    /// console is not counted.
    pub fn admit_client(
        &self,
        cfg: &Config,
        db: &Database,
        user: &str,
    ) -> Result<ClientAdmission, ClientLimit> {
        let count = |m: &DashMap<String, Arc<AtomicUsize>>, k: &str| {
            let c = m.entry(k.to_owned()).or_default().clone();
            let n = c.fetch_add(1, Ordering::AcqRel) + 1;
            (c, n)
        };
        let (dbc, n_db) = count(&self.db_clients, &db.name);
        let (userc, n_user) = count(&self.user_clients, user);
        let admission = ClientAdmission {
            db: dbc,
            user: userc,
        };
        let max_db = db.limits.max_db_client_connections;
        if max_db > 0 && n_db > max_db {
            tracing::debug!(db = %db.name, clients = n_db, max = max_db, "database full of clients");
            return Err(ClientLimit::Database);
        }
        let max_user = cfg.user_limits(user).max_user_client_connections;
        if max_user > 0 && n_user > max_user {
            tracing::debug!(
                user,
                clients = n_user,
                max = max_user,
                "user full of clients"
            );
            return Err(ClientLimit::User);
        }
        Ok(admission)
    }

    /// The secret of a client user missing from the auth_file, by `db`'s auth_query (see
    /// [`super::auth_query`]). `Ok(None)`: no auth_user, or no usable secret on the server.
    pub async fn auth_query_secret(
        &self,
        db: &Database,
        user: &str,
    ) -> Result<Option<Secret>, super::ServerError> {
        self.auth_lookups
            .secret_for(&self.config.current(), db, user)
            .await
    }

    /// Every pool, ordered by database and user (the admin console's order).
    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<Arc<Pool>> = self.pools.iter().map(|p| p.value().clone()).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Pause, disable and reconnect state.
    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// The schema epoch of a database, shared by every pool and session of it.
    pub fn epoch_for(&self, database: &str) -> Arc<SchemaEpoch> {
        self.epochs.entry(database.to_owned()).or_default().clone()
    }

    /// The statement names shared by every client of a pool (bounded by the
    /// `max_pool_statements` in force).
    pub fn names_for(&self, key: &PoolKey) -> Arc<StatementNames> {
        let cap = self.config.current().max_pool_statements;
        let names = self
            .names
            .entry(key.clone())
            .or_insert_with(|| Arc::new(StatementNames::with_cap(cap)))
            .clone();
        names.set_cap(cap);
        names
    }

    /// A pool's statement names, if it has any yet.
    pub fn names_if_any(&self, key: &PoolKey) -> Option<Arc<StatementNames>> {
        self.names.get(key).map(|n| n.clone())
    }

    /// The listening connections, one per database, created on first use.
    pub fn listeners(&self) -> &Arc<Listeners> {
        &self.listeners
    }

    /// Create the pools that can be created without a client (databases with a configured
    /// server user), so `min_pool_size` is honoured from the start.
    pub fn prewarm(&self) {
        for db in self.config.current().databases.values() {
            if db.user.is_some() && db.min_pool_size > 0 {
                self.pool_for(db, "", None, None);
            }
        }
    }

    /// Every second: expire idle connections and top pools up to their minimum. Every
    /// `stats_period`: start a new period of the averages (`SHOW STATS`).
    pub async fn maintain_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut period_start = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let pools: Vec<Arc<Pool>> = self.pools.iter().map(|p| p.value().clone()).collect();
            let rotate = period_start.elapsed() >= self.config.current().stats_period;
            if rotate {
                period_start = tokio::time::Instant::now();
            }
            if rotate {
                for p in &pools {
                    p.stats.rotate();
                }
                crate::metrics::oplog::stats(&self.config.current().log, &pools);
            }
            for p in pools {
                p.maintain().await;
            }
        }
    }

    /// Apply a reloaded configuration to the live pools (PgBouncer's RELOAD):
    /// - a pool whose database is gone is closed: its idle connections now, the others as they
    ///   come back; new logins to it fail;
    /// - a pool whose server, login, TLS or pool mode changed reconnects: new connections use
    ///   the new settings and the old ones are closed as they come back (PgBouncer's
    ///   RECONNECT);
    /// - every other change (sizes, timeouts, reset query) applies in place.
    ///
    /// Then pools are warmed to their (new) `min_pool_size`.
    pub fn reconfigure(&self, old: &Config, new: &Config) {
        let pools: Vec<Arc<Pool>> = self.pools.iter().map(|p| p.value().clone()).collect();
        for pool in pools {
            let key = &pool.key;
            let Some(db) = new.database_for(&key.database, &key.user) else {
                tracing::info!(db = %key.database, user = %key.user, "RELOAD: database removed; closing its pool as its connections come back");
                self.controls.database(&key.database).reconnect();
                pool.close_idle();
                self.pools.remove(key);
                continue;
            };
            let current = pool.login();
            let password = match &db.user {
                Some(u) => configured_password(new, &db, u),
                None => current.password.clone(),
            };
            let login = login_for(new, &db, key.user.clone(), password);
            let settings = settings_for(new, &db);
            let mode_changed = settings.mode != pool.settings().mode;
            let before = old.database_for(&key.database, &key.user);
            if !login.same_server(&current) || mode_changed {
                tracing::info!(db = %key.database, user = %key.user, "RELOAD: connection settings changed; server connections are replaced as they come back");
                pool.reconfigure(Some(login), settings);
                pool.reconnect();
            } else {
                if before.as_deref().map(|d| (d.pool_size, d.min_pool_size))
                    != Some((db.pool_size, db.min_pool_size))
                {
                    tracing::info!(db = %key.database, user = %key.user, pool_size = db.pool_size, min_pool_size = db.min_pool_size, "RELOAD: pool resized");
                }
                pool.reconfigure(None, settings);
            }
        }
        // The shared caps: a database's from its entry (or the `*` one, or the global value),
        // a user's from its `[users]` line (or the global value).
        for l in self.db_limits.iter() {
            let limit = new
                .database_for(l.key(), "")
                .map_or(new.limits.max_db_connections, |d| {
                    d.limits.max_db_connections
                });
            if limit != l.limit() {
                tracing::info!(db = %l.key(), max_db_connections = limit, "RELOAD: max_db_connections changed");
            }
            l.set(limit);
        }
        for l in self.user_limits.iter() {
            let limit = new.user_limits(l.key()).max_user_connections;
            if limit != l.limit() {
                tracing::info!(user = %l.key(), max_user_connections = limit, "RELOAD: max_user_connections changed");
            }
            l.set(limit);
        }
        self.prewarm();
    }

    pub fn close_idle(&self) {
        for p in self.pools.iter() {
            p.close_idle();
        }
        self.listeners.close_all();
    }
}
