//! `mock-anthropic`: the mock Messages API as a process, for tests and
//! benchmarks that drive the host from outside.
//!
//! Prints the URL (or socket path) as its first stdout line once it is
//! accepting connections, then serves until SIGTERM, SIGINT or end of stdin.
//! Stopping on stdin EOF means a parent that dies without cleaning up (and so
//! closes the pipe) never leaves a mock running.
//!
//! Without `--script` every request gets the default reply. `--script FILE`
//! plays a JSON script instead: its `scenarios` answer the Messages
//! requests in order, then its `default` (or the default reply) answers the
//! rest. The format is documented on `mock_anthropic::Script`; for example,
//! an agent that runs one command and then finishes:
//!
//! ```json
//! {"scenarios": [
//!   {"type": "tool_use", "calls": [{"name": "Bash", "input": {"command": "echo hi > f.txt"}}],
//!    "input_tokens": 1200, "output_tokens": 40},
//!   {"type": "reply", "text": "Done.", "input_tokens": 1300, "output_tokens": 3}
//! ]}
//! ```
//!
//! A script that cannot be read or parsed stops the mock before it
//! announces anything, with exit code 2.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mock_anthropic::{MockServer, Script};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: mock-anthropic (--key KEY | --no-auth) (--listen 127.0.0.1:PORT | --unix PATH) \
     [--delta-delay-ms N] [--script FILE]";

enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

struct Args {
    key: String,
    endpoint: Endpoint,
    delta_delay: Duration,
    script: Option<Script>,
}

/// Parses `--flag value` and `--flag=value` forms.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut key = None;
    let mut listen = None;
    let mut unix = None;
    let mut delay_ms = 0;
    let mut script = None;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--key" => {
                let v = value()?;
                if v.is_empty() {
                    return Err("--key needs a key; --no-auth turns authentication off".into());
                }
                key = Some(v);
            }
            // Stands in for the gateway's key in the job benchmark's baseline.
            "--no-auth" if inline.is_none() => key = Some(String::new()),
            "--listen" => {
                let v = value()?;
                let addr = v
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("--listen {v}: expected IP:PORT ({e})"))?;
                listen = Some(addr);
            }
            "--unix" => unix = Some(PathBuf::from(value()?)),
            "--delta-delay-ms" => {
                let v = value()?;
                delay_ms = v
                    .parse()
                    .map_err(|e| format!("--delta-delay-ms {v}: {e}"))?;
            }
            "--script" => {
                let path = PathBuf::from(value()?);
                // Loaded while parsing, so a bad script is a usage error that
                // stops the mock before it announces an address.
                let loaded = Script::load(&path).map_err(|e| format!("--script: {e}"))?;
                script = Some(loaded);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let endpoint = match (listen, unix) {
        (Some(addr), None) => Endpoint::Tcp(addr),
        (None, Some(path)) => Endpoint::Unix(path),
        _ => return Err("give exactly one of --listen and --unix".to_owned()),
    };
    Ok(Args {
        key: key.ok_or("--key KEY or --no-auth is required")?,
        endpoint,
        delta_delay: Duration::from_millis(delay_ms),
        script,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(args.into_iter()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("mock-anthropic: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = match &args.endpoint {
        Endpoint::Tcp(addr) => MockServer::listen(&args.key, *addr),
        Endpoint::Unix(path) => MockServer::listen_unix(&args.key, path),
    };
    let server = match started {
        Ok(server) => server,
        Err(e) => {
            eprintln!("mock-anthropic: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.set_delta_delay(args.delta_delay);
    if let Some(script) = args.script {
        server.play(script);
    }

    let result = serve_until_stopped(&server.url());
    // Dropping the server stops it and removes its socket file.
    drop(server);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-anthropic: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Announces `url` on stdout, then blocks until SIGTERM, SIGINT or end of
/// stdin.
fn serve_until_stopped(url: &str) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (eof_tx, eof) = tokio::sync::oneshot::channel::<()>();
    // A plain thread rather than a runtime task: a blocking stdin read cannot
    // be cancelled, and the runtime would wait for it on shutdown. The thread
    // is simply abandoned when the process exits.
    std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
        let _ = eof_tx.send(());
    });
    runtime.block_on(async {
        // Handlers go in before the URL is printed, so a parent that reads
        // the URL and signals at once still gets a clean shutdown.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{url}")?;
        stdout.flush()?;
        drop(stdout);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = eof => {}
        }
        Ok(())
    })
}
