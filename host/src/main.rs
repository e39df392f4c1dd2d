//! The `claude-max-market` binary: parse, set up logging, run, and turn the
//! outcome into an exit code.
//!
//! Exit codes: 0 success, 1 error, 2 usage error (clap's own), 3 denied by
//! policy or missing consent.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use claude_max_market::cli::{self, Cli, Finish};
use claude_max_market::ops::OpsError;
use tracing_subscriber::EnvFilter;

const EXIT_ERROR: u8 = 1;
const EXIT_DENIED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.quiet);
    let json = cli.json;
    match cli::run(cli) {
        Ok(Finish::Done) => ExitCode::SUCCESS,
        Ok(Finish::Denied) => ExitCode::from(EXIT_DENIED),
        Ok(Finish::Failed) => ExitCode::from(EXIT_ERROR),
        Err(err) => report(&err, json),
    }
}

/// Logs go to stderr so stdout stays clean for --json; RUST_LOG overrides.
fn init_tracing(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}

fn report(err: &anyhow::Error, json: bool) -> ExitCode {
    // A closed pipe (`… | head`) is how the reader says it has enough: not
    // an error worth a message or a failing status.
    if err.chain().any(is_broken_pipe) {
        return ExitCode::SUCCESS;
    }
    let denied = err
        .downcast_ref::<OpsError>()
        .is_some_and(OpsError::is_denial);
    let code = if denied { EXIT_DENIED } else { EXIT_ERROR };
    // Many errors already quote their source in their own text; a cause
    // whose words are already in the message is not repeated.
    let mut message = String::new();
    for cause in err.chain().map(ToString::to_string) {
        if message.contains(&cause) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&cause);
    }
    if json {
        let doc = serde_json::json!({ "error": { "message": message, "exit_code": code } });
        let _ = writeln!(std::io::stdout(), "{doc}");
    }
    eprintln!("error: {message}");
    ExitCode::from(code)
}

fn is_broken_pipe(cause: &(dyn std::error::Error + 'static)) -> bool {
    let kind = cause
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind)
        .or_else(|| {
            cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
        });
    kind == Some(std::io::ErrorKind::BrokenPipe)
}
