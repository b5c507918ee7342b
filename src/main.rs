//! The `pgheal` binary: parse the command line, load the configuration, run until a signal.

use std::process::ExitCode;

use clap::Parser;
use pgheal::config::{self, cli::Cli, cli::Command, LogFormat};

fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    // `Targets` (levels per target, e.g. `pgheal=debug,info`) rather than `EnvFilter`: the
    // session task runs inside its client span and enters it on every poll, and `EnvFilter`
    // takes a lock on each enter and exit to look for span-field directives. Those directives
    // (`[span{field=x}]=level`) are still accepted, through `EnvFilter`, for debugging.
    let spec = std::env::var("PGHEAL_LOG").unwrap_or_default();
    let spec = if spec.trim().is_empty() {
        "info"
    } else {
        spec.trim()
    };
    let filter = match spec.parse::<tracing_subscriber::filter::Targets>() {
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
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Human => fmt.boxed(),
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The main runtime is event loop 0 (see `pgheal::event_loops`); the proxy starts the others.
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgheal: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Demo) => runtime.block_on(async {
            match pgheal::demo::run().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pgheal demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }),
        Some(Command::InstallSchemaWatch { upstream, print }) => {
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
        None => {
            let cfg = match config::load(&cli.run) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pgheal: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logs(cfg.log_format);
            runtime.block_on(run(cfg))
        }
    }
}

async fn run(cfg: config::Config) -> ExitCode {
    let handle = match pgheal::proxy::start(cfg).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal().await;
    tracing::info!("signal received");
    handle.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
