//! Admission of a request: route, method, authentication, API version and
//! body, checked in that order, each failure with the status, error type and
//! field-naming message the real API uses.
//!
//! The checks are deliberately as strict as the real API on the fields the
//! host's gateway must get right (`model`, `max_tokens`, `messages`, headers)
//! and lenient on everything else: unknown top-level fields such as `tools`,
//! `thinking` or `top_p` are accepted and ignored, because the gateway
//! forwards whatever its client sends and the mock must not reject requests
//! the real API would take.

use hyper::Method;
use hyper::http::request::Parts;
use serde_json::{Map, Value};

use crate::wire::{AUTHENTICATION, INVALID_REQUEST, NOT_FOUND, REQUEST_TOO_LARGE};

/// The only endpoint the mock serves.
const MESSAGES_PATH: &str = "/v1/messages";

/// `anthropic-version` values the API accepts.
const VERSIONS: [&str; 2] = ["2023-06-01", "2023-01-01"];

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

fn invalid(message: impl Into<String>) -> Rejection {
    reject(400, INVALID_REQUEST, message)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    User,
    Assistant,
}

/// The parts of a valid request the mock's reply depends on. Text is the
/// concatenation of all `text` blocks (or the plain string content); other
/// block kinds are accepted but carry no text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessagesRequest {
    pub model: String,
    pub max_tokens: u64,
    pub stream: bool,
    pub system: String,
    pub messages: Vec<(Role, String)>,
}

/// Decides whether a request reaches the scenario queue. `too_large` says the
/// body went over the size limit (the body passed in is then truncated).
pub(crate) fn admit(
    parts: &Parts,
    api_key: &str,
    body: &[u8],
    too_large: bool,
) -> Result<MessagesRequest, Rejection> {
    if parts.uri.path() != MESSAGES_PATH {
        return Err(reject(404, NOT_FOUND, "Not Found"));
    }
    if parts.method != Method::POST {
        return Err(reject(405, INVALID_REQUEST, "Method Not Allowed"));
    }
    // An empty configured key turns authentication off: the job benchmark's
    // baseline has the worker talk to the mock with no gateway to add one.
    match parts.headers.get("x-api-key") {
        _ if api_key.is_empty() => {}
        None => {
            return Err(reject(401, AUTHENTICATION, "x-api-key header is required"));
        }
        Some(key) if key.as_bytes() != api_key.as_bytes() => {
            return Err(reject(401, AUTHENTICATION, "invalid x-api-key"));
        }
        Some(_) => {}
    }
    match parts.headers.get("anthropic-version") {
        None => return Err(invalid("anthropic-version: header is required")),
        Some(v)
            if !VERSIONS
                .iter()
                .any(|known| v.as_bytes() == known.as_bytes()) =>
        {
            return Err(invalid(format!(
                "anthropic-version: unsupported version {:?}",
                String::from_utf8_lossy(v.as_bytes())
            )));
        }
        Some(_) => {}
    }
    if too_large {
        return Err(reject(
            413,
            REQUEST_TOO_LARGE,
            "Request exceeds the maximum allowed number of bytes.",
        ));
    }
    parse_body(body)
}

/// Validates the JSON body and extracts what the reply needs.
pub(crate) fn parse_body(body: &[u8]) -> Result<MessagesRequest, Rejection> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("There was an error parsing the body: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(invalid("body: Input should be a valid dictionary"));
    };

    let model = match fields.get("model") {
        None => return Err(invalid("model: Field required")),
        Some(Value::String(m)) if m.is_empty() => {
            return Err(invalid("model: String should have at least 1 character"));
        }
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(invalid("model: Input should be a valid string")),
    };

    let max_tokens = match fields.get("max_tokens") {
        None => return Err(invalid("max_tokens: Field required")),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => match n.as_u64() {
            Some(m) if m >= 1 => m,
            _ => {
                return Err(invalid(
                    "max_tokens: Input should be greater than or equal to 1",
                ));
            }
        },
        Some(_) => return Err(invalid("max_tokens: Input should be a valid integer")),
    };

    let messages = parse_messages(fields.get("messages"))?;
    let system = parse_system(fields.get("system"))?;
    let stream = match present(&fields, "stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream: Input should be a valid boolean")),
    };
    check_optional_fields(&fields)?;

    Ok(MessagesRequest {
        model,
        max_tokens,
        stream,
        system,
        messages,
    })
}

/// An optional field counts as absent when it is `null`, as the API's
/// request schema treats it.
fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

fn parse_messages(value: Option<&Value>) -> Result<Vec<(Role, String)>, Rejection> {
    let items = match value {
        None => return Err(invalid("messages: Field required")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("messages: Input should be a valid list")),
    };
    if items.is_empty() {
        return Err(invalid(
            "messages: List should have at least 1 item after validation, not 0",
        ));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(message) = item else {
            return Err(invalid(format!(
                "messages.{i}: Input should be a valid dictionary"
            )));
        };
        let role = match message.get("role") {
            None => return Err(invalid(format!("messages.{i}.role: Field required"))),
            Some(Value::String(r)) if r == "user" => Role::User,
            Some(Value::String(r)) if r == "assistant" => Role::Assistant,
            Some(_) => {
                return Err(invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )));
            }
        };
        let field = format!("messages.{i}.content");
        let text = match message.get("content") {
            None => return Err(invalid(format!("{field}: Field required"))),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(blocks)) => blocks_text(&field, blocks)?,
            Some(_) => {
                return Err(invalid(format!(
                    "{field}: Input should be a valid string or a list of content blocks"
                )));
            }
        };
        messages.push((role, text));
    }
    if messages[0].0 != Role::User {
        return Err(invalid(
            r#"messages: first message must use the "user" role"#,
        ));
    }
    Ok(messages)
}

fn parse_system(value: Option<&Value>) -> Result<String, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => {
            let text = blocks_text("system", blocks)?;
            // The system prompt only takes text blocks.
            match blocks
                .iter()
                .position(|b| b.get("type").and_then(Value::as_str) != Some("text"))
            {
                Some(i) => Err(invalid(format!("system.{i}.type: Input should be 'text'"))),
                None => Ok(text),
            }
        }
        Some(_) => Err(invalid(
            "system: Input should be a valid string or a list of text blocks",
        )),
    }
}

/// Checks that every block is an object with a string `type`, that `text`
/// blocks carry a string `text`, and returns the concatenated text.
fn blocks_text(field: &str, blocks: &[Value]) -> Result<String, Rejection> {
    let mut text = String::new();
    for (i, block) in blocks.iter().enumerate() {
        let Value::Object(block) = block else {
            return Err(invalid(format!(
                "{field}.{i}: Input should be a valid dictionary"
            )));
        };
        match block.get("type") {
            None => return Err(invalid(format!("{field}.{i}.type: Field required"))),
            Some(Value::String(kind)) if kind == "text" => match block.get("text") {
                Some(Value::String(t)) => text.push_str(t),
                None => return Err(invalid(format!("{field}.{i}.text: Field required"))),
                Some(_) => {
                    return Err(invalid(format!(
                        "{field}.{i}.text: Input should be a valid string"
                    )));
                }
            },
            Some(Value::String(_)) => {}
            Some(_) => {
                return Err(invalid(format!(
                    "{field}.{i}.type: Input should be a valid string"
                )));
            }
        }
    }
    Ok(text)
}

/// Type checks for the optional fields the mock accepts but does not act on.
fn check_optional_fields(fields: &Map<String, Value>) -> Result<(), Rejection> {
    if let Some(t) = present(fields, "temperature") {
        match t.as_f64() {
            None => return Err(invalid("temperature: Input should be a valid number")),
            Some(t) if !(0.0..=1.0).contains(&t) => {
                return Err(invalid(
                    "temperature: Input should be between 0 and 1 (inclusive)",
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(s) = present(fields, "stop_sequences") {
        let all_strings = s.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if !all_strings {
            return Err(invalid(
                "stop_sequences: Input should be a valid list of strings",
            ));
        }
    }
    if let Some(m) = present(fields, "metadata")
        && !m.is_object()
    {
        return Err(invalid("metadata: Input should be a valid dictionary"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message_for(body: Value) -> String {
        parse_body(body.to_string().as_bytes()).unwrap_err().message
    }

    #[test]
    fn extracts_text_from_strings_and_blocks() {
        let req = parse_body(
            json!({
                "model": "m",
                "max_tokens": 5,
                "system": [{"type": "text", "text": "sys"}],
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "tool_use", "id": "x", "name": "n", "input": {}}]},
                    {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": "c"}]}
                ],
                "tools": [],
                "stream": null
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(req.system, "sys");
        assert!(!req.stream);
        assert_eq!(
            req.messages,
            vec![
                (Role::User, "hi".to_owned()),
                (Role::Assistant, "a".to_owned()),
                (Role::User, "bc".to_owned())
            ]
        );
    }

    #[test]
    fn rejections_name_the_field() {
        let ok = || json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]});
        let with = |k: &str, v: Value| {
            let mut b = ok();
            b[k] = v;
            b
        };
        assert!(message_for(with("max_tokens", json!(-3))).starts_with("max_tokens:"));
        assert!(message_for(with("max_tokens", json!(2.5))).starts_with("max_tokens:"));
        assert!(
            message_for(with("system", json!([{"type": "image"}]))).starts_with("system.0.type")
        );
        assert!(
            message_for(with(
                "messages",
                json!([{"role": "user", "content": [{"type": "text"}]}])
            ))
            .starts_with("messages.0.content.0.text")
        );
        assert!(message_for(with("temperature", json!(1.5))).starts_with("temperature:"));
    }
}
