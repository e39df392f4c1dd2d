//! Admission of a request: route, method, authentication, API version and
//! body, checked in that order, each failure with the status, error type and
//! field-naming message the real API uses.
//!
//! The checks are as strict as the real API on what a client or a gateway
//! must get right (`model`, `max_tokens`, `messages` and the pairing of tool
//! calls with their results, the types of the optional fields the API
//! documents, headers) and lenient on the rest: unknown top-level fields are
//! accepted and ignored, because the gateway forwards whatever its client
//! sends and the mock must never reject a request the real API would take.
//!
//! Layout: this file routes and authenticates; `body` reads the top-level
//! fields, `messages` the conversation, `options` the optional fields.

mod body;
mod messages;
mod options;

use hyper::Method;
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::http::request::Parts;

use crate::wire::{AUTHENTICATION, INVALID_REQUEST, NOT_FOUND, REQUEST_TOO_LARGE};

const MESSAGES_PATH: &str = "/v1/messages";
const COUNT_TOKENS_PATH: &str = "/v1/messages/count_tokens";
const BEARER: &[u8] = b"Bearer ";

/// `anthropic-version` values the API accepts: the long-standing ones (which
/// Claude Code sends) and the one the Python SDK 2.17 sends.
const VERSIONS: [&str; 3] = ["2023-06-01", "2023-01-01", "2026-10-21"];

/// Why a request was turned away before any scenario was considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

fn reject(status: u16, kind: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        kind,
        message: message.into(),
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> Rejection {
    reject(400, INVALID_REQUEST, message)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    User,
    Assistant,
    /// A system message inside `messages`, which Claude Code sends on later
    /// turns.
    System,
}

/// What the input-token formula reads: the system prompt and each message's
/// text (its string content, its `text` blocks and the text inside its
/// `tool_result` blocks, concatenated; other block kinds carry no text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prompt {
    pub system: String,
    pub messages: Vec<(Role, String)>,
}

/// The parts of a valid Messages request the mock's reply depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessagesRequest {
    pub model: String,
    pub max_tokens: u64,
    pub stream: bool,
    pub prompt: Prompt,
}

/// An admitted request, by endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admitted {
    Messages(MessagesRequest),
    CountTokens(Prompt),
}

/// Decides whether a request is answered. `too_large` says the body went
/// over the size limit (the body passed in is then truncated).
pub(crate) fn admit(
    parts: &Parts,
    api_key: &str,
    body: &[u8],
    too_large: bool,
) -> Result<Admitted, Rejection> {
    let counting = match parts.uri.path() {
        MESSAGES_PATH => false,
        COUNT_TOKENS_PATH => true,
        _ => return Err(reject(404, NOT_FOUND, "Not Found")),
    };
    if parts.method != Method::POST {
        return Err(reject(405, INVALID_REQUEST, "Method Not Allowed"));
    }
    authenticate(parts, api_key)?;
    check_version(parts)?;
    if too_large {
        return Err(reject(
            413,
            REQUEST_TOO_LARGE,
            "Request exceeds the maximum allowed number of bytes.",
        ));
    }
    if counting {
        body::parse_count(body).map(Admitted::CountTokens)
    } else {
        body::parse_messages(body, &betas(parts)).map(Admitted::Messages)
    }
}

/// The key comes in `x-api-key` (Claude Code, older SDKs) or as
/// `Authorization: Bearer KEY` (the Python SDK 2.17); `x-api-key` wins when
/// both are sent.
fn authenticate(parts: &Parts, api_key: &str) -> Result<(), Rejection> {
    // An empty configured key turns authentication off: the job benchmark's
    // baseline has the worker talk to the mock with no gateway to add one.
    if api_key.is_empty() {
        return Ok(());
    }
    let bearer = parts
        .headers
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|v| {
            let (scheme, token) = v.split_at_checked(BEARER.len())?;
            scheme.eq_ignore_ascii_case(BEARER).then_some(token)
        });
    let presented = parts
        .headers
        .get("x-api-key")
        .map(HeaderValue::as_bytes)
        .or(bearer);
    match presented {
        None => Err(reject(401, AUTHENTICATION, "x-api-key header is required")),
        Some(key) if key != api_key.as_bytes() => {
            Err(reject(401, AUTHENTICATION, "invalid x-api-key"))
        }
        Some(_) => Ok(()),
    }
}

fn check_version(parts: &Parts) -> Result<(), Rejection> {
    match parts.headers.get("anthropic-version") {
        None => Err(invalid("anthropic-version: header is required")),
        Some(v)
            if VERSIONS
                .iter()
                .any(|known| v.as_bytes() == known.as_bytes()) =>
        {
            Ok(())
        }
        Some(v) => Err(invalid(format!(
            "anthropic-version: unsupported version {:?}",
            String::from_utf8_lossy(v.as_bytes())
        ))),
    }
}

/// Every `anthropic-beta` value, from all such headers, comma lists split.
fn betas(parts: &Parts) -> Vec<String> {
    parts
        .headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .collect()
}
