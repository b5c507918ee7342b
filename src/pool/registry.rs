//! The pools of every (database, server user), created on first use.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::auth::scram_client::PassthroughKeys;
use crate::auth::Secret;
use crate::config::{Config, Database, PoolMode};
use crate::heal::SchemaEpoch;
use crate::metrics::Metrics;
use crate::statements::StatementNames;

use super::auth_query::AuthLookups;
use super::bounded::{Pool, PoolKey, PoolSettings};
use super::control::{Controls, PoolControl};
use super::listen::Listeners;
use super::server::ServerLogin;

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
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl Pools {
    pub fn new(cfg: Arc<Config>, metrics: Arc<Metrics>) -> Arc<Pools> {
        Arc::new(Pools {
            pools: DashMap::new(),
            names: DashMap::new(),
            epochs: DashMap::new(),
            listeners: Listeners::new(metrics.clone()),
            controls: Controls::default(),
            auth_lookups: AuthLookups::default(),
            cfg,
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
        let usable = |secret: Option<&Secret>| match secret {
            Some(Secret::Plain(p)) => Some(p.clone()),
            Some(Secret::Md5(h)) => Some(h.clone()),
            _ => None,
        };
        let (user, password) = match &db.user {
            // A configured user without a password takes its auth_file entry, as in PgBouncer.
            Some(u) => (
                u.clone(),
                db.password
                    .clone()
                    .or_else(|| usable(self.cfg.users.get(u))),
            ),
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
                let login = ServerLogin {
                    host: db.host.clone(),
                    port: db.port,
                    dbname: db.dbname.clone(),
                    user,
                    password,
                    connect_timeout: self.cfg.server_connect_timeout,
                    max_message_len: self.cfg.max_message_len,
                    max_prepared: match db.pool_mode {
                        PoolMode::Session => usize::MAX,
                        PoolMode::Transaction | PoolMode::Statement => {
                            self.cfg.max_prepared_statements
                        }
                    },
                    tls: db.tls.clone(),
                    passthrough: Default::default(),
                };
                let settings = PoolSettings {
                    mode: db.pool_mode,
                    size: db.pool_size,
                    min_size: db.min_pool_size,
                    query_wait_timeout: self.cfg.query_wait_timeout,
                    server_lifetime: self.cfg.server_lifetime,
                    server_idle_timeout: self.cfg.server_idle_timeout,
                    reset_query: self.cfg.server_reset_query.clone(),
                    reset_query_always: self.cfg.server_reset_query_always,
                };
                let control = PoolControl {
                    database: self.controls.database(&db.name),
                    global: self.controls.global().clone(),
                };
                Pool::new(key, login, settings, control, self.metrics.clone())
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

    /// The secret of a client user missing from the auth_file, by `db`'s auth_query (see
    /// [`super::auth_query`]). `Ok(None)`: no auth_user, or no usable secret on the server.
    pub async fn auth_query_secret(
        &self,
        db: &Database,
        user: &str,
    ) -> Result<Option<Secret>, super::ServerError> {
        self.auth_lookups.secret_for(&self.cfg, db, user).await
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

    /// The statement names shared by every client of a pool.
    pub fn names_for(&self, key: &PoolKey) -> Arc<StatementNames> {
        self.names.entry(key.clone()).or_default().clone()
    }

    /// The listening connections, one per database, created on first use.
    pub fn listeners(&self) -> &Arc<Listeners> {
        &self.listeners
    }

    /// Create the pools that can be created without a client (databases with a configured
    /// server user), so `min_pool_size` is honoured from the start.
    pub fn prewarm(&self) {
        for db in self.cfg.databases.values() {
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
            let rotate = period_start.elapsed() >= self.cfg.stats_period;
            if rotate {
                period_start = tokio::time::Instant::now();
            }
            if rotate {
                for p in &pools {
                    p.stats.rotate();
                }
                crate::metrics::oplog::stats(&self.cfg.log, &pools);
            }
            for p in pools {
                p.maintain().await;
            }
        }
    }

    pub fn close_idle(&self) {
        for p in self.pools.iter() {
            p.close_idle();
        }
        self.listeners.close_all();
    }
}
