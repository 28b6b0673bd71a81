//! The `tessera` binary: parse the command line, call into the library, report errors.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser as _;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use tessera::app;
use tessera::cli::admin;
use tessera::cli::args::{Cli, Command, LogFormat, ServeArgs};
use tessera::http::access_log::AccessLog;
use tessera::store::cause_chain;
use tessera::support::logging::{LineFormat, LogSink, WriterThread};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Serve(args) => match args.log_format {
            LogFormat::Text => LineFormat::Text,
            LogFormat::Json => LineFormat::Json,
        },
        _ => LineFormat::Text,
    };
    let (sink, writer) = match init_logging(format) {
        Ok(logging) => logging,
        Err(error) => {
            eprintln!("tessera: cannot start the log writer: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve(&args, AccessLog::new(sink, format)),
        Command::Keys { action, keys } => print(admin::keys(&action, &keys)),
        Command::User { action, db } => print(admin::user(&action, &db)),
        Command::Session {
            action,
            db,
            session_idle,
        } => print(admin::session(&action, &db, session_idle)),
        Command::Client { action, db } => print(admin::client(&action, &db)),
        Command::Db { action, db } => print(admin::db(&action, &db)),
    };
    // Every line logged so far reaches stderr before the last words below.
    drop(writer);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tessera: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs, access_log: AccessLog) -> Result<(), String> {
    let mut config = args.to_config();
    config.access_log = access_log;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime
        .block_on(app::serve_until_signalled(
            args.listen,
            args.metrics_listen,
            &config,
        ))
        .map_err(|e| cause_chain(&e))
}

/// The command's answer on stdout, or its error with every cause under it (a driver's "db error"
/// alone tells an operator nothing; the server's reason is below it).
fn print<E: std::error::Error + 'static>(result: Result<String, E>) -> Result<(), String> {
    let text = result.map_err(|e| cause_chain(&e))?;
    print!("{text}");
    Ok(())
}

/// Logs go to stderr through the background writer; `RUST_LOG` overrides the default `info`.
fn init_logging(format: LineFormat) -> std::io::Result<(LogSink, WriterThread)> {
    let (sink, writer) = LogSink::stderr()?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(sink.clone());
    match format {
        LineFormat::Text => builder.init(),
        LineFormat::Json => builder.json().init(),
    }
    Ok((sink, writer))
}
