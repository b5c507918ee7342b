//! [`TempCluster`] itself: a PostgreSQL cluster created with `initdb`, started with `pg_ctl`
//! on a free port, driven with `psql`, and stopped and deleted on drop (see the
//! [module documentation](super) for why the tests and `pgheal demo` use one).

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use super::options::validate;
use super::os_user::{self, OsUser};
use super::quote::{conf_value, conninfo_quote, percent_encode, quote_ident, quote_literal};
use super::system::{
    create_cluster_dir, file_len, free_port, is_port_clash, read_lossy, run, spawn_watchdog, tail,
    write_owned,
};
use super::{binaries, ClusterError, ClusterOptions, HOST};

#[cfg(doc)]
use super::AuthMethod;

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
