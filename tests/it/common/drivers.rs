//! Running a real driver's script (tests/drivers/) against pgheal or PostgreSQL: the
//! environment it connects with, the `READY` / `go` stdin handshake around a migration, the
//! phase timeouts, the transcript it prints, and skipping (or failing under CI) when the
//! driver is not installed. Used by drivers_heal.rs and drivers_in_transaction.rs, which
//! judge the transcripts.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use pgheal::cluster::TempCluster;
use pgheal::heal::Outcome;
use pgheal::proxy::ProxyHandle;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::{admin, heal_count, start_pg};

/// How long a script may take to reach `READY`, and then to finish after `go`. Generous: the
/// Java source launcher compiles the program first. A hang through pgheal fails the test.
pub const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

pub const MIGRATION: &str = "ALTER TABLE orders ADD COLUMN discount_code varchar(50)";

/// The column shape the drivers first see: the contract pgheal must keep.
pub const CONTRACT: &str = "id:int4,total:numeric,note:text";
pub const CACHED_PLAN_ERROR: &str =
    "error=0A000 cached plan must not change result type routine=RevalidateCachedQuery";

pub const ROWS_SQL: &str = "SELECT id, total, note, discount_code FROM orders ORDER BY id";

pub const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";

/// libpq-style variables that could redirect or alter a driver's connection; removed from the
/// scripts' environment so only what the test sets counts.
pub const FOREIGN_PG_ENV: &[&str] = &[
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGPASSFILE",
    "PGHOSTADDR",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGGSSENCMODE",
    "PGTARGETSESSIONATTRS",
    "PGCHANNELBINDING",
    "PGAPPNAME",
    "PGCLIENTENCODING",
    "PGTZ",
    "PGDATESTYLE",
    "PGSSLNEGOTIATION",
    "PGLOADBALANCEHOSTS",
    // Rails would connect wherever this points instead of the PG* settings.
    "DATABASE_URL",
];

pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One driver: how to run its script, how to tell whether it is installed, and (`direct`)
/// what the calling test expects of it straight against PostgreSQL.
pub struct Driver<D> {
    pub name: &'static str,
    pub program: &'static str,
    pub args: Vec<String>,
    /// Extra environment for the script.
    pub env: Vec<(&'static str, &'static str)>,
    /// A command that succeeds only when the driver is installed.
    pub probe: (&'static str, Vec<String>, PathBuf),
    /// A file the driver needs besides (a jar).
    pub needs_file: Option<&'static str>,
    /// How to install it (for the skip/failure message).
    pub install_hint: &'static str,
    /// Prefixes of the informational transcript lines, not compared.
    pub informational: &'static [&'static str],
    /// What the driver does straight against PostgreSQL after the migration.
    pub direct: D,
}

impl<D> Driver<D> {
    /// A Python driver: `python3 script`, installed when `import module` works. No extra
    /// environment, `.ci/setup` as the install hint, only `driver:` lines informational.
    pub fn python(name: &'static str, module: &str, script: &str, direct: D) -> Driver<D> {
        Driver {
            name,
            program: "python3",
            args: vec![script.into()],
            env: vec![],
            probe: (
                "python3",
                vec!["-c".into(), format!("import {module}")],
                crate_dir().into(),
            ),
            needs_file: None,
            install_hint: ".ci/setup installs it",
            informational: &["driver: "],
            direct,
        }
    }

    /// A node-postgres script (`node script`), installed when `require('pg')` works from
    /// tests/drivers/node, where the script resolves it. Defaults as for [`Driver::python`].
    pub fn node(name: &'static str, script: &str, direct: D) -> Driver<D> {
        Driver {
            name,
            program: "node",
            args: vec![script.into()],
            env: vec![],
            probe: (
                "node",
                vec!["-e".into(), "require('pg')".into()],
                crate_dir().join("tests/drivers/node"),
            ),
            needs_file: None,
            install_hint: ".ci/setup installs it",
            informational: &["driver: "],
            direct,
        }
    }

    /// pgjdbc: the Java source file `source` run by the source launcher with Debian's jar on
    /// the class path; installed when `java -version` works and the jar is there. Defaults as
    /// for [`Driver::python`].
    pub fn pgjdbc(name: &'static str, source: &str, direct: D) -> Driver<D> {
        Driver {
            name,
            program: "java",
            args: vec!["-cp".into(), PGJDBC_JAR.into(), source.into()],
            env: vec![],
            probe: ("java", vec!["-version".into()], crate_dir().into()),
            needs_file: Some(PGJDBC_JAR),
            install_hint: ".ci/setup installs it",
            informational: &["driver: "],
            direct,
        }
    }

    /// `Ok(())` when the driver can run; otherwise why not.
    pub async fn available(&self) -> Result<(), String> {
        if let Some(file) = self.needs_file {
            if !Path::new(file).is_file() {
                return Err(format!("{file} is missing"));
            }
        }
        let (program, args, dir) = &self.probe;
        let out = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{program} {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// True when the test should go on; false (after saying why) when it should skip. Fails
    /// instead of skipping under CI.
    pub async fn ready_or_skip(&self) -> bool {
        match self.available().await {
            Ok(()) => true,
            Err(why) if std::env::var_os("CI").is_some() => panic!(
                "{} is not installed but CI is set ({}): {why}",
                self.name, self.install_hint
            ),
            Err(why) => {
                eprintln!(
                    "skipping: {} is not installed ({}): {why}",
                    self.name, self.install_hint
                );
                false
            }
        }
    }
}

/// Whether `python3` can import `module`: true to go on, false (after saying why) to skip.
/// Fails instead of skipping under CI (.ci/setup installs the Python packages).
pub async fn python_module_or_skip(module: &str) -> bool {
    let probe = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .output()
        .await;
    if probe.as_ref().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{module} is not installed but CI is set (.ci/setup installs it): {probe:?}"
    );
    eprintln!("skipping: {module} is not installed");
    false
}

/// What a script printed and how it ended.
pub struct Run {
    pub driver: &'static str,
    pub target: String,
    pub status: Option<ExitStatus>,
    pub stdout: Vec<String>,
    pub stderr: String,
    /// Prefixes of the lines left out of the transcript.
    pub informational: &'static [&'static str],
}

impl Run {
    pub fn report(&self) -> String {
        format!(
            "{} against {}: exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.driver,
            self.target,
            self.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "(killed: timed out)".into()),
            self.stdout.join("\n"),
            self.stderr.trim_end()
        )
    }

    /// The transcript without the informational lines.
    pub fn transcript(&self) -> Vec<String> {
        self.stdout
            .iter()
            .filter(|l| !self.informational.iter().any(|p| l.starts_with(p)))
            .cloned()
            .collect()
    }

    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The script exited successfully and printed exactly `expected`; otherwise panics with the
    /// report, the differing lines, and `context`.
    pub fn assert_ok(&self, expected: &[String], context: &str) {
        assert!(
            self.succeeded(),
            "script failed\n{}\n{context}",
            self.report()
        );
        let actual = self.transcript();
        if actual != expected {
            let diff: Vec<String> = (0..actual.len().max(expected.len()))
                .filter_map(|i| {
                    let (a, e) = (actual.get(i), expected.get(i));
                    (a != e)
                        .then(|| format!("  line {i}: expected {e:?}\n          got      {a:?}"))
                })
                .collect();
            panic!(
                "unexpected transcript\n{}\n--- differences ---\n{}\n{context}",
                self.report(),
                diff.join("\n")
            );
        }
    }
}

/// Runs the driver's script against 127.0.0.1:`port` as app/secret (environment variables
/// only); when the script says `READY`, runs `migrate` and then lets the script go on. Kills
/// the script and reports what it printed when a phase times out. Returns what `migrate`
/// returned, if it ran, once the script has ended.
pub async fn run_script<D, T>(
    driver: &Driver<D>,
    port: u16,
    target: String,
    migrate: impl AsyncFnOnce() -> T,
) -> (Run, Option<T>) {
    let mut cmd = Command::new(driver.program);
    cmd.args(&driver.args)
        .current_dir(crate_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in FOREIGN_PG_ENV {
        cmd.env_remove(var);
    }
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", super::USER)
        .env("PGPASSWORD", super::PASSWORD)
        .env("PGDATABASE", super::DB)
        // Unbuffered Python output, so READY arrives at once even if a print lacks flush.
        .env("PYTHONUNBUFFERED", "1");
    for (k, v) in &driver.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {} for {}: {e}", driver.program, driver.name));

    let mut stderr_pipe = child.stderr.take().expect("stderr piped");
    let stderr_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    });
    let mut stdin = child.stdin.take().expect("stdin piped");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let mut stdout = Vec::new();
    let mut timed_out = false;
    let mut migrated = None;

    // Phase 1: up to READY (or the end of output, if the script fails early).
    let ready = tokio::time::timeout(PHASE_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let is_ready = line == "READY";
            stdout.push(line);
            if is_ready {
                return true;
            }
        }
        false
    })
    .await;
    match ready {
        Ok(true) => {
            migrated = Some(migrate().await);
            stdin
                .write_all(b"go\n")
                .await
                .unwrap_or_else(|e| panic!("writing go to {}: {e}", driver.name));
            stdin.flush().await.ok();
            // Nothing more to say: close stdin (EOF), so no script waits on it.
            drop(stdin);
            // Phase 2: the rest of the output.
            let rest = tokio::time::timeout(PHASE_TIMEOUT, async {
                while let Ok(Some(line)) = lines.next_line().await {
                    stdout.push(line);
                }
            })
            .await;
            timed_out = rest.is_err();
        }
        Ok(false) => {}
        Err(_) => timed_out = true,
    }

    let status = if timed_out {
        let _ = child.kill().await;
        None
    } else {
        match tokio::time::timeout(PHASE_TIMEOUT, child.wait()).await {
            Ok(status) => Some(status.expect("wait for script")),
            Err(_) => {
                let _ = child.kill().await;
                None
            }
        }
    };
    let stderr = tokio::time::timeout(Duration::from_secs(10), stderr_task)
        .await
        .map(|r| r.unwrap_or_default())
        .unwrap_or_else(|_| "(stderr not closed)".into());
    let run = Run {
        driver: driver.name,
        target,
        status,
        stdout,
        stderr,
        informational: driver.informational,
    };
    (run, migrated)
}

/// Runs `driver` straight to PostgreSQL and checks that its transcript has every line of
/// `facts` (so a transcript wrong on both sides cannot pass), then through pgheal in session and
/// in transaction pooling with one server connection, and checks that the driver saw exactly
/// the same. `before` runs before each run (to reset a table, say).
pub async fn same_straight_and_through<D>(
    driver: &Driver<D>,
    pg: &Arc<TempCluster>,
    facts: &[&str],
    before: impl AsyncFn(),
) {
    before().await;
    let (direct, _) = run_script(driver, pg.port(), "PostgreSQL".into(), async || ()).await;
    assert!(direct.succeeded(), "{}", direct.report());
    let expected = direct.transcript();
    for fact in facts {
        assert!(
            expected.iter().any(|l| l == fact),
            "straight to PostgreSQL, expected {fact:?}\n{}",
            direct.report()
        );
    }
    for mode in ["session", "transaction"] {
        let proxy = super::start_proxy(pg, |a| {
            a.pool_mode = Some(mode.into());
            a.pool_size = Some(1);
        })
        .await;
        before().await;
        let target = format!("pgheal ({mode})");
        let (through, _) = run_script(driver, proxy.addr.port(), target, async || ()).await;
        through.assert_ok(&expected, &format!("{mode} pooling"));
    }
}

/// [`admin`] on a blocking thread.
pub async fn admin_async(pg: &Arc<TempCluster>, sql: impl Into<String>) -> String {
    let pg = Arc::clone(pg);
    let sql = sql.into();
    tokio::task::spawn_blocking(move || admin(&pg, &sql))
        .await
        .expect("admin task")
}

/// [`start_pg`] on a blocking thread.
pub async fn start_cluster() -> Arc<TempCluster> {
    Arc::new(
        tokio::task::spawn_blocking(start_pg)
            .await
            .expect("start PostgreSQL"),
    )
}

/// `orders` as it is before each run: `values` (the rows), owned by app, no discount_code yet.
pub async fn reset_orders(pg: &Arc<TempCluster>, values: &str) {
    admin_async(
        pg,
        format!(
            "DROP TABLE IF EXISTS orders;
             CREATE TABLE orders (id int PRIMARY KEY, total numeric, note text);
             ALTER TABLE orders OWNER TO app;
             INSERT INTO orders VALUES {values};"
        ),
    )
    .await;
}

/// pgheal's heal counters, for failure messages.
pub fn heal_counters(proxy: &ProxyHandle) -> String {
    format!(
        "heal counters: healed={} projected={} refused={} forwarded_in_transaction={}",
        heal_count(proxy, Outcome::Healed),
        heal_count(proxy, Outcome::Projected),
        heal_count(proxy, Outcome::Refused),
        heal_count(proxy, Outcome::ForwardedInTransaction),
    )
}
