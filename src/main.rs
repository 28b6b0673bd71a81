//! The `tessera` binary: parse the command line, call into the library, report errors.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser as _;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use tessera::app;
use tessera::cli::admin;
use tessera::cli::args::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => LogFormat::Text,
    };
    init_logging(log_format);
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Keys { action, keys } => print(admin::keys(&action, &keys)),
        Command::User { action, db } => print(admin::user(&action, &db)),
        Command::Db { action, db } => print(admin::db(&action, &db)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tessera: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &tessera::cli::args::ServeArgs) -> Result<(), String> {
    let config = args.to_config();
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime
        .block_on(app::serve_until_signalled(
            args.listen,
            args.metrics_listen,
            &config,
        ))
        .map_err(|e| e.to_string())
}

fn print<E: std::fmt::Display>(result: Result<String, E>) -> Result<(), String> {
    let text = result.map_err(|e| e.to_string())?;
    print!("{text}");
    Ok(())
}

/// Logs go to stderr; `RUST_LOG` overrides the default `info` level.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
