//! pgheal's integration tests, one test binary.
//!
//! Why one binary: each file under `tests/` is its own crate, compiled and linked against the
//! whole library on its own. With sixty of them the suite spent most of its time linking
//! (each binary ~70 MB with debug information). As modules of one crate the library is linked
//! once and the helpers in `common` and `txn_support` are compiled once.
//!
//! Run one file's tests with `cargo test --release --test it <module>::`, e.g.
//! `cargo test --release --test it pool_limits::`.

mod common;
mod txn_support;

mod admin_console;
mod auth_hba;
mod auth_query;
mod cancel_wait_timeout;
mod chaos;
mod client_tls;
mod cluster_smoke;
mod config_example;
mod dead_peers;
mod demo;
mod deploy_files;
mod drivers_heal;
mod drivers_in_transaction;
mod drivers_pipeline;
mod drivers_startup;
mod encodings;
mod engine_alone;
mod engine_findings;
mod engine_property;
mod engine_repairs;
mod fleet_epoch;
mod fuzz_targets;
mod heal_tokio_postgres;
mod heal_wire;
mod in_transaction;
mod ini_config;
mod k8s_manifests;
mod listeners;
mod login_limits;
mod metrics_pools;
mod migration_check;
mod online_restart;
mod operator_logs;
mod ops_files;
mod peers;
mod pipeline_errors;
mod pool_limits;
mod protocol_versions;
mod reload;
mod savepoint_guard;
mod scram_passthrough;
mod server_fast_close;
mod server_hosts;
mod session_auth;
mod session_cli;
mod session_event_loops;
mod session_failures;
mod session_pool;
mod session_protocol;
mod session_queries;
mod session_tools;
mod signals;
mod soak;
mod startup_rules;
mod statement_pooling;
mod statement_registry;
mod stress_migrations;
mod timeouts;
mod tls;
mod txn_change_type;
mod txn_contracts;
mod txn_heal;
mod txn_listen;
mod txn_pgbench;
mod txn_pin;
mod txn_settings;
mod txn_settings_status;
mod txn_settings_tenants;
mod txn_statements;
mod unix_socket;
mod vanished_clients;
