//! The example configuration `config/pgheal.toml` must load and validate, and it must keep
//! documenting every key that the file format accepts.

use std::path::PathBuf;
use std::time::Duration;

use pgheal::auth::{AuthMethod, Secret};
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::config::{LogFormat, PoolMode};

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/pgheal.toml")
}

fn load_with(args: RunArgs) -> pgheal::config::Config {
    let args = RunArgs {
        config: Some(example_path()),
        ..args
    };
    match pgheal::config::load(&args) {
        Ok(c) => c,
        Err(e) => panic!("config/pgheal.toml does not validate: {e}"),
    }
}

#[test]
fn example_config_loads_with_the_documented_defaults() {
    let c = load_with(RunArgs::default());
    assert_eq!(c.listen, "127.0.0.1:6432".parse().unwrap());
    assert_eq!(c.auth_type, AuthMethod::ScramSha256);
    assert_eq!(c.max_client_conn, 1000);
    assert_eq!(c.query_wait_timeout, Duration::from_secs(120));
    assert_eq!(c.server_connect_timeout, Duration::from_secs(15));
    assert_eq!(c.server_lifetime, Duration::from_secs(3600));
    assert_eq!(c.server_idle_timeout, Duration::from_secs(600));
    assert_eq!(c.server_reset_query, "DISCARD ALL");
    assert!(!c.server_reset_query_always);
    assert_eq!(c.max_message_len, 256 << 20);
    assert_eq!(c.max_prepared_statements, 200);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(c.log_format, LogFormat::Human);
    assert_eq!(c.metrics_listen, None);
    assert!(c.heal.enabled);
    assert_eq!(c.heal.holdback_bytes, 1 << 20);
    assert_eq!(c.heal.replay_bytes, 8 << 20);
    assert_eq!(c.heal.max_heals, 3);

    let db = c.database("appdb").expect("[databases.appdb]");
    assert_eq!((db.host.as_str(), db.port), ("127.0.0.1", 5432));
    assert_eq!(db.dbname, "appdb");
    assert_eq!(db.user.as_deref(), Some("app"));
    assert_eq!(db.password.as_deref(), Some("change-me"));
    assert_eq!((db.pool_size, db.min_pool_size), (20, 0));
    assert_eq!(db.pool_mode, PoolMode::Session);
    assert_eq!(c.databases.len(), 1);

    assert!(matches!(c.users.get("app"), Some(Secret::Plain(p)) if p == "change-me"));
}

/// Flags (and their environment variables, which clap folds into the same fields) win over the
/// file, as the example's header says; the per-database keys are commented out, so the
/// database inherits the flag values.
#[test]
fn flags_override_the_example() {
    let c = load_with(RunArgs {
        listen: Some("0.0.0.0:7432".into()),
        pool_size: Some(7),
        pool_mode: Some("transaction".into()),
        metrics_listen: Some("127.0.0.1:9930".into()),
        no_heal: true,
        ..Default::default()
    });
    assert_eq!(c.listen, "0.0.0.0:7432".parse().unwrap());
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9930".parse().unwrap()));
    assert!(!c.heal.enabled);
    let db = c.database("appdb").unwrap();
    assert_eq!(db.pool_size, 7);
    assert_eq!(db.pool_mode, PoolMode::Transaction);
}

/// The example with every `#key = value` line uncommented: each documented key must be a real
/// key (the file format rejects unknown keys), and every key of `[pgheal]`, `[heal]` and
/// `[databases.NAME]` must be documented (a new key without an example line fails here).
#[test]
fn every_key_is_documented_and_real() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with(|c: char| c.is_ascii_lowercase()) && rest.contains(" = ") =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let file: FileConfig = match toml::from_str(&uncommented) {
        Ok(f) => f,
        Err(e) => panic!("the example with every setting uncommented does not parse: {e}"),
    };

    // `General` and `Heal` derive Debug over Option fields: "None" means an undocumented key.
    let general = format!("{:?}", file.pgheal);
    assert!(
        !general.contains("None"),
        "a [pgheal] key has no example line: {general}"
    );
    let heal = format!("{:?}", file.heal);
    assert!(
        !heal.contains("None"),
        "a [heal] key has no example line: {heal}"
    );

    let db = file.databases.get("appdb").expect("[databases.appdb]");
    assert!(db.host.is_some() && db.port.is_some() && db.dbname.is_some());
    assert!(db.user.is_some() && db.password.is_some() && db.url.is_some());
    assert!(db.pool_size.is_some() && db.min_pool_size.is_some() && db.pool_mode.is_some());
    assert!(db.auth_user.is_some() && db.auth_query.is_some() && db.auth_dbname.is_some());

    assert_eq!(
        file.users.len(),
        2,
        "[users] shows a plain and an md5 secret"
    );
    for (name, secret) in &file.users {
        assert!(
            Secret::parse(secret).is_ok(),
            "users.{name} is not a valid secret"
        );
    }
    assert!(matches!(
        Secret::parse(&file.users["reporting"]),
        Ok(Secret::Md5(_))
    ));
}
