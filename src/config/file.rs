//! The TOML file, as written by users: every key optional, unknown keys rejected.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::auth::AuthMethod;

use super::{LogFormat, PoolMode};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub pgheal: General,
    #[serde(default)]
    pub heal: Heal,
    #[serde(default)]
    pub databases: BTreeMap<String, FileDatabase>,
    /// user name → secret (plain text, `md5…` or `SCRAM-SHA-256$…`).
    #[serde(default)]
    pub users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct General {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub pool_mode: Option<PoolMode>,
    pub pool_size: Option<usize>,
    pub min_pool_size: Option<usize>,
    pub max_client_conn: Option<usize>,
    pub auth_type: Option<AuthMethod>,
    pub auth_file: Option<String>,
    pub query_wait_timeout: Option<f64>,
    pub server_connect_timeout: Option<f64>,
    pub server_lifetime: Option<f64>,
    pub server_idle_timeout: Option<f64>,
    pub server_reset_query: Option<String>,
    pub server_reset_query_always: Option<bool>,
    pub max_message_len: Option<usize>,
    pub max_prepared_statements: Option<usize>,
    pub shutdown_timeout: Option<f64>,
    pub threads: Option<usize>,
    pub log_format: Option<LogFormat>,
    pub metrics_listen: Option<String>,
    pub schema_watch: Option<super::SchemaWatch>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heal {
    pub enabled: Option<bool>,
    pub holdback_bytes: Option<usize>,
    pub replay_bytes: Option<usize>,
    pub max_heals: Option<u8>,
    pub savepoint_guard: Option<crate::heal::SavepointGuard>,
    pub savepoint_guard_window: Option<f64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDatabase {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Instead of host/port/dbname/user/password.
    pub url: Option<String>,
    pub pool_size: Option<usize>,
    pub min_pool_size: Option<usize>,
    pub pool_mode: Option<PoolMode>,
}

impl std::fmt::Debug for FileDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDatabase")
            .field("host", &self.host)
            .field("dbname", &self.dbname)
            .finish_non_exhaustive()
    }
}
