//! The configuration in force, swapped whole by `RELOAD`, SIGHUP and the console's `SET`.
//!
//! A [`Config`] stays immutable: a reload builds a new one from the file (with the same flags
//! and environment as at start), checks it completely, and only then replaces the
//! `Arc<Config>` every new login reads. An invalid file changes nothing and the error says why.
//! Sessions keep the snapshot they logged in with; the pools take new sizes and timeouts in
//! place (see [`crate::pool::Pools::reconfigure`]).
//!
//! `SET key = value` (PgBouncer's console command) adds the value to a list of overrides read
//! as if it were the last line of the file's `[pgbouncer]` section, then reloads. As in
//! PgBouncer, a later `RELOAD` keeps a `SET` value unless the file itself sets that key.
//! `SET` needs a pgbouncer.ini: a TOML file is changed by editing it and reloading.
//!
//! Some settings cannot change while pgheal runs (the listening sockets, the process's user,
//! pid file and log file, the event loops): a reload that changes them logs that they take
//! effect at the next start ([`restart_only_changes`]); `SET` refuses them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::cli::RunArgs;
use super::pgbouncer_keys::{self, Support};
use super::{Config, ConfigError};

/// PgBouncer keys that only a restart changes (PgBouncer's `CF_NO_RELOAD`, and pgheal's
/// listening sockets and process settings).
pub const RESTART_ONLY: &[&str] = &[
    "listen_addr",
    "listen_port",
    "listen_backlog",
    "unix_socket_dir",
    "unix_socket_mode",
    "unix_socket_group",
    "so_reuseport",
    "pidfile",
    "logfile",
    "user",
    "job_name",
    "service_name",
    "pkt_buf",
    "disable_pqexec",
    "resolv_conf",
    "track_extra_parameters",
    "peer_id",
];

/// Whether `SET key` may change a PgBouncer key at run time (and `SHOW CONFIG` says
/// `changeable = yes`): pgheal implements it and it is not restart-only.
pub fn changeable(key: &str) -> bool {
    let Some(k) = pgbouncer_keys::find(key) else {
        return false;
    };
    matches!(k.support, Support::Yes(_)) && !RESTART_ONLY.contains(&k.name)
}

/// A value given with `SET`, kept until the file sets the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub key: &'static str,
    pub value: String,
}

/// The configuration in force and how to build the next one.
pub struct LiveConfig {
    current: RwLock<Arc<Config>>,
    /// Counts the configurations installed: a session compares it with the one it read its
    /// timeouts at (one atomic load) to know whether to read them again.
    generation: AtomicU64,
    /// The command line and environment pgheal started with (they still win over the file);
    /// `None` for a configuration built in-process, which has nothing to read again.
    args: Option<RunArgs>,
    overrides: Mutex<Vec<Override>>,
    /// Reloads are done one at a time.
    reloading: Mutex<()>,
    /// Told the new `verbose` when a reload changes it (the binary's log filter).
    on_verbose: Mutex<Option<VerboseHook>>,
}

/// See [`LiveConfig::on_verbose`].
pub type VerboseHook = Box<dyn Fn(u8) + Send + Sync>;

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConfig").finish_non_exhaustive()
    }
}

/// What a successful reload did.
#[derive(Debug)]
pub struct Reloaded {
    pub old: Arc<Config>,
    pub new: Arc<Config>,
    /// Settings that changed in the file but keep their old value until a restart.
    pub restart_only: Vec<&'static str>,
}

impl LiveConfig {
    /// The configuration pgheal started with. `args` are the flags it was built from (a
    /// reload reads the same file and applies them again).
    pub fn new(cfg: Config, args: RunArgs) -> LiveConfig {
        LiveConfig {
            current: RwLock::new(Arc::new(cfg)),
            generation: AtomicU64::new(0),
            args: Some(args),
            overrides: Mutex::new(Vec::new()),
            reloading: Mutex::new(()),
            on_verbose: Mutex::new(None),
        }
    }

    /// Call `hook` with the new `verbose` whenever a reload changes it.
    pub fn on_verbose(&self, hook: VerboseHook) {
        *self.on_verbose.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Tell the hook (if any) that `verbose` is now `v`.
    pub fn notify_verbose(&self, v: u8) {
        if let Some(hook) = &*self.on_verbose.lock().unwrap_or_else(|p| p.into_inner()) {
            hook(v);
        }
    }

    /// A configuration built in-process (tests, `pgheal demo`): the flags it was built from
    /// are not known, so `RELOAD` and `SET` refuse rather than rebuild something else.
    pub fn fixed(cfg: Config) -> LiveConfig {
        LiveConfig {
            args: None,
            ..LiveConfig::new(cfg, RunArgs::default())
        }
    }

    fn args(&self) -> Result<&RunArgs, ConfigError> {
        self.args.as_ref().ok_or_else(|| {
            ConfigError::new(
                "config",
                "pgheal was started in-process from a built configuration: there is no file to read again",
            )
        })
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Config> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Changes each time a new configuration is installed (RELOAD, SIGHUP, `SET`).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Read the file again (with the `SET` values the file does not override) and, if it is
    /// valid, make it the configuration in force.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let mut overrides = self
            .overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let file_keys = super::load::pgbouncer_keys_in_file(self.args()?)?;
        overrides.retain(|o| !file_keys.contains(&o.key));
        let (new, restart_only) = self.build(&overrides)?;
        *self.overrides.lock().unwrap_or_else(|p| p.into_inner()) = overrides;
        Ok(self.install(new, restart_only))
    }

    /// `SET key = value`: check the key and the value, then reload with it.
    pub fn set(&self, key: &str, value: &str) -> Result<Reloaded, ConfigError> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let Some(k) = pgbouncer_keys::find(key) else {
            return Err(ConfigError::new(key, "unknown setting"));
        };
        if RESTART_ONLY.contains(&k.name) {
            return Err(ConfigError::new(
                k.name,
                "cannot be changed while pgheal runs (restart it)",
            ));
        }
        if !matches!(k.support, Support::Yes(_)) {
            return Err(ConfigError::new(
                k.name,
                "not implemented by pgheal (see the README's key table)",
            ));
        }
        let mut overrides = self
            .overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        overrides.retain(|o| o.key != k.name);
        overrides.push(Override {
            key: k.name,
            value: value.to_owned(),
        });
        let (new, restart_only) = self.build(&overrides)?;
        *self.overrides.lock().unwrap_or_else(|p| p.into_inner()) = overrides;
        Ok(self.install(new, restart_only))
    }

    /// The next configuration, and the restart-only settings it would have changed.
    fn build(&self, overrides: &[Override]) -> Result<(Config, Vec<&'static str>), ConfigError> {
        let mut cfg = super::load::load_with(self.args()?, overrides)?;
        let old = self.current();
        let restart_only = restart_only_changes(&old, &cfg);
        // What cannot change keeps its value.
        cfg.listen = old.listen;
        cfg.listen_also = old.listen_also.clone();
        cfg.so_reuseport = old.so_reuseport;
        cfg.unix_socket = old.unix_socket.clone();
        cfg.threads = old.threads;
        cfg.metrics_listen = old.metrics_listen;
        cfg.log_format = old.log_format;
        cfg.schema_watch = old.schema_watch;
        cfg.process.logfile = old.process.logfile.clone();
        cfg.process.pidfile = old.process.pidfile.clone();
        cfg.process.user = old.process.user.clone();
        Ok((cfg, restart_only))
    }

    fn install(&self, new: Config, restart_only: Vec<&'static str>) -> Reloaded {
        let new = Arc::new(new);
        let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::replace(&mut *slot, new.clone());
        self.generation.fetch_add(1, Ordering::Release);
        Reloaded {
            old,
            new,
            restart_only,
        }
    }
}

/// The restart-only settings whose value in `fresh` differs from the one in force.
fn restart_only_changes(current: &Config, fresh: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if fresh.listen != current.listen || fresh.listen_also != current.listen_also {
        changed.push("listen_addr/listen_port");
    }
    if fresh.unix_socket != current.unix_socket {
        changed.push("unix_socket_dir/unix_socket_mode/unix_socket_group");
    }
    if fresh.so_reuseport != current.so_reuseport {
        changed.push("so_reuseport");
    }
    if fresh.threads != current.threads {
        changed.push("threads");
    }
    if fresh.metrics_listen != current.metrics_listen {
        changed.push("metrics_listen");
    }
    if fresh.log_format != current.log_format {
        changed.push("log_format");
    }
    if fresh.schema_watch != current.schema_watch {
        changed.push("schema_watch");
    }
    if fresh.process.logfile != current.process.logfile {
        changed.push("logfile");
    }
    if fresh.process.pidfile != current.process.pidfile {
        changed.push("pidfile");
    }
    if fresh.process.user != current.process.user {
        changed.push("user");
    }
    changed
}
