//! The `pgheal` binary: parse the command line, load the configuration, run until a signal.
//!
//! The order of a start follows PgBouncer's: load and check the configuration (exit 2 on an
//! invalid setting), refuse a pidfile of a running instance, detach with `-d` (before any thread
//! exists), bind the listener, switch to the `-u`/`user` OS user, write the pidfile, tell systemd
//! and the waiting `-d` parent that pgheal is ready. With `-R` the listeners and idle clients
//! of the running pgheal are taken over instead of binding (see `pgheal::takeover`); without
//! one, pgheal boots normally. SIGTERM and SIGINT shut down gracefully;
//! SIGHUP reopens the logfile and reloads the configuration (PgBouncer's `RELOAD`).

use std::process::ExitCode;

use clap::Parser;
use pgheal::config::{self, cli::Cli, cli::Command, LogFormat};
use pgheal::process::{daemon, logfile::LogFile, notify, pidfile, user};

fn level(v: u8) -> &'static str {
    match v {
        0 => "info",
        1 => "debug",
        _ => "trace",
    }
}

/// The log level: `-v` wins, then `PGHEAL_LOG` (a full filter spec), then the file's `verbose`.
/// `None` in the second place: the file decides (and a reload that changes `verbose` changes
/// the level).
fn log_spec(cli_verbose: u8, file_verbose: u8) -> (String, bool) {
    if cli_verbose > 0 {
        return (level(cli_verbose).to_owned(), false);
    }
    match std::env::var("PGHEAL_LOG") {
        Ok(s) if !s.trim().is_empty() => (s.trim().to_owned(), false),
        _ => (level(file_verbose).to_owned(), true),
    }
}

/// The log filter, from a spec.
fn log_filter<S>(spec: &str) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    // `Targets` (levels per target, e.g. `pgheal=debug,info`) rather than `EnvFilter`: the
    // session task runs inside its client span and enters it on every poll, and `EnvFilter`
    // takes a lock on each enter and exit to look for span-field directives. Those directives
    // (`[span{field=x}]=level`) are still accepted, through `EnvFilter`, for debugging.
    match spec.parse::<tracing_subscriber::filter::Targets>() {
        Ok(targets) => targets.boxed(),
        Err(_) => match tracing_subscriber::EnvFilter::try_new(spec) {
            Ok(env) => env.boxed(),
            Err(e) => {
                eprintln!("pgheal: PGHEAL_LOG: {e}; logging at info");
                tracing_subscriber::filter::Targets::new()
                    .with_default(tracing::Level::INFO)
                    .boxed()
            }
        },
    }
}

/// Changes the log level of the running process (a reload that changes `verbose`).
type SetLevel = Box<dyn Fn(u8) + Send + Sync>;

/// Logging to stderr (unless `quiet`) and to `logfile` (if any).
fn init_logs(format: LogFormat, spec: &str, quiet: bool, logfile: Option<LogFile>) -> SetLevel {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_filter(spec));
    let stderr = (!quiet).then(|| {
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr);
        match format {
            LogFormat::Json => fmt.json().boxed(),
            LogFormat::Human => fmt.boxed(),
        }
    });
    let file = logfile.map(|f| {
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(f);
        match format {
            LogFormat::Json => fmt.json().boxed(),
            LogFormat::Human => fmt.boxed(),
        }
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .init();
    Box::new(move |verbose| {
        let spec = level(verbose);
        match handle.reload(log_filter(spec)) {
            Ok(()) => tracing::info!(level = spec, "log level changed (verbose)"),
            Err(e) => tracing::warn!(error = %e, "cannot change the log level"),
        }
    })
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    match cli.command.take() {
        Some(command) => subcommand(command),
        None => serve(cli),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    // The main runtime is event loop 0 (see `pgheal::event_loops`); the proxy starts the others.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("pgheal: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

fn subcommand(command: Command) -> ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match command {
        Command::Demo => runtime.block_on(async {
            match pgheal::demo::run().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pgheal demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }),
        Command::InstallSchemaWatch { upstream, print } => {
            if print {
                println!("{}", pgheal::watch::install_sql());
                return ExitCode::SUCCESS;
            }
            let Some(url) = upstream else {
                eprintln!("pgheal: install-schema-watch needs --upstream postgres://superuser:password@host:port/dbname");
                return ExitCode::from(2);
            };
            runtime.block_on(async {
                match pgheal::watch::install(&url).await {
                    Ok(()) => {
                        println!(
                            "pgheal: schema watch installed; run pgheal with --schema-watch listen"
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("pgheal: installing the schema watch failed: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Healthcheck {
            metrics_listen,
            live,
            allow_down,
            timeout,
        } => {
            use pgheal::metrics::health;
            let addr = match health::probe_addr(&metrics_listen) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("pgheal healthcheck: metrics address {metrics_listen:?}: {e}");
                    return ExitCode::from(2);
                }
            };
            let path = if live {
                "/healthz".to_owned()
            } else if allow_down.is_empty() {
                "/readyz".to_owned()
            } else {
                format!("/readyz?allow_down={}", allow_down.join(","))
            };
            let timeout = std::time::Duration::try_from_secs_f64(timeout)
                .unwrap_or(std::time::Duration::from_secs(5));
            match runtime.block_on(health::probe(addr, &path, timeout)) {
                Ok(body) => {
                    print!("{body}");
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("pgheal healthcheck: {why}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckMigration {
            upstream,
            statements,
            database,
            format,
            migration,
        } => runtime.block_on(check_migration(
            upstream, statements, database, format, migration,
        )),
    }
}

/// `pgheal check-migration`: exit 0 when nothing breaks, 1 when something breaks even through
/// pgheal, 2 when the check could not run.
async fn check_migration(
    upstream: String,
    statements: std::path::PathBuf,
    database: Option<String>,
    format: pgheal::migration_check::report::Format,
    migration: std::path::PathBuf,
) -> ExitCode {
    use pgheal::migration_check as mc;
    let sql = match std::fs::read_to_string(&migration) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "pgheal check-migration: cannot read {}: {e}",
                migration.display()
            );
            return ExitCode::from(2);
        }
    };
    let stmts = match mc::load_statements(&statements, database.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgheal check-migration: {e}");
            return ExitCode::from(2);
        }
    };
    match mc::check(&upstream, stmts, &sql, &migration).await {
        Ok(report) => {
            print!("{}", mc::report::render(&report, format));
            ExitCode::from(report.exit_status())
        }
        Err(e) => {
            eprintln!("pgheal check-migration: {e}");
            ExitCode::from(2)
        }
    }
}

/// Run the proxy.
fn serve(mut cli: Cli) -> ExitCode {
    if let Some(file) = cli.config_file.take() {
        if cli.run.config.is_some() {
            eprintln!(
                "pgheal: give the configuration file once (as the argument or with --config)"
            );
            return ExitCode::from(2);
        }
        cli.run.config = Some(file);
    }
    let cfg = match config::load(&cli.run) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgheal: {e}");
            return ExitCode::from(2);
        }
    };
    let process = cfg.process.clone();
    if cli.daemon && process.pidfile.is_none() {
        eprintln!("pgheal: invalid setting `pidfile`: -d/--daemon needs a pidfile in the configuration (as PgBouncer)");
        return ExitCode::from(2);
    }
    // With -R the pidfile names the process being taken over.
    if let Some(p) = process.pidfile.as_ref().filter(|_| !cli.reboot) {
        if let Err(e) = pidfile::check(p) {
            eprintln!("pgheal: {e}");
            return ExitCode::FAILURE;
        }
    }
    let logfile = match process.logfile.as_deref().map(LogFile::open).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("pgheal: cannot open the logfile: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Detach while pgheal has a single thread; the parent waits for `ready` or `failed`.
    let readiness = if cli.daemon {
        match daemon::detach() {
            Ok(daemon::Detached::Parent(code)) => return ExitCode::from(code),
            Ok(daemon::Detached::Daemon(r)) => Some(r),
            Err(e) => {
                eprintln!("pgheal: cannot run in the background: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let (spec, file_sets_level) = log_spec(cli.verbose, process.verbose);
    let set_level = init_logs(
        cfg.log_format,
        &spec,
        cli.quiet || cli.daemon,
        logfile.clone(),
    );
    let live = config::live::LiveConfig::new(cfg, cli.run.clone());
    if file_sets_level {
        live.on_verbose(set_level);
    }
    if cli.daemon && logfile.is_none() {
        tracing::warn!("running in the background without a logfile: log lines go nowhere");
    }
    for w in &live.current().warnings {
        tracing::warn!("{w}");
    }
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => {
            if let Some(r) = readiness {
                r.failed("cannot start the runtime");
            }
            return code;
        }
    };
    runtime.block_on(run(
        std::sync::Arc::new(live),
        readiness,
        logfile,
        cli.reboot,
    ))
}

/// `-R`: take the sockets and idle clients of the pgheal running with this configuration (see
/// `pgheal::takeover`). `Ok(None)`: none runs, boot normally.
async fn take_over(cfg: &config::Config) -> Result<Option<pgheal::takeover::Inherited>, String> {
    let Some(u) = &cfg.unix_socket else {
        tracing::warn!(
            "-R/--reboot: no unix_socket_dir, so no running pgheal can be found; booting normally"
        );
        return Ok(None);
    };
    let (dir, port) = (u.dir.clone(), cfg.listen.port());
    let asked = tokio::task::spawn_blocking(move || pgheal::takeover::request(&dir, port))
        .await
        .map_err(|e| format!("online restart: {e}"))?;
    match asked {
        Ok(None) => {
            tracing::info!(
                "-R/--reboot: no pgheal is running with this configuration; booting normally"
            );
            Ok(None)
        }
        Ok(Some(i)) => Ok(Some(i)),
        Err(e) => Err(format!("online restart failed: {e}")),
    }
}

async fn run(
    config: std::sync::Arc<config::live::LiveConfig>,
    readiness: Option<daemon::Readiness>,
    logfile: Option<LogFile>,
    reboot: bool,
) -> ExitCode {
    let process = config.current().process.clone();
    // Handlers first: a SIGHUP right after READY=1 must not find the default action (exit).
    let signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            let message = format!("cannot install signal handlers: {e}");
            eprintln!("pgheal: {message}");
            if let Some(r) = readiness {
                r.failed(&message);
            }
            return ExitCode::FAILURE;
        }
    };
    let fail = |readiness: Option<daemon::Readiness>, message: String| {
        tracing::error!("{message}");
        if let Some(r) = readiness {
            r.failed(&message);
        }
        ExitCode::FAILURE
    };
    let inherited = if reboot {
        match take_over(&config.current()).await {
            Ok(i) => i,
            Err(e) => return fail(readiness, e),
        }
    } else {
        None
    };
    let took_over = inherited.is_some();
    let handle = match pgheal::proxy::start_with(config, inherited).await {
        Ok(h) => h,
        Err(e) => return fail(readiness, format!("cannot start: {e}")),
    };
    if let Some(name) = &process.user {
        let given = match &handle.unix_socket {
            Some(socket) => user::give_to(socket, name),
            None => Ok(()),
        };
        if let Err(e) = given.and_then(|()| user::switch_to(name)) {
            handle.shutdown().await;
            return fail(readiness, e.to_string());
        }
        tracing::info!(user = %name, "running as OS user");
    }
    if let Some(p) = &process.pidfile {
        let written = if took_over {
            pidfile::replace(p)
        } else if reboot {
            // -R found nobody to take over: the start's check, skipped for -R, is due now.
            pidfile::check(p).and_then(|()| pidfile::write(p))
        } else {
            pidfile::write(p)
        };
        if let Err(e) = written {
            handle.shutdown().await;
            return fail(readiness, e.to_string());
        }
    }
    if let Some(r) = readiness {
        r.ready();
    }
    // After a takeover this process is the service's main process from now on (a unit with
    // `NotifyAccess=all` follows it; see the README's systemd recipe for -R).
    let ready = if took_over {
        format!("MAINPID={}\nREADY=1", std::process::id())
    } else {
        "READY=1".to_owned()
    };
    if let Err(e) = notify::notify(&ready) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
    signals.serve(&handle, logfile.as_ref()).await;
    // A process whose sockets a new one took over is not the service stopping.
    if !handle.was_taken_over() {
        let _ = notify::notify("STOPPING=1");
    }
    handle.wait().await;
    if let Some(p) = &process.pidfile {
        pidfile::remove(p);
    }
    ExitCode::SUCCESS
}

/// The signals PgBouncer 1.23+ answers, caught from the start:
/// - SIGTERM: stop accepting and let sessions finish (PgBouncer's `SHUTDOWN
///   WAIT_FOR_CLIENTS`), for up to `shutdown_timeout`, pgheal's own bound;
/// - SIGINT: PgBouncer's `SHUTDOWN WAIT_FOR_SERVERS` (pause, end once no server connection is
///   in use);
/// - either of them again while stopping, or SIGQUIT: end every session now;
/// - SIGUSR1 / SIGUSR2: `PAUSE` / `RESUME`;
/// - SIGHUP: reopen the logfile and `RELOAD` (the TLS certificates are read again even if the
///   configuration file turns out invalid).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Answer signals until a stop is asked for; the caller then waits for the proxy, while a
    /// second stop signal is still answered (in the background).
    async fn serve(mut self, handle: &pgheal::proxy::ProxyHandle, logfile: Option<&LogFile>) {
        use pgheal::proxy::Stop;
        loop {
            let mut from_inside = false;
            let stop = tokio::select! {
                // Asked from inside: the console's SHUTDOWN, or a new process took over (-R).
                _ = handle.stopping() => {
                    from_inside = true;
                    None
                }
                _ = self.term.recv() => Some(("SIGTERM", Stop::Graceful)),
                _ = self.int.recv() => Some(("SIGINT", Stop::WaitForServers)),
                _ = self.quit.recv() => Some(("SIGQUIT", Stop::Immediate)),
                _ = self.usr1.recv() => {
                    tracing::info!("SIGUSR1: PAUSE");
                    handle.pause();
                    None
                }
                _ = self.usr2.recv() => {
                    tracing::info!("SIGUSR2: RESUME");
                    handle.resume();
                    None
                }
                _ = self.hup.recv() => {
                    if let Some(f) = logfile {
                        if let Err(e) = f.reopen() {
                            tracing::warn!(error = %e, path = %f.path().display(), "cannot reopen the logfile");
                        }
                    }
                    tracing::info!("SIGHUP: RELOAD");
                    handle.reload_tls();
                    // A failure is logged by the reload; the old configuration stays.
                    let _ = handle.reload();
                    None
                }
            };
            if from_inside {
                // A stop signal still hurries the stop.
                let hurry = handle.clone_stopper();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = self.term.recv() => {}
                        _ = self.int.recv() => {}
                        _ = self.quit.recv() => {}
                    }
                    tracing::info!("shutdown signal while stopping: ending every session now");
                    hurry.hurry();
                });
                return;
            }
            let Some((name, how)) = stop else { continue };
            if handle.is_stopping() || how == Stop::Immediate {
                tracing::info!("{name}: ending every session now");
                handle.hurry_stop();
            } else {
                tracing::info!("{name}: shutting down ({how:?})");
                handle.stop_with(how);
            }
            if how != Stop::Immediate {
                // A second SIGTERM or SIGINT hurries the stop.
                let hurry = handle.clone_stopper();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = self.term.recv() => {}
                        _ = self.int.recv() => {}
                        _ = self.quit.recv() => {}
                    }
                    tracing::info!("second shutdown signal: ending every session now");
                    hurry.hurry();
                });
            }
            return;
        }
    }
}
