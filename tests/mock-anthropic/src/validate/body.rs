//! The top level of a request body: JSON object, `model`, `max_tokens`,
//! `stream`, then the conversation and the optional fields, for the Messages
//! endpoint and for `count_tokens` (which takes neither `max_tokens` nor
//! `stream`).

use serde_json::{Map, Value};

use super::messages::{parse_messages as parse_conversation, parse_system};
use super::options::check_options;
use super::{MessagesRequest, Prompt, Rejection, invalid};

/// The beta under which a thinking budget may exceed `max_tokens`, because
/// it then spans every thinking block of the turn.
const INTERLEAVED_THINKING: &str = "interleaved-thinking-2025-05-14";

/// Validates a Messages request body; `betas` are the request's
/// `anthropic-beta` values.
pub(crate) fn parse_messages(body: &[u8], betas: &[String]) -> Result<MessagesRequest, Rejection> {
    let fields = object(body)?;
    let model = model(&fields)?;
    let max_tokens = max_tokens(&fields)?;
    let prompt = prompt(&fields)?;
    let stream = match present(&fields, "stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream: Input should be a valid boolean")),
    };
    let budget_cap = if betas.iter().any(|b| b == INTERLEAVED_THINKING) {
        None
    } else {
        Some(max_tokens)
    };
    check_options(&fields, budget_cap)?;
    Ok(MessagesRequest {
        model,
        max_tokens,
        stream,
        prompt,
    })
}

/// Validates a `count_tokens` body: a Messages body without `max_tokens` or
/// `stream` (present, they are ignored like any field the mock does not
/// model).
pub(crate) fn parse_count(body: &[u8]) -> Result<Prompt, Rejection> {
    let fields = object(body)?;
    model(&fields)?;
    let prompt = prompt(&fields)?;
    check_options(&fields, None)?;
    Ok(prompt)
}

/// An optional field counts as absent when it is `null`, as the API's
/// request schema treats it.
pub(super) fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

fn object(body: &[u8]) -> Result<Map<String, Value>, Rejection> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("There was an error parsing the body: {e}")))?;
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(invalid("body: Input should be a valid dictionary")),
    }
}

fn model(fields: &Map<String, Value>) -> Result<String, Rejection> {
    match fields.get("model") {
        None => Err(invalid("model: Field required")),
        Some(Value::String(m)) if m.is_empty() => {
            Err(invalid("model: String should have at least 1 character"))
        }
        Some(Value::String(m)) => Ok(m.clone()),
        Some(_) => Err(invalid("model: Input should be a valid string")),
    }
}

fn max_tokens(fields: &Map<String, Value>) -> Result<u64, Rejection> {
    match fields.get("max_tokens") {
        None => Err(invalid("max_tokens: Field required")),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => match n.as_u64() {
            Some(m) if m >= 1 => Ok(m),
            _ => Err(invalid(
                "max_tokens: Input should be greater than or equal to 1",
            )),
        },
        Some(_) => Err(invalid("max_tokens: Input should be a valid integer")),
    }
}

fn prompt(fields: &Map<String, Value>) -> Result<Prompt, Rejection> {
    let messages = parse_conversation(fields.get("messages"))?;
    let system = parse_system(fields.get("system"))?;
    Ok(Prompt { system, messages })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Role;
    use serde_json::json;

    fn message_for(body: Value) -> String {
        parse_messages(body.to_string().as_bytes(), &[])
            .unwrap_err()
            .message
    }

    #[test]
    fn extracts_text_from_strings_and_blocks() {
        let req = parse_messages(
            json!({
                "model": "m",
                "max_tokens": 5,
                "system": [{"type": "text", "text": "sys"}],
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "tool_use", "id": "x", "name": "n", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "out"}, {"type": "text", "text": "b"}, {"type": "text", "text": "c"}]},
                    {"role": "system", "content": "note"}
                ],
                "tools": [],
                "stream": null
            })
            .to_string()
            .as_bytes(),
            &[],
        )
        .unwrap();
        assert_eq!(req.prompt.system, "sys");
        assert!(!req.stream);
        assert_eq!(
            req.prompt.messages,
            vec![
                (Role::User, "hi".to_owned()),
                (Role::Assistant, "a".to_owned()),
                (Role::User, "outbc".to_owned()),
                (Role::System, "note".to_owned())
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

    #[test]
    fn thinking_budget_must_fit_unless_interleaved() {
        let body = json!({
            "model": "m",
            "max_tokens": 2000,
            "thinking": {"type": "enabled", "budget_tokens": 4000},
            "messages": [{"role": "user", "content": "x"}]
        })
        .to_string();
        let refused = parse_messages(body.as_bytes(), &[]).unwrap_err();
        assert!(
            refused
                .message
                .starts_with("`max_tokens` must be greater than `thinking.budget_tokens`")
        );
        let betas = [
            "claude-code-20250219".to_owned(),
            INTERLEAVED_THINKING.to_owned(),
        ];
        assert!(parse_messages(body.as_bytes(), &betas).is_ok());
    }

    #[test]
    fn count_bodies_need_no_max_tokens() {
        let prompt =
            parse_count(br#"{"model": "m", "messages": [{"role": "user", "content": "abc"}]}"#)
                .unwrap();
        assert_eq!(prompt.messages, vec![(Role::User, "abc".to_owned())]);
        let refused = parse_count(br#"{"messages": [{"role": "user", "content": "abc"}]}"#);
        assert_eq!(refused.unwrap_err().message, "model: Field required");
    }
}
