//! The bytes the mock puts on the wire: JSON bodies, SSE events, ids and
//! timestamps, shaped like the real Messages API's.
//!
//! Everything here is a pure function so the shapes can be read in one place
//! and compared against the API reference without following control flow.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

pub(crate) const INVALID_REQUEST: &str = "invalid_request_error";
pub(crate) const AUTHENTICATION: &str = "authentication_error";
pub(crate) const NOT_FOUND: &str = "not_found_error";
pub(crate) const REQUEST_TOO_LARGE: &str = "request_too_large";
pub(crate) const RATE_LIMIT: &str = "rate_limit_error";
pub(crate) const API_ERROR: &str = "api_error";
pub(crate) const OVERLOADED: &str = "overloaded_error";

/// Why generation ended, as the API spells it in `stop_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StopReason {
    EndTurn,
    MaxTokens,
}

// The shapes below are structs rather than `serde_json::json!` values so that
// fields come out in the API's order (`type` first), which a `Value` map
// would sort alphabetically. Clients should not care, but a mock that
// differs from the real wire in any visible way can hide a client's bug.

/// The `usage` object. Prompt caching is not modelled, so both cache counters
/// are always present and zero, as the API reports them for uncached requests.
#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

impl Usage {
    fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Usage {
            input_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            output_tokens,
        }
    }
}

/// A text content block (`type: "text"`) or a text delta (`"text_delta"`).
#[derive(Serialize)]
struct Text<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Text<'a>>,
    stop_reason: Option<StopReason>,
    stop_sequence: Option<&'static str>,
    usage: Usage,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct ErrorResponse<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorDetail<'a>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct MessageDeltaBody {
    stop_reason: StopReason,
    stop_sequence: Option<&'static str>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u64,
}

/// The SSE events; serde writes the `type` tag first, as the API does.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: Message<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: Text<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: u32,
        delta: Text<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        usage: OutputUsage,
    },
    MessageStop,
    Error {
        error: ErrorDetail<'a>,
    },
}

impl Event<'_> {
    /// The `event:` line, which repeats the `type` field so clients may
    /// dispatch on either.
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::Ping => "ping",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
            Event::Error { .. } => "error",
        }
    }
}

fn to_json(value: &impl Serialize) -> String {
    // Only strings, integers, options and sequences are serialized here, none
    // of which can fail.
    serde_json::to_string(value).expect("wire shapes always serialize")
}

/// A complete non-streaming `message` object.
pub(crate) fn message(
    id: &str,
    model: &str,
    text: &str,
    stop_reason: StopReason,
    input_tokens: u64,
    output_tokens: u64,
) -> String {
    to_json(&Message {
        id,
        kind: "message",
        role: "assistant",
        model,
        content: vec![Text { kind: "text", text }],
        stop_reason: Some(stop_reason),
        stop_sequence: None,
        usage: Usage::new(input_tokens, output_tokens),
    })
}

/// The body of every non-2xx response. The API puts the request id in the
/// body as well as in the `request-id` header.
pub(crate) fn error_body(kind: &str, message: &str, request_id: &str) -> String {
    to_json(&ErrorResponse {
        kind: "error",
        error: ErrorDetail { kind, message },
        request_id,
    })
}

fn sse(event: &Event<'_>) -> Bytes {
    Bytes::from(format!(
        "event: {}\ndata: {}\n\n",
        event.name(),
        to_json(event)
    ))
}

/// `message_start`: the message with no content yet. The API reports an
/// output token already spent at this point, and so does the mock.
pub(crate) fn message_start(id: &str, model: &str, input_tokens: u64) -> Bytes {
    sse(&Event::MessageStart {
        message: Message {
            id,
            kind: "message",
            role: "assistant",
            model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: Usage::new(input_tokens, 1),
        },
    })
}

pub(crate) fn content_block_start() -> Bytes {
    sse(&Event::ContentBlockStart {
        index: 0,
        content_block: Text {
            kind: "text",
            text: "",
        },
    })
}

pub(crate) fn ping() -> Bytes {
    sse(&Event::Ping)
}

pub(crate) fn text_delta(text: &str) -> Bytes {
    sse(&Event::ContentBlockDelta {
        index: 0,
        delta: Text {
            kind: "text_delta",
            text,
        },
    })
}

pub(crate) fn content_block_stop() -> Bytes {
    sse(&Event::ContentBlockStop { index: 0 })
}

/// `message_delta`: `usage.output_tokens` is the cumulative total for the
/// whole message, not an increment.
pub(crate) fn message_delta(stop_reason: StopReason, output_tokens: u64) -> Bytes {
    sse(&Event::MessageDelta {
        delta: MessageDeltaBody {
            stop_reason,
            stop_sequence: None,
        },
        usage: OutputUsage { output_tokens },
    })
}

pub(crate) fn message_stop() -> Bytes {
    sse(&Event::MessageStop)
}

/// An error after the 200 head has gone out: the status can no longer
/// change, so the API reports it as an `error` event and ends the stream.
pub(crate) fn stream_error(kind: &str, message: &str) -> Bytes {
    sse(&Event::Error {
        error: ErrorDetail { kind, message },
    })
}

/// An id like the API's (`msg_01…`, `req_01…`): the prefix, `01`, then 22
/// base58 characters. Unique within the process; random across processes so
/// that ids from two mocks in one test run never collide.
pub(crate) fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `RandomState` is std's per-process random seed; hashing a counter with
    // it is enough entropy for ids without a `rand` dependency.
    let seed = RandomState::new();
    let mut id = format!("{prefix}01");
    for half in [seed.hash_one(n), seed.hash_one(!n)] {
        let mut rest = half;
        // 58^11 > 2^64, so eleven digits use up all of a 64-bit half.
        for _ in 0..11 {
            id.push(char::from(ALPHABET[(rest % 58) as usize]));
            rest /= 58;
        }
    }
    id
}

/// `time` as an RFC 3339 UTC timestamp with second precision, the format of
/// the `anthropic-ratelimit-*-reset` headers.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, secs_of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01, computed in
/// 400-year eras (each era is exactly 146,097 days) so no calendar table or
/// date crate is needed. Only non-negative day counts occur here.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that the leap day ends each year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn ids_have_the_api_shape_and_differ() {
        let a = new_id("msg_");
        let b = new_id("msg_");
        assert!(a.starts_with("msg_01"));
        assert_eq!(a.len(), "msg_01".len() + 22);
        assert_ne!(a, b);
    }

    fn text(bytes: Bytes) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn fields_come_in_the_api_order() {
        assert_eq!(text(ping()), "event: ping\ndata: {\"type\":\"ping\"}\n\n");
        assert_eq!(
            text(text_delta("hi")),
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n"
        );
        assert_eq!(
            text(message_delta(StopReason::MaxTokens, 7)),
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}\n\n"
        );
        assert_eq!(
            message("msg_1", "m", "t", StopReason::EndTurn, 3, 4),
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"t"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":4}}"#
        );
        assert_eq!(
            error_body("api_error", "boom", "req_1"),
            r#"{"type":"error","error":{"type":"api_error","message":"boom"},"request_id":"req_1"}"#
        );
        assert!(text(message_start("msg_1", "m", 5)).starts_with(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\""
        ));
    }
}
