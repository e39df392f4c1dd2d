//! `messages` and `system`: roles, content blocks, and the pairing of every
//! `tool_use` with a `tool_result` in the message right after it. The real
//! API keeps no conversation state and checks the pairing afresh on each
//! request, and so does the mock.

use serde_json::{Map, Value};

use super::{Rejection, Role, invalid};

/// One message as the checks need it.
struct Message {
    role: Role,
    text: String,
    /// Ids of its `tool_use` blocks, in order.
    tool_uses: Vec<String>,
    results: Vec<ToolResult>,
}

struct ToolResult {
    /// The block's index in the message's content.
    block: usize,
    tool_use_id: String,
    /// Whether only `tool_result` blocks come before it: the API takes
    /// results that follow other content as not "immediately after" the
    /// call.
    leading: bool,
}

/// What a content list holds.
#[derive(Default)]
struct Content {
    text: String,
    tool_uses: Vec<String>,
    results: Vec<ToolResult>,
}

/// Checks `messages` and returns each message's role and text.
pub(super) fn parse_messages(value: Option<&Value>) -> Result<Vec<(Role, String)>, Rejection> {
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
    let messages = items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_message(i, item))
        .collect::<Result<Vec<_>, _>>()?;
    if messages[0].role != Role::User {
        return Err(invalid(
            r#"messages: first message must use the "user" role"#,
        ));
    }
    check_tool_pairing(&messages)?;
    Ok(messages.into_iter().map(|m| (m.role, m.text)).collect())
}

fn parse_message(i: usize, item: &Value) -> Result<Message, Rejection> {
    let Value::Object(message) = item else {
        return Err(invalid(format!(
            "messages.{i}: Input should be a valid dictionary"
        )));
    };
    let role = match message.get("role").and_then(Value::as_str) {
        None if !message.contains_key("role") => {
            return Err(invalid(format!("messages.{i}.role: Field required")));
        }
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("system") => Role::System,
        _ => {
            return Err(invalid(format!(
                "messages.{i}.role: Input should be 'user', 'assistant' or 'system'"
            )));
        }
    };
    let field = format!("messages.{i}.content");
    let content = match message.get("content") {
        None => return Err(invalid(format!("{field}: Field required"))),
        Some(Value::String(s)) => Content {
            text: s.clone(),
            ..Content::default()
        },
        Some(Value::Array(blocks)) => parse_blocks(&field, blocks)?,
        Some(_) => {
            return Err(invalid(format!(
                "{field}: Input should be a valid string or a list of content blocks"
            )));
        }
    };
    Ok(Message {
        role,
        text: content.text,
        tool_uses: content.tool_uses,
        results: content.results,
    })
}

/// The system prompt's text. It only takes text blocks.
pub(super) fn parse_system(value: Option<&Value>) -> Result<String, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => {
            let content = parse_blocks("system", blocks)?;
            match blocks
                .iter()
                .position(|b| b.get("type").and_then(Value::as_str) != Some("text"))
            {
                Some(i) => Err(invalid(format!("system.{i}.type: Input should be 'text'"))),
                None => Ok(content.text),
            }
        }
        Some(_) => Err(invalid(
            "system: Input should be a valid string or a list of text blocks",
        )),
    }
}

/// Checks that every block is an object with a string `type`, and the
/// fields the API requires of `text`, `tool_use` and `tool_result` blocks.
/// Other kinds (images, documents, thinking) are accepted unread.
fn parse_blocks(field: &str, blocks: &[Value]) -> Result<Content, Rejection> {
    let mut content = Content::default();
    let mut leading = true;
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("{field}.{i}");
        let Value::Object(block) = block else {
            return Err(invalid(format!("{at}: Input should be a valid dictionary")));
        };
        let kind = match block.get("type") {
            None => return Err(invalid(format!("{at}.type: Field required"))),
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => {
                return Err(invalid(format!(
                    "{at}.type: Input should be a valid string"
                )));
            }
        };
        leading &= kind == "tool_result";
        match kind {
            "text" => content.text.push_str(string(block, &at, "text")?),
            "tool_use" => {
                content.tool_uses.push(string(block, &at, "id")?.to_owned());
                string(block, &at, "name")?;
                match block.get("input") {
                    Some(Value::Object(_)) => {}
                    None => return Err(invalid(format!("{at}.input: Field required"))),
                    Some(_) => {
                        return Err(invalid(format!(
                            "{at}.input: Input should be a valid dictionary"
                        )));
                    }
                }
            }
            "tool_result" => {
                let tool_use_id = string(block, &at, "tool_use_id")?.to_owned();
                content.text.push_str(&tool_result_text(block, &at)?);
                content.results.push(ToolResult {
                    block: i,
                    tool_use_id,
                    leading,
                });
            }
            _ => {}
        }
    }
    Ok(content)
}

/// A `tool_result`'s content (a string, or a list of blocks such as text
/// and images) as text, after checking it and `is_error`.
fn tool_result_text(block: &Map<String, Value>, at: &str) -> Result<String, Rejection> {
    if let Some(flag) = block.get("is_error")
        && !flag.is_boolean()
        && !flag.is_null()
    {
        return Err(invalid(format!(
            "{at}.is_error: Input should be a valid boolean"
        )));
    }
    match block.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(inner)) => Ok(parse_blocks(&format!("{at}.content"), inner)?.text),
        Some(_) => Err(invalid(format!(
            "{at}.content: Input should be a valid string or a list of content blocks"
        ))),
    }
}

/// A required string field of a block.
fn string<'a>(block: &'a Map<String, Value>, at: &str, name: &str) -> Result<&'a str, Rejection> {
    match block.get(name) {
        Some(Value::String(s)) => Ok(s),
        None => Err(invalid(format!("{at}.{name}: Field required"))),
        Some(_) => Err(invalid(format!(
            "{at}.{name}: Input should be a valid string"
        ))),
    }
}

/// Each assistant `tool_use` must be answered by a leading `tool_result`
/// in the next message, a user message; each `tool_result` must answer a
/// `tool_use` of the message right before it. Checked in message order, so
/// the first problem in the conversation is the one reported.
fn check_tool_pairing(messages: &[Message]) -> Result<(), Rejection> {
    for (i, message) in messages.iter().enumerate() {
        let offered: &[String] = match i.checked_sub(1).map(|p| &messages[p]) {
            Some(prev) if prev.role == Role::Assistant => &prev.tool_uses,
            _ => &[],
        };
        if message.role == Role::User
            && let Some(stray) = message
                .results
                .iter()
                .find(|r| !offered.contains(&r.tool_use_id))
        {
            return Err(invalid(format!(
                "messages.{i}.content.{}: unexpected `tool_use_id` found in `tool_result` blocks: {}. \
                 Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
                stray.block, stray.tool_use_id
            )));
        }
        if message.role != Role::Assistant {
            continue;
        }
        let answered: Vec<&str> = match messages.get(i + 1) {
            Some(next) if next.role == Role::User => next
                .results
                .iter()
                .filter(|r| r.leading)
                .map(|r| r.tool_use_id.as_str())
                .collect(),
            _ => Vec::new(),
        };
        let missing: Vec<&str> = message
            .tool_uses
            .iter()
            .map(String::as_str)
            .filter(|id| !answered.contains(id))
            .collect();
        if !missing.is_empty() {
            return Err(invalid(format!(
                "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. \
                 Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                missing.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refusal(messages: Value) -> String {
        parse_messages(Some(&messages)).unwrap_err().message
    }

    fn call(id: &str) -> Value {
        json!({"type": "tool_use", "id": id, "name": "Bash", "input": {"command": "ls"}})
    }

    fn result(id: &str) -> Value {
        json!({"type": "tool_result", "tool_use_id": id, "content": [{"type": "text", "text": "ok"}]})
    }

    #[test]
    fn answered_calls_pass() {
        let conversation = json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "text", "text": "sure"}, call("a"), call("b")]},
            {"role": "user", "content": [result("b"), {"type": "tool_result", "tool_use_id": "a", "is_error": true, "content": "boom"}, {"type": "text", "text": "more"}]},
            {"role": "assistant", "content": "done"}
        ]);
        assert!(parse_messages(Some(&conversation)).is_ok());
    }

    #[test]
    fn unanswered_calls_are_named_at_the_assistant_message() {
        let message = refusal(json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [call("a"), call("b")]},
            {"role": "user", "content": [result("a")]}
        ]));
        assert_eq!(
            message,
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: b. \
             Each `tool_use` block must have a corresponding `tool_result` block in the next message."
        );
        // A result after other content is not "immediately after".
        let late = refusal(json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [call("a")]},
            {"role": "user", "content": [{"type": "text", "text": "first"}, result("a")]}
        ]));
        assert!(late.starts_with("messages.1: `tool_use` ids"), "{late}");
        // Nothing after the call at all.
        let last = refusal(
            json!([{"role": "user", "content": "go"}, {"role": "assistant", "content": [call("a")]}]),
        );
        assert!(last.ends_with("next message."), "{last}");
    }

    #[test]
    fn stray_results_are_named_at_their_block() {
        let message = refusal(json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [call("a")]},
            {"role": "user", "content": [result("a"), result("z")]}
        ]));
        assert!(
            message.starts_with(
                "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: z."
            ),
            "{message}"
        );
        let first = refusal(json!([{"role": "user", "content": [result("a")]}]));
        assert!(
            first.starts_with("messages.0.content.0: unexpected"),
            "{first}"
        );
    }

    #[test]
    fn block_fields_are_checked() {
        let with = |block: Value| {
            refusal(
                json!([{"role": "user", "content": "go"}, {"role": "assistant", "content": [block]}]),
            )
        };
        assert_eq!(
            with(json!({"type": "tool_use", "name": "n", "input": {}})),
            "messages.1.content.0.id: Field required"
        );
        assert_eq!(
            with(json!({"type": "tool_use", "id": "i", "name": "n", "input": "ls"})),
            "messages.1.content.0.input: Input should be a valid dictionary"
        );
        let bad_result = refusal(
            json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": 5}]}]),
        );
        assert!(
            bad_result.starts_with("messages.0.content.0.content:"),
            "{bad_result}"
        );
    }
}
