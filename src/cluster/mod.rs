//! Throwaway PostgreSQL clusters from the system binaries, for `pgheal demo` and the tests.
//!
//! Why not a shared server or Docker: the proxy has to be tested against the behaviour it heals
//! (password auth with SCRAM and md5, `max_connections` exhaustion, server restarts and kills,
//! statements invalidated by DDL), and every test needs a server it may break without disturbing
//! the others. Docker is not available on the project's machines, but the Debian `postgresql`
//! package is, so each [`TempCluster`] is a fresh `initdb` in its own temporary directory, started
//! with `pg_ctl` on a free port of 127.0.0.1, tuned for speed over durability (`fsync=off`), and
//! stopped and deleted on drop.
//!
//! How:
//! - [`binaries`] finds `initdb`/`pg_ctl` (`$PGHEAL_PG_BINDIR`, `pg_config --bindir`,
//!   `/usr/lib/postgresql/*/bin`, `PATH`).
//! - [`os_user`]: PostgreSQL refuses to run as root; as root the server programs run as the
//!   `postgres` OS user and the cluster directory belongs to it.
//! - Parallel tests never collide: every cluster has its own directory (pid + counter + time), its
//!   own Unix socket directory (inside it), and its own port; a start that loses a port race to
//!   another process is retried on a new port.
//! - A tiny `sh` watchdog per cluster stops the server and deletes the directory if the owning
//!   process dies without running [`Drop`] (a `static` cluster, `panic = "abort"`, Ctrl-C), so
//!   interrupted test runs do not leave servers behind.
//!
//! Everything is synchronous `std` code so it can be used from plain `#[test]` functions, from
//! async tests (it blocks briefly) and from `pgheal demo` alike.

mod binaries;
mod os_user;

pub use binaries::{find_bin_dir, BINDIR_ENV};

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use os_user::OsUser;

/// The address every cluster listens on.
const HOST: &str = "127.0.0.1";
/// The bootstrap superuser created by `initdb -U`.
const SUPERUSER: &str = "postgres";
/// How many ports are tried when the chosen one is taken before the server binds it.
const START_ATTEMPTS: u32 = 5;
/// `pg_ctl -t`: seconds to wait for start, stop and restart.
const PG_CTL_TIMEOUT_SECS: &str = "60";
/// Lines of the server log quoted in start errors.
const LOG_TAIL_LINES: usize = 40;
/// Name of the settings file included from `postgresql.conf`.
const OVERRIDES_FILE: &str = "pgheal.conf";
/// Unix socket paths are limited to 107 bytes; keep room for `/.s.PGSQL.65535`.
const MAX_SOCKET_DIR_LEN: usize = 90;

/// Libpq environment variables that would silently redirect or alter the programs we spawn.
const LIBPQ_ENV: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGCONNECT_TIMEOUT",
    "PGCLIENTENCODING",
    "PGTARGETSESSIONATTRS",
];

/// Everything that can go wrong while creating, driving or stopping a [`TempCluster`].
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No directory with `initdb` and `pg_ctl` was found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; searched {searched}. \
         Install PostgreSQL server binaries, e.g. apt-get install postgresql, \
         or point PGHEAL_PG_BINDIR at their directory"
    )]
    BinariesNotFound { searched: String },

    /// Running as root, and there is no `postgres` account to run the server as.
    #[error(
        "running as root, which PostgreSQL refuses, and there is no `postgres` OS user in \
         /etc/passwd to run the server as (apt-get install postgresql creates it)"
    )]
    NoServerUser,

    /// The `postgres` OS user cannot reach any temporary directory.
    #[error(
        "the `postgres` OS user cannot traverse the temporary directory {0} nor /tmp; \
         set TMPDIR to a world-searchable directory"
    )]
    TempDirNotReachable(PathBuf),

    /// A [`ClusterOptions`] value that cannot be written to `postgresql.conf`.
    #[error("invalid cluster option: {0}")]
    InvalidOption(String),

    /// A file system or process-spawning operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// A PostgreSQL program (initdb, pg_ctl) exited unsuccessfully.
    #[error("{program} failed ({status}): {output}")]
    CommandFailed {
        program: String,
        status: String,
        output: String,
    },

    /// The server did not come up; the tail of its log says why.
    #[error("PostgreSQL did not start on 127.0.0.1:{port}: {message}\n--- tail of {log} ---\n{log_tail}")]
    StartFailed {
        port: u16,
        message: String,
        log: String,
        log_tail: String,
    },

    /// Every port tried was taken by someone else before the server could bind it.
    #[error("PostgreSQL could not bind a free port in {attempts} attempts\n--- server log tail ---\n{log_tail}")]
    PortClash { attempts: u32, log_tail: String },

    /// `psql` reported an error (it runs with `ON_ERROR_STOP=1`).
    #[error("psql on database {db:?} failed ({status}): {stderr}")]
    Psql {
        db: String,
        status: String,
        stderr: String,
    },
}

impl ClusterError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        ClusterError::Io {
            context: context.into(),
            source,
        }
    }
}

/// How TCP connections to 127.0.0.1 authenticate (the `pg_hba.conf` method), and therefore also
/// how passwords are stored (`password_encryption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AuthMethod {
    /// `scram-sha-256`, PostgreSQL's default since 14.
    #[default]
    ScramSha256,
    /// `md5`, still common on older deployments (passwords stored as md5 hashes).
    Md5,
    /// `trust`: no password asked.
    Trust,
}

impl AuthMethod {
    /// The `pg_hba.conf` method name.
    pub fn hba_method(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Trust => "trust",
        }
    }

    /// The `password_encryption` used for passwords set on this cluster.
    pub fn password_encryption(self) -> &'static str {
        match self {
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 | AuthMethod::Trust => "scram-sha-256",
        }
    }
}

/// Settings for [`TempCluster::start_with`]. Use `..Default::default()` for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Password of the `postgres` superuser. Default `"postgres"`.
    pub superuser_password: String,
    /// Authentication of TCP connections to 127.0.0.1. Default [`AuthMethod::ScramSha256`].
    pub auth_method: AuthMethod,
    /// `max_connections`. Default 100.
    pub max_connections: u32,
    /// Extra `postgresql.conf` settings, written after (and so overriding) the cluster's own.
    /// Values are single-quoted for you unless already quoted: `("ssl", "on")`,
    /// `("log_statement", "all")`, `("shared_buffers", "16MB")`.
    pub extra_conf: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            superuser_password: "postgres".to_string(),
            auth_method: AuthMethod::ScramSha256,
            max_connections: 100,
            extra_conf: Vec::new(),
        }
    }
}

/// A running PostgreSQL cluster in a temporary directory, stopped and deleted on drop.
///
/// ```no_run
/// # fn main() -> Result<(), pgheal::cluster::ClusterError> {
/// let pg = pgheal::cluster::TempCluster::start()?;
/// pg.create_user("app", "secret")?;
/// pg.create_database("appdb", "app")?;
/// assert_eq!(pg.psql("appdb", "select 1")?, "1");
/// let url = pg.url("app", "secret", "appdb");
/// # let _ = url; Ok(()) }
/// ```
#[derive(Debug)]
pub struct TempCluster {
    port: u16,
    /// The temporary directory: data directory, server log, Unix socket.
    dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    bin_dir: PathBuf,
    /// The OS user the server programs run as when we are root.
    server_user: Option<OsUser>,
    opts: ClusterOptions,
    running: AtomicBool,
    watchdog: Option<Child>,
}

impl TempCluster {
    /// Starts a cluster with [`ClusterOptions::default`].
    pub fn start() -> Result<TempCluster, ClusterError> {
        Self::start_with(ClusterOptions::default())
    }

    /// Creates (`initdb`) and starts a cluster.
    pub fn start_with(opts: ClusterOptions) -> Result<TempCluster, ClusterError> {
        validate(&opts)?;
        let bin_dir = binaries::bin_dir()?;
        let server_user = if os_user::is_root() {
            Some(os_user::lookup(os_user::SERVER_USER).ok_or(ClusterError::NoServerUser)?)
        } else {
            None
        };
        let dir = create_cluster_dir(server_user)?;
        let data_dir = dir.join("data");
        let log_path = dir.join("server.log");
        let watchdog = spawn_watchdog(&dir, &data_dir);
        // From here on, dropping `cluster` (also on error) stops the server and deletes `dir`.
        let cluster = TempCluster {
            port: 0,
            dir,
            data_dir,
            log_path,
            bin_dir,
            server_user,
            opts,
            running: AtomicBool::new(false),
            watchdog,
        };
        cluster.init_db()?;
        cluster.start_on_free_port()
    }

    /// The TCP port the server listens on (stays the same across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on: `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The directory holding `pg_ctl`, `psql`, `pgbench` and the server.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temporary directory of this cluster; also the Unix socket directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server log (`pg_ctl -l`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the server log (empty if it cannot be read).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&read_lossy(&self.log_path, 0), lines)
    }

    /// The options this cluster was started with.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// True between a successful start/restart and [`stop`](Self::stop).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// The postmaster's process id, from `postmaster.pid`, when the server is up.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// `postgres://user:password@127.0.0.1:port/db`, with user, password and db percent-encoded.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}",
            percent_encode(user),
            percent_encode(password),
            HOST,
            self.port,
            percent_encode(db)
        )
    }

    /// [`url`](Self::url) for the `postgres` superuser.
    pub fn superuser_url(&self, db: &str) -> String {
        self.url(SUPERUSER, &self.opts.superuser_password, db)
    }

    /// Runs `sql` with `psql` as the superuser over TCP and returns its output (`-At`: unaligned,
    /// tuples only, `|` between columns, one row per line, trailing newline removed).
    ///
    /// The SQL is fed on stdin, so several statements run one after another (each in its own
    /// transaction, `CREATE DATABASE` included); `ON_ERROR_STOP=1` makes the first error fail
    /// the call with psql's stderr. The password travels in `PGPASSWORD`, never on the command
    /// line.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, ClusterError> {
        let conninfo = format!(
            "host={HOST} port={} user={SUPERUSER} dbname={} connect_timeout=30",
            self.port,
            conninfo_quote(db)
        );
        let mut command = Command::new(self.client_program("psql"));
        command
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-f", "-", "-d"])
            .arg(&conninfo)
            .env_remove("PSQLRC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in LIBPQ_ENV {
            command.env_remove(var);
        }
        command.env("PGPASSWORD", &self.opts.superuser_password);

        let mut child = command.spawn().map_err(|e| {
            ClusterError::io(
                format!("spawning {}", self.client_program("psql").display()),
                e,
            )
        })?;
        let writer = child.stdin.take().map(|mut stdin| {
            let input = sql.as_bytes().to_vec();
            // A separate thread, so a large result cannot block psql while we are still writing.
            std::thread::spawn(move || {
                // psql exiting early (ON_ERROR_STOP) makes this fail with EPIPE; its exit status
                // and stderr tell the real story.
                let _ = stdin.write_all(&input);
                let _ = stdin.write_all(b"\n");
            })
        });
        let output = child
            .wait_with_output()
            .map_err(|e| ClusterError::io("waiting for psql", e))?;
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        if !output.status.success() {
            return Err(ClusterError::Psql {
                db: db.to_string(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        Ok(stdout.trim_end_matches(['\n', '\r']).to_string())
    }

    /// Creates a `LOGIN` role whose password is stored for the cluster's [`AuthMethod`]
    /// (SCRAM verifier, or md5 hash for [`AuthMethod::Md5`]).
    pub fn create_user(&self, user: &str, password: &str) -> Result<(), ClusterError> {
        let sql = format!(
            "SET password_encryption = '{}';\nCREATE ROLE {} LOGIN PASSWORD {};",
            self.opts.auth_method.password_encryption(),
            quote_ident(user),
            quote_literal(password)
        );
        self.psql("postgres", &sql).map(drop)
    }

    /// Creates a database owned by `owner`.
    pub fn create_database(&self, db: &str, owner: &str) -> Result<(), ClusterError> {
        let sql = format!(
            "CREATE DATABASE {} OWNER {};",
            quote_ident(db),
            quote_ident(owner)
        );
        self.psql("postgres", &sql).map(drop)
    }

    /// `pg_ctl restart -m fast` on the same port (starts the server if it was stopped).
    /// Existing connections are terminated.
    pub fn restart(&self) -> Result<(), ClusterError> {
        let was_running = self.is_running();
        self.running.store(false, Ordering::SeqCst);
        let log_start = file_len(&self.log_path);
        let mut command = self.pg_ctl();
        if was_running {
            command.args(["-m", "fast", "restart"]);
        } else {
            command.arg("start");
        }
        match run(command, "pg_ctl restart") {
            Ok(_) => {
                self.running.store(true, Ordering::SeqCst);
                Ok(())
            }
            Err(err) => Err(self.start_failed(err, log_start)),
        }
    }

    /// Re-reads the configuration (`pg_ctl reload`), e.g. after
    /// [`write_data_file`](Self::write_data_file) replaced `pg_hba.conf`.
    pub fn reload(&self) -> Result<(), ClusterError> {
        let mut command = self.pg_ctl();
        command.arg("reload");
        run(command, "pg_ctl reload").map(drop)
    }

    /// `pg_ctl stop -m fast`. The directory stays until drop; [`restart`](Self::restart) starts
    /// the server again.
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        if !self.is_running() {
            return Ok(());
        }
        let mut command = self.pg_ctl();
        command.args(["-m", "fast", "stop"]);
        run(command, "pg_ctl stop")?;
        self.running.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Writes `contents` to `name` inside the data directory with `mode` (e.g. `0o600` for a TLS
    /// key), owned by the server's OS user, and returns the path. Relative paths in
    /// `postgresql.conf` (`ssl_cert_file = 'server.crt'`) resolve against this directory.
    pub fn write_data_file(
        &self,
        name: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<PathBuf, ClusterError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(ClusterError::InvalidOption(format!(
                "data file name {name:?} must be a plain file name"
            )));
        }
        let path = self.data_dir.join(name);
        write_owned(&path, contents, mode, self.server_user)?;
        Ok(path)
    }

    /// `initdb` into `data/`, then `pg_hba.conf` and the include of our settings file.
    fn init_db(&self) -> Result<(), ClusterError> {
        let pwfile = self.dir.join("pwfile");
        let password = format!("{}\n", self.opts.superuser_password);
        write_owned(&pwfile, password.as_bytes(), 0o600, self.server_user)?;

        let mut command = self.server_command("initdb");
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("--auth-local=trust")
            .arg(format!(
                "--auth-host={}",
                self.opts.auth_method.hba_method()
            ))
            .args(["-U", SUPERUSER])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--locale=C", "--no-sync"]);
        let result = run(command, "initdb");
        // The file held the password in clear; do not leave it behind even for the drop.
        let _ = fs::remove_file(&pwfile);
        result?;

        let method = self.opts.auth_method.hba_method();
        let hba = format!(
            "# Written by pgheal::cluster::TempCluster.\n\
             # TYPE  DATABASE     USER  ADDRESS       METHOD\n\
             local   all          all                 trust\n\
             local   replication  all                 trust\n\
             host    all          all   127.0.0.1/32  {method}\n\
             host    replication  all   127.0.0.1/32  {method}\n"
        );
        write_owned(
            &self.data_dir.join("pg_hba.conf"),
            hba.as_bytes(),
            0o600,
            self.server_user,
        )?;

        let conf_path = self.data_dir.join("postgresql.conf");
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .map_err(|e| ClusterError::io(format!("opening {}", conf_path.display()), e))?;
        writeln!(
            conf,
            "\n# pgheal::cluster::TempCluster settings\ninclude = '{OVERRIDES_FILE}'"
        )
        .map_err(|e| ClusterError::io(format!("writing {}", conf_path.display()), e))?;
        Ok(())
    }

    /// The settings file included from `postgresql.conf`, for the given port.
    fn overrides(&self, port: u16) -> String {
        let mut conf =
            String::from("# Written by pgheal::cluster::TempCluster; later lines win.\n");
        let mut set = |key: &str, value: &str| {
            conf.push_str(key);
            conf.push_str(" = ");
            conf.push_str(&conf_value(value));
            conf.push('\n');
        };
        set("listen_addresses", HOST);
        set("port", &port.to_string());
        set("unix_socket_directories", &self.dir.to_string_lossy());
        set("fsync", "off");
        set("synchronous_commit", "off");
        set("full_page_writes", "off");
        set("max_connections", &self.opts.max_connections.to_string());
        set(
            "password_encryption",
            self.opts.auth_method.password_encryption(),
        );
        set("logging_collector", "off");
        set("log_destination", "stderr");
        for (key, value) in &self.opts.extra_conf {
            set(key, value);
        }
        conf
    }

    /// Picks a free port and starts the server, retrying when another process takes the port
    /// between our probe and the server's bind.
    fn start_on_free_port(mut self) -> Result<TempCluster, ClusterError> {
        let mut clash_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            self.port = port;
            write_owned(
                &self.data_dir.join(OVERRIDES_FILE),
                self.overrides(port).as_bytes(),
                0o600,
                self.server_user,
            )?;
            let log_start = file_len(&self.log_path);
            let mut command = self.pg_ctl();
            command.arg("start");
            match run(command, "pg_ctl start") {
                Ok(_) => {
                    self.running.store(true, Ordering::SeqCst);
                    return Ok(self);
                }
                Err(err) => {
                    let new_log = read_lossy(&self.log_path, log_start);
                    if !is_port_clash(&new_log) {
                        return Err(self.start_failed(err, log_start));
                    }
                    clash_log = tail(&new_log, LOG_TAIL_LINES);
                }
            }
        }
        Err(ClusterError::PortClash {
            attempts: START_ATTEMPTS,
            log_tail: clash_log,
        })
    }

    /// Wraps a failed `pg_ctl start/restart` with what the server logged since `log_start`.
    fn start_failed(&self, err: ClusterError, log_start: u64) -> ClusterError {
        let mut log_tail = tail(&read_lossy(&self.log_path, log_start), LOG_TAIL_LINES);
        if log_tail.trim().is_empty() {
            log_tail = self.log_tail(LOG_TAIL_LINES);
        }
        ClusterError::StartFailed {
            port: self.port,
            message: err.to_string(),
            log: self.log_path.display().to_string(),
            log_tail,
        }
    }

    /// `pg_ctl -D data -l log -w -t 60` as the server user; the caller adds the action.
    fn pg_ctl(&self) -> Command {
        let mut command = self.server_command("pg_ctl");
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_path)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS]);
        command
    }

    /// A server program (initdb, pg_ctl) from the bin dir, run as the server user, in the
    /// cluster directory, without libpq variables that could point it elsewhere.
    fn server_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in LIBPQ_ENV {
            command.env_remove(var);
        }
        if let Some(user) = self.server_user {
            command.uid(user.uid).gid(user.gid);
        }
        command
    }

    /// A client program (psql, pgbench) from the bin dir, or from PATH if the bin dir lacks it.
    fn client_program(&self, program: &str) -> PathBuf {
        let path = self.bin_dir.join(program);
        if path.is_file() {
            path
        } else {
            PathBuf::from(program)
        }
    }
}

impl Drop for TempCluster {
    /// Stops the server (`pg_ctl stop -m immediate`) and deletes the directory. Never panics;
    /// failures are ignored (the watchdog retries the cleanup when this process exits).
    fn drop(&mut self) {
        if self.data_dir.join("postmaster.pid").exists() {
            let mut command = self.server_command("pg_ctl");
            command.arg("-D").arg(&self.data_dir).args([
                "-w",
                "-t",
                "30",
                "-m",
                "immediate",
                "stop",
            ]);
            let _ = command.output();
        }
        self.running.store(false, Ordering::SeqCst);
        let removed = fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists();
        if let Some(mut watchdog) = self.watchdog.take() {
            if removed {
                let _ = watchdog.kill();
                let _ = watchdog.wait();
            }
            // Otherwise leave it running: it deletes the directory when this process exits.
        }
    }
}

/// Rejects option values that cannot be written to `postgresql.conf` safely.
fn validate(opts: &ClusterOptions) -> Result<(), ClusterError> {
    if opts.superuser_password.is_empty() || opts.superuser_password.contains(['\n', '\r']) {
        return Err(ClusterError::InvalidOption(
            "superuser_password must be non-empty and on one line (initdb --pwfile)".to_string(),
        ));
    }
    if opts.max_connections == 0 {
        return Err(ClusterError::InvalidOption(
            "max_connections must be at least 1".to_string(),
        ));
    }
    for (key, value) in &opts.extra_conf {
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !key_ok {
            return Err(ClusterError::InvalidOption(format!(
                "extra_conf key {key:?} is not a setting name"
            )));
        }
        if value.contains(['\n', '\r', '\0']) {
            return Err(ClusterError::InvalidOption(format!(
                "extra_conf value of {key} must be on one line"
            )));
        }
    }
    Ok(())
}

/// Counter making directory names unique within the process.
static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates `$TMPDIR/pgheal-<pid>-<counter>-<nanos>` (mode 0700, owned by the server user).
fn create_cluster_dir(server_user: Option<OsUser>) -> Result<PathBuf, ClusterError> {
    let mut base = std::env::temp_dir();
    let fallback = Path::new("/tmp");
    if let Some(user) = server_user {
        if !os_user::can_traverse(user, &base) {
            if os_user::can_traverse(user, fallback) {
                base = fallback.to_path_buf();
            } else {
                return Err(ClusterError::TempDirNotReachable(base));
            }
        }
    }
    // The Unix socket lives in this directory and its path has a hard length limit.
    if base.as_os_str().len() + 40 > MAX_SOCKET_DIR_LEN && fallback.is_dir() {
        base = fallback.to_path_buf();
    }
    let pid = std::process::id();
    let mut last_err = None;
    for _ in 0..100 {
        let counter = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("pgheal-{pid}-{counter}-{nanos}"));
        match fs::create_dir(&dir) {
            Ok(()) => {
                let owned = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .and_then(|()| chown_to(&dir, server_user));
                if let Err(e) = owned {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(ClusterError::io(format!("preparing {}", dir.display()), e));
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => {
                return Err(ClusterError::io(format!("creating {}", dir.display()), e));
            }
        }
    }
    Err(ClusterError::io(
        format!("creating a cluster directory in {}", base.display()),
        last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
    ))
}

/// Shell script run by the watchdog: `$1` owning pid, `$2` cluster dir, `$3` data dir.
/// Waits while the owner lives and the directory exists; if the owner died first, stops the
/// postmaster (SIGQUIT = immediate shutdown) and deletes the directory.
const WATCHDOG_SCRIPT: &str = r#"
trap '' INT HUP PIPE
owner=$1 dir=$2 data=$3
while kill -0 "$owner" 2>/dev/null && [ -d "$dir" ]; do sleep 1; done
[ -d "$dir" ] || exit 0
if [ -f "$data/postmaster.pid" ]; then
  pid=$(head -n 1 "$data/postmaster.pid")
  if [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null; then
    i=0
    while [ "$i" -lt 30 ] && kill -0 "$pid" 2>/dev/null; do sleep 1; i=$((i + 1)); done
  fi
fi
rm -rf "$dir"
"#;

/// Starts the watchdog in its own process group (so a terminal's Ctrl-C does not reach it).
/// It runs as the current user: as root it may signal the postmaster and delete the directory.
/// A failure to start it only loses the crash cleanup, so it is not an error.
fn spawn_watchdog(dir: &Path, data_dir: &Path) -> Option<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("pgheal-cluster-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()
}

/// A port the kernel considers free right now on 127.0.0.1.
fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind((HOST, 0))
        .map_err(|e| ClusterError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| ClusterError::io("reading the probe socket's port", e))?
        .port();
    Ok(port)
}

/// True when the server log says the listen address was taken.
fn is_port_clash(log: &str) -> bool {
    log.contains("Address already in use")
        || log.contains("could not bind IPv4 address")
        || log.contains("could not create any TCP/IP sockets")
}

/// Runs a PostgreSQL program to completion; a non-zero exit becomes [`ClusterError::CommandFailed`]
/// with its stderr and stdout.
fn run(mut command: Command, program: &str) -> Result<Output, ClusterError> {
    let output = command
        .output()
        .map_err(|e| ClusterError::io(format!("running {program}"), e))?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stdout.trim());
    }
    Err(ClusterError::CommandFailed {
        program: program.to_string(),
        status: output.status.to_string(),
        output: text,
    })
}

/// Writes a file with `mode`, owned by the server user when there is one.
fn write_owned(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<OsUser>,
) -> Result<(), ClusterError> {
    fs::write(path, contents)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .and_then(|()| chown_to(path, owner))
        .map_err(|e| ClusterError::io(format!("writing {}", path.display()), e))
}

fn chown_to(path: &Path, owner: Option<OsUser>) -> io::Result<()> {
    match owner {
        Some(user) => std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)),
        None => Ok(()),
    }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The file's contents from byte `offset` on, lossily decoded; empty when unreadable.
fn read_lossy(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let read = fs::File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(offset))?;
        file.read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A value for `postgresql.conf`: single-quoted unless the caller already quoted it.
fn conf_value(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    }
}

/// A value for a libpq conninfo string.
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An SQL identifier, always double-quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal (`standard_conforming_strings` is on).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_unreserved_only() {
        assert_eq!(percent_encode("app_user-1.x~"), "app_user-1.x~");
        assert_eq!(
            percent_encode("p@ss:w/rd %é"),
            "p%40ss%3Aw%2Frd%20%25%C3%A9"
        );
    }

    #[test]
    fn conf_values_are_quoted_once() {
        assert_eq!(conf_value("on"), "'on'");
        assert_eq!(conf_value("'on'"), "'on'");
        assert_eq!(conf_value("it's"), "'it''s'");
    }

    #[test]
    fn sql_quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(conninfo_quote("a'b\\c"), "'a\\'b\\\\c'");
    }

    #[test]
    fn detects_port_clash_in_log() {
        let log = "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\n\
                   WARNING:  could not create listen socket for \"127.0.0.1\"\n\
                   FATAL:  could not create any TCP/IP sockets\n";
        assert!(is_port_clash(log));
        assert!(!is_port_clash("FATAL:  data directory has wrong ownership"));
    }

    #[test]
    fn rejects_unsafe_options() {
        let mut opts = ClusterOptions::default();
        opts.extra_conf
            .push(("ssl\nfsync".to_string(), "on".to_string()));
        assert!(validate(&opts).is_err());
        let opts = ClusterOptions {
            superuser_password: String::new(),
            ..ClusterOptions::default()
        };
        assert!(validate(&opts).is_err());
        assert!(validate(&ClusterOptions::default()).is_ok());
    }
}
