//! A local stand-in for the Anthropic Messages API, for tests that cannot
//! reach the internet. It is the one thing the project's tests mock, so it
//! must accept everything the real clients (the official SDKs, Claude Code)
//! send and answer in the real API's shapes, multi-turn tool use included.
//!
//! [`MockServer`] serves `POST /v1/messages` and `POST
//! /v1/messages/count_tokens` over loopback TCP or a Unix socket from its own
//! runtime thread, so both sync and async tests can use it. Tests script what
//! the next requests get with [`Scenario`]s (or a whole [`Script`]), then
//! inspect what arrived ([`MockServer::requests`]) and what usage the mock
//! told the client it consumed ([`MockServer::reported`]) — the figure a
//! metering gateway must agree with.
//!
//! # Layout
//!
//! - `lib.rs`: the handle ([`MockServer`]) and what it reports
//!   ([`Recorded`], [`Reported`]).
//! - `scenario.rs`: [`Scenario`] and [`ToolCall`], what a test scripts.
//! - `script.rs`: [`Script`], scenarios from a JSON file, and its format.
//! - `server.rs`: the runtime thread, connections, and deciding each request
//!   under one lock; `stream.rs` writes SSE answers out.
//! - `validate/`: admission (route, key, version, size) and the body checks.
//! - `plan.rs`: a scenario turned into an answer; `reply.rs`: the default
//!   reply and its token formulas; `wire.rs`: the JSON and SSE shapes;
//!   `ratelimit.rs`: the rate-limit headers.
//!
//! # Faithful to the real API
//!
//! - Routing: anything but `/v1/messages` and `/v1/messages/count_tokens` is
//!   `404 not_found_error`; another method on those paths is `405` (with
//!   `allow: POST`). Query strings are accepted (clients send `?beta=true`).
//! - Admission order and errors: the key, in `x-api-key` or (as the Python
//!   SDK 2.17 sends it) `Authorization: Bearer KEY`, must equal the
//!   configured key (an empty configured key turns authentication off)
//!   (`401 authentication_error`), `anthropic-version` must be present and a
//!   known version (`2023-06-01`, `2023-01-01`, `2026-10-21`) (`400`), the
//!   body must fit in 32 MiB (`413 request_too_large`), and the body is
//!   validated with field-naming `400 invalid_request_error` messages.
//! - Body checks: `model`; `max_tokens` (Messages only); `messages` with
//!   roles `user`, `assistant` and `system` (the last is what Claude Code
//!   sends mid-conversation), the first from the user, string or block
//!   contents, `text`, `tool_use` (`id`, `name`, object `input`) and
//!   `tool_result` (`tool_use_id`, string or block-list `content`,
//!   boolean `is_error`) blocks; every assistant `tool_use` answered by a
//!   `tool_result` at the start of the next user message and every
//!   `tool_result` answering a `tool_use` of the message before, with the
//!   real API's messages (`messages.N: \`tool_use\` ids were found without
//!   \`tool_result\` blocks immediately after: …`); `system` (string or text
//!   blocks); `stream`; `temperature`, `top_p` (0 to 1), `top_k` (≥ 0);
//!   `stop_sequences`; `metadata` (`user_id` a string); `service_tier`
//!   (`auto`, `standard_only`); `thinking` (`enabled` with `budget_tokens`
//!   ≥ 1024 and below `max_tokens` unless the `interleaved-thinking-2025-05-14`
//!   beta is on, `disabled`, `adaptive`; other keys such as `display` pass);
//!   `tool_choice` (`auto`, `any`, `tool` with a `name`, `none`); `tools`
//!   (custom tools with a pattern-checked unique `name` and an
//!   `input_schema` object, `defer_loading` and other keys passing; server
//!   tools such as `web_search_20250305`, `web_fetch_20250910` or
//!   `code_execution_20250825` by `type` and `name`, accepted and never
//!   run); `context_management` (`edits`, each with a `type`); `container`
//!   (string or object); `mcp_servers` (`type`, `url`, `name`). With
//!   thinking enabled or adaptive, a `temperature` other than 1 is refused;
//!   with thinking enabled, so is a `tool_choice` that forces a call
//!   (`any`, `tool`). Unknown top-level fields are accepted and ignored.
//! - Every response carries `request-id: req_…` and the
//!   `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`
//!   headers (counted over a fixed 60 s window, resets in RFC 3339; token
//!   counts are not counted against them). Error bodies are
//!   `{"type":"error","error":{"type","message"},"request_id"}`.
//! - Replies: the non-streaming `message` object with `content` blocks
//!   (`text`, `tool_use`), `stop_reason` (`end_turn`, `max_tokens`,
//!   `tool_use`) and `usage` (cache counters present and zero), and the SSE
//!   sequence `message_start`, then per block `content_block_start` (a
//!   `ping` after the first), `content_block_delta`s (`text_delta`, or
//!   `input_json_delta` whose `partial_json` pieces, the first empty, join
//!   into the tool input) and `content_block_stop`, then `message_delta`
//!   (cumulative `output_tokens`) and `message_stop`, each event a separate
//!   chunk of a chunked `text/event-stream` response; errors after the
//!   stream started arrive as an `error` event.
//! - `count_tokens` answers `{"input_tokens": N}`: N is what the next
//!   Messages request's scenario will report as its input, if it names that
//!   ([`Scenario::Reply`], [`Scenario::ToolUse`]), else the default reply's
//!   formula for the same body. It consumes no scenario and adds nothing to
//!   [`MockServer::reported`]; it is recorded like any request.
//! - HTTP/1.1 with keep-alive and `Connection: close`.
//!
//! # Left out
//!
//! Generated content: replies are the default text or what a scenario
//! scripts; thinking blocks, server tool results, citations and stop
//! sequences are never produced (the fields asking for them are validated
//! and ignored). Images and documents are accepted and never read. Not
//! checked: model names, a forced `tool_choice` with adaptive thinking,
//! `top_k`/`top_p` with thinking, empty contents, tool
//! names against `tools`, duplicate `tool_use` ids, where `system` messages
//! sit and what they hold (Claude Code also sends them with
//! `tool_addition`/`tool_removal` blocks, `clear_at` or `output_config`,
//! all accepted unread), and the unknown top-level fields the real API
//! refuses (the mock ignores them, and ignores `max_tokens`/`stream` in a
//! token count). Not served: prompt caching, OAuth (a bearer token is only
//! compared with the configured key), HTTP/2, and every other endpoint
//! (batches, models, files, and the `HEAD /api/hello` probe Claude Code
//! sends unless `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC` is set, whose
//! 404 it ignores). `message_delta` carries only `output_tokens` in its
//! `usage`. Rate limits are reported but never enforced; script
//! [`Scenario::RateLimited`] to get a 429. Token counts come from the
//! documented formulas in the default reply (see [`Scenario`]), not from a
//! tokenizer.

mod plan;
mod ratelimit;
mod reply;
mod scenario;
mod script;
mod server;
mod stream;
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

pub use scenario::{Scenario, ToolCall};
pub use script::{Script, ScriptError};
use server::{Listener, Running, Shared};

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

    /// Queues `s` for the next admitted Messages request.
    ///
    /// # Panics
    /// If the mock cannot play `s` (a [`Scenario::Error`] whose status is
    /// not a valid HTTP status code, a [`Scenario::ToolUse`] without calls or
    /// with a nameless call or a non-object input), so the mistake surfaces
    /// in the test that made it.
    pub fn push(&self, s: Scenario) {
        checked(&s);
        self.shared.state().queue.push_back(s);
    }

    /// What every admitted Messages request gets while the queue is empty,
    /// instead of the default reply. A [`Scenario::ToolUse`] whose calls
    /// leave `id` empty calls with a fresh id each time, so a test can
    /// script an agent that never stops.
    ///
    /// # Panics
    /// As [`MockServer::push`].
    pub fn set_default(&self, s: Scenario) {
        checked(&s);
        self.shared.state().default = Some(s);
    }

    /// Queues a script's scenarios and sets its default, if it has one.
    ///
    /// # Panics
    /// As [`MockServer::push`]; a script from [`Script::load`] or
    /// [`Script::from_json`] has been checked already and never panics here.
    pub fn play(&self, script: Script) {
        for s in script.scenarios {
            self.push(s);
        }
        if let Some(s) = script.default {
            self.set_default(s);
        }
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

fn checked(s: &Scenario) {
    if let Some(problem) = s.problem() {
        panic!("mock-anthropic: {problem}");
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
