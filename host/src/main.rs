//! The `wisp` command: serve, or check a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use wisp::config::Config;

/// A SIP proxy whose routing runs as sandboxed WebAssembly components.
///
/// Without --config, wisp listens on UDP and TCP port 5060 and routes with
/// its bundled default component.
#[derive(Parser)]
#[command(name = "wisp", version, about, long_about = None)]
struct Cli {
    /// The configuration file (TOML; see docs/configuration.md).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Check the configuration and load every component, without serving.
    /// Exits non-zero and says what is wrong when something is.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WISP_LOG")
                .or_else(|_| EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(err) => {
                eprintln!("wisp: {err}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };

    match cli.command.unwrap_or(Command::Serve) {
        Command::Check => match wisp::server::check(&config) {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
                println!("configuration ok");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("wisp: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("wisp: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(wisp::server::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("wisp: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
