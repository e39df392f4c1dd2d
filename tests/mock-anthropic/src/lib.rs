//! A local stand-in for the Anthropic Messages API, for tests that cannot
//! reach the internet.
//!
//! [`MockServer`] serves `POST /v1/messages` over loopback TCP or a Unix
//! socket from its own runtime thread, so both sync and async tests can use
//! it. Tests script what the next requests get with [`Scenario`]s, then
//! inspect what arrived ([`MockServer::requests`]) and what usage the mock
//! told the client it consumed ([`MockServer::reported`]) — the figure a
//! metering gateway must agree with.
//!
//! # Faithful to the real API
//!
//! - Routing: anything but `/v1/messages` is `404 not_found_error`; another
//!   method on that path is `405` (with `allow: POST`). Query strings are
//!   accepted (clients send `?beta=true`).
//! - Admission order and errors: `x-api-key` must equal the configured key
//!   (an empty configured key turns authentication off)
//!   (`401 authentication_error`), `anthropic-version` must be present and a
//!   known version (`400`), the body must fit in 32 MiB (`413
//!   request_too_large`), and the body is validated with field-naming `400
//!   invalid_request_error` messages (`model`, `max_tokens`, `messages` with
//!   roles and content blocks, first message from the user, `system`,
//!   `stream`, `temperature`, `stop_sequences`, `metadata`).
//! - Every response carries `request-id: req_…` and the
//!   `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`
//!   headers (counted over a fixed 60 s window, resets in RFC 3339). Error
//!   bodies are `{"type":"error","error":{"type","message"},"request_id"}`.
//! - Replies: the non-streaming `message` object with `usage` (cache
//!   counters present and zero), and the SSE sequence `message_start`,
//!   `content_block_start`, `ping`, `content_block_delta`…,
//!   `content_block_stop`, `message_delta` (cumulative `output_tokens`),
//!   `message_stop`, each event a separate chunk of a chunked
//!   `text/event-stream` response; errors after the stream started arrive as
//!   an `error` event.
//! - HTTP/1.1 with keep-alive and `Connection: close`.
//!
//! # Left out
//!
//! Tool use (tools are accepted and ignored; replies are always one text
//! block), images and documents (accepted, never read), extended thinking,
//! prompt caching, stop sequences (accepted, never matched), sampling
//! parameters, model-name checks, OAuth bearer authentication, HTTP/2, and
//! every other endpoint (token counting, batches, models, files). Rate limits
//! are reported but never enforced; script [`Scenario::RateLimited`] to get
//! a 429. Token counts come from the documented formulas in the default
//! reply (see [`Scenario`]), not from a tokenizer.

mod reply;
mod server;
mod validate;
mod wire;

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;

use server::{Listener, Running, Shared};

/// What the next admitted request gets. Scenarios are consumed in FIFO
/// order, one per request that passes routing, authentication, the version
/// check and body validation; rejected requests leave the queue alone. With
/// the queue empty, requests get the default reply:
///
/// - text `"Mock reply to: "` + the first 40 characters of the last user
///   message's text;
/// - `input_tokens = ceil(prompt_chars / 4) + 8`, `prompt_chars` being the
///   character count of the system prompt plus all message text (string
///   contents and `text` blocks);
/// - `output_tokens = words(reply) + 1`; if that exceeds `max_tokens`, the
///   reply is cut to its first `max_tokens - 1` words, `output_tokens =
///   max_tokens`, and `stop_reason` is `"max_tokens"` instead of
///   `"end_turn"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// Reply with exactly this text and usage (`stop_reason: "end_turn"`),
    /// streamed or not as the request asks. `max_tokens` is not applied.
    Reply {
        text: String,
        input_tokens: u64,
        output_tokens: u64,
    },
    /// Answer with this status and error body. `retry_after` adds a
    /// `retry-after: SECONDS` header.
    Error {
        status: u16,
        kind: String,
        message: String,
        retry_after: Option<u64>,
    },
    /// `429 rate_limit_error` with `retry-after`.
    RateLimited { retry_after: u64 },
    /// `529 overloaded_error`.
    Overloaded,
    /// For a streaming request: a 200 stream that sends `after_deltas` text
    /// deltas (the default reply's words, repeated if it has fewer) and then
    /// an `overloaded_error` `error` event, and ends. A non-streaming request
    /// gets `500 api_error` instead.
    MidStreamError { after_deltas: usize },
    /// Read the request and never answer. Dropping the server still returns
    /// promptly and closes the connection.
    Hang,
}

/// Totals of the usage the mock reported in successful replies: every
/// non-streaming 200, and every stream that got as far as `message_stop`.
/// Streams that ended in an error event are not included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub replies: u64,
}

/// One request as the mock received it, with the status it was answered
/// with (`0` for [`Scenario::Hang`], which is never answered).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The query string, if the request target had one.
    pub query: Option<String>,
    /// Header names are lowercase; values are lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body, truncated to the size limit for `413` answers.
    pub body: Vec<u8>,
    pub status: u16,
    /// When the request head arrived.
    pub at: Instant,
}

impl Recorded {
    /// The first value of header `name`, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A running mock. Dropping it stops the server, closes every connection
/// (including ones held by [`Scenario::Hang`]) and removes its Unix socket.
pub struct MockServer {
    shared: Arc<Shared>,
    url: String,
    unix_path: Option<PathBuf>,
    running: Running,
}

impl MockServer {
    /// Starts on `127.0.0.1` with a free port.
    ///
    /// # Panics
    /// If the listener or runtime cannot be set up; use [`MockServer::listen`]
    /// to handle that instead.
    #[must_use = "dropping the MockServer stops it"]
    pub fn start(api_key: &str) -> MockServer {
        Self::listen(api_key, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .unwrap_or_else(|e| panic!("mock-anthropic: cannot start on loopback: {e}"))
    }

    /// Starts on a Unix socket at `path`, world-writable (mode 0666) so that
    /// processes under other users, such as a container's, can connect.
    ///
    /// # Panics
    /// If the socket or runtime cannot be set up; use
    /// [`MockServer::listen_unix`] to handle that instead.
    #[must_use = "dropping the MockServer stops it"]
    pub fn start_unix(api_key: &str, path: &Path) -> MockServer {
        Self::listen_unix(api_key, path)
            .unwrap_or_else(|e| panic!("mock-anthropic: cannot listen on {}: {e}", path.display()))
    }

    /// Starts on `addr`, which must be a loopback address: the mock accepts
    /// one fixed key and must never be reachable from another machine.
    ///
    /// # Errors
    /// `InvalidInput` for a non-loopback address; otherwise whatever binding
    /// the socket or building the runtime returns.
    pub fn listen(api_key: &str, addr: SocketAddr) -> io::Result<MockServer> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to listen on non-loopback address {addr}"),
            ));
        }
        let listener = TcpListener::bind(addr)?;
        let url = format!("http://{}", listener.local_addr()?);
        Self::run(api_key, Listener::Tcp(listener), url, None)
    }

    /// Starts on a Unix socket at `path`. A stale socket left at `path` is
    /// replaced; any other kind of file there is an error.
    ///
    /// # Errors
    /// `AlreadyExists` if a non-socket file is at `path`; otherwise whatever
    /// binding the socket, setting its mode or building the runtime returns.
    pub fn listen_unix(api_key: &str, path: &Path) -> io::Result<MockServer> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        let prepared =
            fs::set_permissions(path, fs::Permissions::from_mode(0o666)).and_then(|()| {
                Self::run(
                    api_key,
                    Listener::Unix(listener),
                    path.display().to_string(),
                    Some(path.to_owned()),
                )
            });
        if prepared.is_err() {
            // Nothing owns the socket file yet, so nothing else would remove it.
            let _ = fs::remove_file(path);
        }
        prepared
    }

    fn run(
        api_key: &str,
        listener: Listener,
        url: String,
        unix_path: Option<PathBuf>,
    ) -> io::Result<MockServer> {
        let shared = Arc::new(Shared::new(api_key));
        let running = server::spawn(listener, Arc::clone(&shared))?;
        Ok(MockServer {
            shared,
            url,
            unix_path,
            running,
        })
    }

    /// `http://127.0.0.1:PORT`, or the socket path for a Unix-socket mock.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Queues `s` for the next admitted request.
    ///
    /// # Panics
    /// If `s` is a [`Scenario::Error`] whose status is not a valid HTTP
    /// status code, so the mistake surfaces in the test that made it.
    pub fn push(&self, s: Scenario) {
        if let Scenario::Error { status, .. } = &s {
            assert!(
                StatusCode::from_u16(*status).is_ok(),
                "mock-anthropic: {status} is not an HTTP status code"
            );
        }
        self.shared.state().queue.push_back(s);
    }

    /// Pause between successive SSE text deltas (default none), so tests can
    /// observe that a stream is passed on as it arrives, not buffered.
    pub fn set_delta_delay(&self, d: Duration) {
        self.shared.state().delta_delay = d;
    }

    /// Largest body accepted before answering `413 request_too_large`
    /// (default 32 MiB, the real limit), so tests need not send 32 MiB.
    pub fn set_max_request_bytes(&self, n: usize) {
        self.shared.state().max_request_bytes = n;
    }

    /// Every request received so far, in the order they were decided on,
    /// rejected ones included.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state().requests.clone()
    }

    /// Usage totals the mock reported in successful replies so far.
    pub fn reported(&self) -> Reported {
        self.shared.state().reported
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.running.stop();
        if let Some(path) = &self.unix_path {
            // Best effort: the file may already be gone if a test removed it.
            let _ = fs::remove_file(path);
        }
    }
}
