//! `cmm-worker`: the program inside a claude-max-market job container.
//!
//! It reads one job spec (JSON) from stdin, sends it as a Messages API
//! request to the host's gateway over the Unix socket at
//! `/run/cmm/gateway.sock`, and writes the answer text to stdout as it
//! streams in. The container has no network and no API key: the gateway is
//! its only way out, and the gateway decides what the job may spend.
//!
//! Usage: `worker [--socket PATH] < job.json`. `--socket` exists for tests;
//! no environment variables are read.
//!
//! Job spec (unknown fields are rejected):
//! `{"model": "...", "max_tokens": N, "prompt": "...", "system": "...", "stream": true}`
//! with `system` optional and `stream` defaulting to true.
//!
//! On success the answer (ending in a newline) is on stdout and one line
//! `worker: stop_reason=... input_tokens=... output_tokens=...` is on stderr.
//! On failure exactly one line starting `worker: ` is on stderr, and the
//! exit code says what went wrong:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | answer complete |
//! | 1 | the answer could not be written to stdout |
//! | 2 | bad invocation, or bad job spec on stdin |
//! | 3 | the gateway refused the request (HTTP 4xx); its error type and message are printed |
//! | 4 | upstream/server error: HTTP 5xx, or an `error` event mid-stream (text already streamed stays printed) |
//! | 5 | cannot reach the gateway (socket missing or refusing connections, or it dropped the request) |
//! | 6 | malformed response: bad HTTP, JSON or SSE, or the stream ended without `message_stop` |

mod answer;
mod error;
mod http;
mod spec;
mod sse;

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use answer::{Printer, Summary};
use error::{Error, one_line};
use spec::JobSpec;

/// Where the host bind-mounts the gateway socket in every job container.
const GATEWAY_SOCKET: &str = "/run/cmm/gateway.sock";

/// How long `drain` waits for the rest of a response the worker no longer needs.
const DRAIN_TIME: Duration = Duration::from_secs(1);

const USAGE: &str = "usage: worker [--socket PATH] < job.json";

fn main() -> ExitCode {
    let mut printer = Printer::new(io::stdout().lock());
    let result = run(&mut printer);
    let finished = printer.finish();
    let result = result.and_then(|summary| finished.map(|()| summary));
    match result {
        Ok(summary) => {
            eprintln!("worker: {}", one_line(&summary.to_string()));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("worker: {}", one_line(&err.to_string()));
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(printer: &mut Printer<impl io::Write>) -> Result<Summary, Error> {
    let socket = socket_path(std::env::args_os().skip(1))?;

    let mut input = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut input)
        .map_err(|e| Error::Spec(format!("cannot read stdin: {e}")))?;
    let spec = JobSpec::parse(&input).map_err(Error::Spec)?;

    let connect_error = |source| Error::Connect {
        path: socket.clone(),
        source,
    };
    let stream = UnixStream::connect(&socket).map_err(connect_error)?;
    http::write_post(
        &stream,
        "/v1/messages",
        &[
            ("Host", "gateway"),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ],
        &spec.request_body(),
    )
    .map_err(connect_error)?;

    let mut response = http::read_response(stream).map_err(|e| Error::Malformed(e.to_string()))?;
    let result = answer::handle(&mut response, spec.stream, printer);
    drain(&mut response.body);
    result
}

/// Reads whatever is left of the response (after `message_stop` that is the
/// last chunk), so the gateway sees its response delivered rather than the
/// connection closed under it. Bounded in time: the answer is already
/// complete, and a stalled gateway must not hold up the exit.
fn drain(body: &mut http::Body<UnixStream>) {
    let deadline = Instant::now() + DRAIN_TIME;
    let mut buf = [0; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || body.get_ref().set_read_timeout(Some(left)).is_err() {
            return;
        }
        match body.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn socket_path(args: impl Iterator<Item = OsString>) -> Result<PathBuf, Error> {
    let args: Vec<OsString> = args.collect();
    match args.as_slice() {
        [] => Ok(PathBuf::from(GATEWAY_SOCKET)),
        [flag, path] if flag == "--socket" && !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(Error::Usage(USAGE.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<PathBuf, Error> {
        socket_path(args.iter().map(OsString::from))
    }

    #[test]
    fn default_socket_is_the_fixed_mount_point() {
        assert_eq!(parse(&[]).unwrap(), PathBuf::from("/run/cmm/gateway.sock"));
    }

    #[test]
    fn socket_can_be_overridden() {
        assert_eq!(
            parse(&["--socket", "/tmp/s.sock"]).unwrap(),
            PathBuf::from("/tmp/s.sock")
        );
    }

    #[test]
    fn anything_else_is_a_usage_error() {
        for args in [
            &["--help"][..],
            &["--socket"],
            &["--socket", ""],
            &["--socket", "/a", "extra"],
            &["/a"],
            &["--socket=/a"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().starts_with("usage:"), "{args:?}");
        }
    }
}
