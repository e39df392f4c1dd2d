//! The bytes the mock puts on the wire: JSON bodies, SSE events and ids,
//! shaped like the real Messages API's.
//!
//! Everything here is a pure function so the shapes can be read in one place
//! and compared against the API reference without following control flow.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

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
    ToolUse,
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

/// A content block of an assistant message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Block<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
}

/// What a `content_block_delta` adds to its block.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: &'a [Block<'a>],
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

#[derive(Serialize)]
struct TokenCount {
    input_tokens: u64,
}

/// The SSE events; serde writes the `type` tag first, as the API does.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: Message<'a>,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: usize,
        delta: Delta<'a>,
    },
    ContentBlockStop {
        index: usize,
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
    // Only strings, integers, JSON values, options and sequences are
    // serialized here, none of which can fail.
    serde_json::to_string(value).expect("wire shapes always serialize")
}

/// A complete non-streaming `message` object.
pub(crate) fn message(
    id: &str,
    model: &str,
    content: &[Block<'_>],
    stop_reason: StopReason,
    input_tokens: u64,
    output_tokens: u64,
) -> String {
    to_json(&Message {
        id,
        kind: "message",
        role: "assistant",
        model,
        content,
        stop_reason: Some(stop_reason),
        stop_sequence: None,
        usage: Usage::new(input_tokens, output_tokens),
    })
}

/// The body of a `count_tokens` answer.
pub(crate) fn token_count(input_tokens: u64) -> String {
    to_json(&TokenCount { input_tokens })
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
            content: &[],
            stop_reason: None,
            stop_sequence: None,
            usage: Usage::new(input_tokens, 1),
        },
    })
}

/// `content_block_start`: the block with nothing in it yet, an empty text
/// or a `tool_use` whose `input` is `{}` until its deltas arrive.
pub(crate) fn content_block_start(index: usize, block: Block<'_>) -> Bytes {
    sse(&Event::ContentBlockStart {
        index,
        content_block: block,
    })
}

pub(crate) fn ping() -> Bytes {
    sse(&Event::Ping)
}

pub(crate) fn text_delta(index: usize, text: &str) -> Bytes {
    sse(&Event::ContentBlockDelta {
        index,
        delta: Delta::TextDelta { text },
    })
}

/// A piece of a tool call's input JSON; clients join the pieces and parse
/// the whole at `content_block_stop`.
pub(crate) fn input_json_delta(index: usize, partial_json: &str) -> Bytes {
    sse(&Event::ContentBlockDelta {
        index,
        delta: Delta::InputJsonDelta { partial_json },
    })
}

pub(crate) fn content_block_stop(index: usize) -> Bytes {
    sse(&Event::ContentBlockStop { index })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            text(text_delta(0, "hi")),
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n"
        );
        assert_eq!(
            text(message_delta(StopReason::MaxTokens, 7)),
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}\n\n"
        );
        assert_eq!(
            message(
                "msg_1",
                "m",
                &[Block::Text { text: "t" }],
                StopReason::EndTurn,
                3,
                4
            ),
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"t"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":4}}"#
        );
        assert_eq!(
            error_body("api_error", "boom", "req_1"),
            r#"{"type":"error","error":{"type":"api_error","message":"boom"},"request_id":"req_1"}"#
        );
        assert!(text(message_start("msg_1", "m", 5)).starts_with(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\""
        ));
        assert_eq!(token_count(12), r#"{"input_tokens":12}"#);
    }

    #[test]
    fn tool_use_shapes() {
        let input = json!({"command": "ls"});
        let call = Block::ToolUse {
            id: "toolu_1",
            name: "Bash",
            input: &input,
        };
        assert_eq!(
            text(content_block_start(1, call)),
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"Bash\",\"input\":{\"command\":\"ls\"}}}\n\n"
        );
        assert_eq!(
            text(input_json_delta(1, "{\"com")),
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"com\"}}\n\n"
        );
        assert!(
            message("m1", "m", &[call], StopReason::ToolUse, 1, 2)
                .contains(r#""content":[{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"ls"}}],"stop_reason":"tool_use""#)
        );
    }
}
