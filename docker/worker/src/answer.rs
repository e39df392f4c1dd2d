//! Turns the gateway's response into the answer on stdout and the summary on
//! stderr: Messages API stream events or a complete message on success, the
//! Messages-style error body on failure.

use std::fmt;
use std::io::{Read, Write};

use serde::Deserialize;

use crate::error::Error;
use crate::http::Response;
use crate::sse;

/// Error bodies are only needed for their message; a bound keeps a runaway
/// one from being buffered whole.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// A whole message is held in memory before printing; anything near this
/// size means something is badly wrong, not a long answer.
const MAX_MESSAGE_BODY: u64 = 64 * 1024 * 1024;

/// What the worker reports on stderr once the answer is complete.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub stop_reason: Option<String>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let number = |n: Option<u64>| n.map_or_else(|| "unknown".to_string(), |n| n.to_string());
        write!(
            f,
            "stop_reason={} input_tokens={} output_tokens={}",
            self.stop_reason.as_deref().unwrap_or("unknown"),
            number(self.input_tokens),
            number(self.output_tokens)
        )
    }
}

/// Writes answer text as it comes, remembering enough to end the output
/// with exactly one newline.
pub struct Printer<W: Write> {
    out: W,
    wrote_any: bool,
    ends_with_newline: bool,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W) -> Self {
        Printer {
            out,
            wrote_any: false,
            ends_with_newline: false,
        }
    }

    /// Flushes every piece: the user is watching the answer being written.
    fn text(&mut self, text: &str) -> Result<(), Error> {
        if text.is_empty() {
            return Ok(());
        }
        self.out.write_all(text.as_bytes()).map_err(Error::Output)?;
        self.out.flush().map_err(Error::Output)?;
        self.wrote_any = true;
        self.ends_with_newline = text.ends_with('\n');
        Ok(())
    }

    /// Also called after a failure, so text that was streamed before an
    /// error still ends cleanly before the error message appears.
    pub fn finish(&mut self) -> Result<(), Error> {
        if self.wrote_any && !self.ends_with_newline {
            self.text("\n")?;
        }
        Ok(())
    }
}

/// Handles the response: the answer goes to `printer`, failures come back as
/// the matching `Error`. Reading stops at `message_stop`, so the caller may
/// find the end of the body still unread.
pub fn handle<R: Read, W: Write>(
    response: &mut Response<R>,
    streaming: bool,
    printer: &mut Printer<W>,
) -> Result<Summary, Error> {
    let status = response.status;
    match status {
        200..=299 if streaming => {
            // Without this, a JSON reply would only be caught as a stream
            // with no `message_stop`, which hides what actually went wrong.
            if let Some(kind) = response.header("content-type")
                && !kind.to_ascii_lowercase().starts_with("text/event-stream")
            {
                return Err(Error::Malformed(format!(
                    "expected an event stream, got content-type {kind}"
                )));
            }
            stream(&mut response.body, printer)
        }
        200..=299 => message(&mut response.body, printer),
        400..=499 => Err(Error::Refused {
            status,
            detail: error_detail(&mut response.body),
        }),
        500..=599 => Err(Error::Upstream {
            status,
            detail: error_detail(&mut response.body),
        }),
        _ => Err(Error::Malformed(format!("unexpected HTTP status {status}"))),
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInfo,
}

#[derive(Deserialize)]
struct ErrorInfo {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

/// `type: message` from a Messages-style error body, or as much of a
/// non-conforming body as is useful to a human reading the log.
fn error_detail(body: impl Read) -> String {
    let mut bytes = Vec::new();
    // A body cut short still says more than no body: keep what did arrive.
    let _ = body.take(MAX_ERROR_BODY).read_to_end(&mut bytes);
    if let Ok(ErrorBody { error }) = serde_json::from_slice(&bytes) {
        return format!("{}: {}", error.kind, error.message);
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.is_empty() {
        "(no error body)".to_string()
    } else {
        let excerpt: String = text.chars().take(300).collect();
        format!("unrecognised error body: {excerpt}")
    }
}

#[derive(Deserialize, Default)]
struct Usage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl Usage {
    // `message_delta` counts are cumulative, so later values replace earlier
    // ones; absent fields leave what is already known.
    fn apply(self, summary: &mut Summary) {
        summary.input_tokens = self.input_tokens.or(summary.input_tokens);
        summary.output_tokens = self.output_tokens.or(summary.output_tokens);
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock {
    Text {
        text: String,
    },
    // Tool use, thinking and whatever blocks the API adds later carry no
    // answer text.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageStart {
    message: MessageHead,
}

#[derive(Deserialize)]
struct MessageHead {
    #[serde(default)]
    usage: Usage,
}

#[derive(Deserialize)]
struct ContentBlockStart {
    content_block: ContentBlock,
}

#[derive(Deserialize)]
struct ContentBlockDelta {
    delta: BlockDelta,
}

#[derive(Deserialize)]
struct MessageDelta {
    delta: StopInfo,
    #[serde(default)]
    usage: Usage,
}

#[derive(Deserialize)]
struct StopInfo {
    stop_reason: Option<String>,
}

fn stream<R: Read, W: Write>(mut body: R, printer: &mut Printer<W>) -> Result<Summary, Error> {
    let mut parser = sse::Parser::default();
    let mut events = Vec::new();
    let mut summary = Summary::default();
    let mut buf = [0; 8192];
    loop {
        let n = body
            .read(&mut buf)
            .map_err(|e| Error::Malformed(format!("reading the event stream: {e}")))?;
        if n == 0 {
            return Err(Error::Malformed(
                "the event stream ended without message_stop".into(),
            ));
        }
        parser
            .feed(&buf[..n], &mut events)
            .map_err(Error::Malformed)?;
        for event in events.drain(..) {
            if on_event(&event, &mut summary, printer)? == Flow::Stop {
                return Ok(summary);
            }
        }
    }
}

#[derive(PartialEq)]
enum Flow {
    Continue,
    Stop,
}

fn on_event<W: Write>(
    event: &sse::Event,
    summary: &mut Summary,
    printer: &mut Printer<W>,
) -> Result<Flow, Error> {
    match event.name.as_str() {
        "message_start" => {
            let start: MessageStart = parse_event(event)?;
            start.message.usage.apply(summary);
        }
        "content_block_start" => {
            if let ContentBlock::Text { text } =
                parse_event::<ContentBlockStart>(event)?.content_block
            {
                printer.text(&text)?;
            }
        }
        "content_block_delta" => {
            if let BlockDelta::TextDelta { text } = parse_event::<ContentBlockDelta>(event)?.delta {
                printer.text(&text)?;
            }
        }
        "message_delta" => {
            let delta: MessageDelta = parse_event(event)?;
            if delta.delta.stop_reason.is_some() {
                summary.stop_reason = delta.delta.stop_reason;
            }
            delta.usage.apply(summary);
        }
        "message_stop" => return Ok(Flow::Stop),
        "error" => {
            let ErrorBody { error } = parse_event(event)?;
            return Err(Error::MidStream {
                kind: error.kind,
                message: error.message,
            });
        }
        // `ping`, `content_block_stop`, and event types added to the API
        // after this was written.
        _ => {}
    }
    Ok(Flow::Continue)
}

fn parse_event<'a, T: Deserialize<'a>>(event: &'a sse::Event) -> Result<T, Error> {
    serde_json::from_str(&event.data)
        .map_err(|e| Error::Malformed(format!("bad `{}` event: {e}", event.name)))
}

#[derive(Deserialize)]
struct Message {
    content: Vec<ContentBlock>,
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Usage,
}

fn message<R: Read, W: Write>(body: R, printer: &mut Printer<W>) -> Result<Summary, Error> {
    let mut bytes = Vec::new();
    body.take(MAX_MESSAGE_BODY)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Malformed(format!("reading the message: {e}")))?;
    let message: Message = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Malformed(format!("bad message JSON: {e}")))?;
    let text: String = message
        .content
        .into_iter()
        .filter_map(|block| match block {
            ContentBlock::Text { text } => Some(text),
            ContentBlock::Other => None,
        })
        .collect();
    printer.text(&text)?;
    let mut summary = Summary {
        stop_reason: message.stop_reason,
        ..Summary::default()
    };
    message.usage.apply(&mut summary);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::read_response;

    fn run(raw: &[u8], streaming: bool) -> (Result<Summary, Error>, String) {
        let mut response = read_response(raw).unwrap();
        let mut printer = Printer::new(Vec::new());
        let result = handle(&mut response, streaming, &mut printer);
        printer.finish().unwrap();
        (result, String::from_utf8(printer.out).unwrap())
    }

    fn sse_response(events: &[(&str, &str)]) -> Vec<u8> {
        let mut body = String::new();
        for (name, data) in events {
            body.push_str(&format!("event: {name}\r\ndata: {data}\r\n\r\n"));
        }
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    const START: (&str, &str) = (
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":1}}}"#,
    );
    const BLOCK_START: (&str, &str) = (
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    );
    const PING: (&str, &str) = ("ping", r#"{"type": "ping"}"#);
    const BLOCK_STOP: (&str, &str) = (
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#,
    );
    const MESSAGE_DELTA: (&str, &str) = (
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":40}}"#,
    );
    const STOP: (&str, &str) = ("message_stop", r#"{"type":"message_stop"}"#);

    /// The data of a `content_block_delta` event carrying answer text.
    fn text_delta(text: &str) -> String {
        serde_json::json!({
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text}
        })
        .to_string()
    }

    const DELTA: &str = "content_block_delta";

    #[test]
    fn streamed_answer_is_printed_and_summarised() {
        let (hello, world) = (text_delta("Hello"), text_delta(", world"));
        let tool_input = r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{"}}"#;
        let raw = sse_response(&[
            START,
            BLOCK_START,
            PING,
            (DELTA, &hello),
            (DELTA, &world),
            (DELTA, tool_input),
            ("some_future_event", "not even json"),
            BLOCK_STOP,
            MESSAGE_DELTA,
            STOP,
        ]);
        let (result, out) = run(&raw, true);
        assert_eq!(out, "Hello, world\n");
        assert_eq!(
            result.unwrap().to_string(),
            "stop_reason=end_turn input_tokens=12 output_tokens=40"
        );
    }

    #[test]
    fn answer_ending_in_a_newline_gets_no_extra_one() {
        let line = text_delta("line\n");
        let raw = sse_response(&[
            START,
            BLOCK_START,
            (DELTA, &line),
            BLOCK_STOP,
            MESSAGE_DELTA,
            STOP,
        ]);
        let (result, out) = run(&raw, true);
        result.unwrap();
        assert_eq!(out, "line\n");
    }

    #[test]
    fn error_event_mid_stream_keeps_the_text_already_printed() {
        let partial = text_delta("partial");
        let error =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let raw = sse_response(&[START, BLOCK_START, (DELTA, &partial), ("error", error)]);
        let (result, out) = run(&raw, true);
        let err = result.unwrap_err();
        assert_eq!(err.exit_code(), 4);
        assert_eq!(
            err.to_string(),
            "upstream error mid-stream: overloaded_error: Overloaded"
        );
        assert_eq!(out, "partial\n");
    }

    #[test]
    fn stream_without_message_stop_is_malformed() {
        let cut = text_delta("cut");
        let (result, out) = run(&sse_response(&[START, BLOCK_START, (DELTA, &cut)]), true);
        let err = result.unwrap_err();
        assert_eq!(err.exit_code(), 6);
        assert!(err.to_string().contains("without message_stop"), "{err}");
        assert_eq!(out, "cut\n");
    }

    #[test]
    fn streamed_request_answered_with_json_is_malformed() {
        let raw =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        let err = run(raw, true).0.unwrap_err();
        assert_eq!(err.exit_code(), 6);
        assert!(err.to_string().contains("application/json"), "{err}");
    }

    #[test]
    fn known_event_with_bad_json_is_malformed() {
        let (result, _) = run(&sse_response(&[START, (DELTA, "{oops")]), true);
        let err = result.unwrap_err();
        assert_eq!(err.exit_code(), 6);
        assert!(err.to_string().contains("content_block_delta"), "{err}");
    }

    #[test]
    fn refusal_reports_the_messages_error() {
        let body = r#"{"type":"error","error":{"type":"permission_error","message":"max_tokens 9000 is over the job's budget of 1024"}}"#;
        let raw = format!(
            "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let (result, out) = run(raw.as_bytes(), true);
        let err = result.unwrap_err();
        assert_eq!(err.exit_code(), 3);
        assert_eq!(
            err.to_string(),
            "the gateway refused the request (HTTP 403): permission_error: max_tokens 9000 is over the job's budget of 1024"
        );
        assert_eq!(out, "");
    }

    #[test]
    fn server_errors_are_upstream_errors_even_without_a_json_body() {
        let (result, _) = run(
            b"HTTP/1.1 502 Bad Gateway\r\n\r\n<html>bad gateway</html>",
            true,
        );
        let err = result.unwrap_err();
        assert_eq!(err.exit_code(), 4);
        assert_eq!(
            err.to_string(),
            "upstream error (HTTP 502): unrecognised error body: <html>bad gateway</html>"
        );
        let (result, _) = run(
            b"HTTP/1.1 529 Overloaded\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(result.unwrap_err().to_string().ends_with("(no error body)"));
    }

    #[test]
    fn redirects_are_malformed() {
        let (result, _) = run(b"HTTP/1.1 302 Found\r\ncontent-length: 0\r\n\r\n", true);
        assert_eq!(result.unwrap_err().exit_code(), 6);
    }

    #[test]
    fn non_streamed_message_prints_the_text_blocks() {
        let body = r#"{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"Hi "},{"type":"tool_use","id":"t","name":"x","input":{}},{"type":"text","text":"there"}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":5}}"#;
        let raw = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let (result, out) = run(raw.as_bytes(), false);
        assert_eq!(
            result.unwrap(),
            Summary {
                stop_reason: Some("max_tokens".into()),
                input_tokens: Some(3),
                output_tokens: Some(5),
            }
        );
        assert_eq!(out, "Hi there\n");
    }

    #[test]
    fn non_streamed_bad_json_is_malformed() {
        let (result, _) = run(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", false);
        assert_eq!(result.unwrap_err().exit_code(), 6);
    }

    #[test]
    fn summary_marks_missing_values() {
        assert_eq!(
            Summary::default().to_string(),
            "stop_reason=unknown input_tokens=unknown output_tokens=unknown"
        );
    }
}
