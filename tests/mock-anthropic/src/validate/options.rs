//! The optional fields of a request: checked for the types and ranges the
//! API documents, then ignored, since the mock models none of sampling,
//! thinking, tools, context management or MCP. Refusing what the real API
//! refuses keeps a client's or a gateway's mistake from passing in tests.

use serde_json::{Map, Value};

use super::body::present;
use super::{Rejection, invalid};

/// The smallest thinking budget the API takes.
const MIN_THINKING_BUDGET: u64 = 1024;

/// Checks every optional field. `budget_cap` is the `max_tokens` a thinking
/// budget must stay under, if any applies.
pub(super) fn check_options(
    fields: &Map<String, Value>,
    budget_cap: Option<u64>,
) -> Result<(), Rejection> {
    unit_interval(fields, "temperature")?;
    unit_interval(fields, "top_p")?;
    if let Some(k) = present(fields, "top_k") {
        match k.as_i64() {
            None if !k.is_u64() => return Err(invalid("top_k: Input should be a valid integer")),
            Some(k) if k < 0 => {
                return Err(invalid("top_k: Input should be greater than or equal to 0"));
            }
            _ => {}
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
    if let Some(tier) = present(fields, "service_tier")
        && !matches!(tier.as_str(), Some("auto" | "standard_only"))
    {
        return Err(invalid(
            "service_tier: Input should be 'auto' or 'standard_only'",
        ));
    }
    if let Some(c) = present(fields, "container")
        && !c.is_string()
        && !c.is_object()
    {
        return Err(invalid(
            "container: Input should be a valid string or object",
        ));
    }
    check_metadata(fields)?;
    let thinking = check_thinking(fields, budget_cap)?;
    let forced = check_tool_choice(fields)?;
    check_thinking_compatible(fields, thinking, forced)?;
    check_tools(fields)?;
    check_context_management(fields)?;
    check_mcp_servers(fields)
}

fn unit_interval(fields: &Map<String, Value>, name: &str) -> Result<(), Rejection> {
    match present(fields, name).map(Value::as_f64) {
        None => Ok(()),
        Some(None) => Err(invalid(format!("{name}: Input should be a valid number"))),
        Some(Some(v)) if !(0.0..=1.0).contains(&v) => Err(invalid(format!(
            "{name}: Input should be between 0 and 1 (inclusive)"
        ))),
        Some(Some(_)) => Ok(()),
    }
}

/// An optional field that must be an object, if present.
fn object<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, Rejection> {
    match present(fields, name) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(invalid(format!(
            "{name}: Input should be a valid dictionary"
        ))),
    }
}

/// An optional field that must be a list of objects, if present.
fn objects<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
) -> Result<Vec<&'a Map<String, Value>>, Rejection> {
    let Some(value) = present(fields, name) else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = value else {
        return Err(invalid(format!("{name}: Input should be a valid list")));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_object()
                .ok_or_else(|| invalid(format!("{name}.{i}: Input should be a valid dictionary")))
        })
        .collect()
}

/// A field that must be a string when `required` says so or it is present.
fn string<'a>(
    fields: &'a Map<String, Value>,
    at: &str,
    name: &str,
    required: bool,
) -> Result<Option<&'a str>, Rejection> {
    match present(fields, name) {
        None if required => Err(invalid(format!("{at}.{name}: Field required"))),
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!(
            "{at}.{name}: Input should be a valid string"
        ))),
    }
}

/// The tag of a tagged-union field, refused as pydantic words it when it is
/// not one of `tags`.
fn tag<'a>(value: &'a Map<String, Value>, at: &str, tags: &[&str]) -> Result<&'a str, Rejection> {
    let expected = tags
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    match value.get("type").and_then(Value::as_str) {
        Some(t) if tags.contains(&t) => Ok(t),
        Some(t) => Err(invalid(format!(
            "{at}: Input tag '{t}' found using 'type' does not match any of the expected tags: {expected}"
        ))),
        None => Err(invalid(format!(
            "{at}: Unable to extract tag using discriminator 'type'"
        ))),
    }
}

fn check_metadata(fields: &Map<String, Value>) -> Result<(), Rejection> {
    if let Some(metadata) = object(fields, "metadata")? {
        string(metadata, "metadata", "user_id", false)?;
    }
    Ok(())
}

/// Checks `thinking` and returns its type, if it is set.
fn check_thinking(
    fields: &Map<String, Value>,
    budget_cap: Option<u64>,
) -> Result<Option<&str>, Rejection> {
    let Some(thinking) = object(fields, "thinking")? else {
        return Ok(None);
    };
    let kind = tag(thinking, "thinking", &["enabled", "disabled", "adaptive"])?;
    if kind != "enabled" {
        return Ok(Some(kind));
    }
    let budget = match thinking.get("budget_tokens") {
        None => return Err(invalid("thinking.enabled.budget_tokens: Field required")),
        Some(b) => b.as_u64().ok_or_else(|| {
            invalid("thinking.enabled.budget_tokens: Input should be a valid integer")
        })?,
    };
    if budget < MIN_THINKING_BUDGET {
        return Err(invalid(format!(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_THINKING_BUDGET}"
        )));
    }
    match budget_cap {
        Some(max_tokens) if budget >= max_tokens => Err(invalid(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our \
             documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size",
        )),
        _ => Ok(Some(kind)),
    }
}

/// Checks `tool_choice` and returns whether it forces a tool call (`any`,
/// `tool`).
fn check_tool_choice(fields: &Map<String, Value>) -> Result<bool, Rejection> {
    let Some(choice) = object(fields, "tool_choice")? else {
        return Ok(false);
    };
    let kind = tag(choice, "tool_choice", &["auto", "any", "tool", "none"])?;
    if kind == "tool" {
        string(choice, "tool_choice.tool", "name", true)?;
    }
    Ok(matches!(kind, "any" | "tool"))
}

/// What the real API refuses beside thinking: a temperature other than 1
/// (with thinking enabled or adaptive) and a forced tool call (with thinking
/// enabled; whether adaptive thinking refuses it too is not known, so the
/// mock lets it pass rather than refuse what the API may take).
fn check_thinking_compatible(
    fields: &Map<String, Value>,
    thinking: Option<&str>,
    forced_tool: bool,
) -> Result<(), Rejection> {
    let on = matches!(thinking, Some("enabled" | "adaptive"));
    let temperature = present(fields, "temperature").and_then(Value::as_f64);
    if on && temperature.is_some_and(|t| t != 1.0) {
        return Err(invalid(
            "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode. \
             Please consult our documentation at \
             https://docs.claude.com/en/docs/build-with-claude/extended-thinking#important-considerations-when-using-extended-thinking",
        ));
    }
    if thinking == Some("enabled") && forced_tool {
        return Err(invalid(
            "Thinking may not be enabled when tool_choice forces tool use.",
        ));
    }
    Ok(())
}

/// Custom tools (no `type`, or `custom`) need a name the API's pattern
/// takes and an `input_schema` object; server tools (`web_search_…`,
/// `code_execution_…`, …) need a name and are otherwise never run.
fn check_tools(fields: &Map<String, Value>) -> Result<(), Rejection> {
    let mut names = Vec::new();
    for (i, tool) in objects(fields, "tools")?.into_iter().enumerate() {
        let at = format!("tools.{i}");
        let custom = matches!(
            tool.get("type").and_then(Value::as_str),
            None | Some("custom")
        );
        if tool
            .get("type")
            .is_some_and(|t| !t.is_string() && !t.is_null())
        {
            return Err(invalid(format!(
                "{at}.type: Input should be a valid string"
            )));
        }
        let name = string(tool, &at, "name", true)?.unwrap_or_default();
        if custom {
            let valid = (1..=128).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(invalid(format!(
                    "{at}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
                )));
            }
            object(tool, "input_schema")
                .map_err(|_| {
                    invalid(format!(
                        "{at}.input_schema: Input should be a valid dictionary"
                    ))
                })?
                .ok_or_else(|| invalid(format!("{at}.input_schema: Field required")))?;
        }
        if names.contains(&name) {
            return Err(invalid("tools: Tool names must be unique."));
        }
        names.push(name);
    }
    Ok(())
}

fn check_context_management(fields: &Map<String, Value>) -> Result<(), Rejection> {
    if let Some(management) = object(fields, "context_management")? {
        for (i, edit) in objects(management, "edits")
            .map_err(|e| invalid(format!("context_management.{}", e.message)))?
            .into_iter()
            .enumerate()
        {
            string(edit, &format!("context_management.edits.{i}"), "type", true)?;
        }
    }
    Ok(())
}

fn check_mcp_servers(fields: &Map<String, Value>) -> Result<(), Rejection> {
    for (i, server) in objects(fields, "mcp_servers")?.into_iter().enumerate() {
        let at = format!("mcp_servers.{i}");
        for name in ["type", "url", "name"] {
            string(server, &at, name, true)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refusal(extra: Value) -> Option<String> {
        let fields = extra.as_object().unwrap();
        check_options(fields, Some(32_000)).err().map(|r| r.message)
    }

    #[test]
    fn what_claude_code_sends_passes() {
        assert_eq!(
            refusal(json!({
                "thinking": {"type": "enabled", "budget_tokens": 31_999, "display": "omitted"},
                "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
                "metadata": {"user_id": "{\"device_id\":\"d\"}"},
                "tools": [
                    {"name": "Bash", "description": "d", "input_schema": {"type": "object"}},
                    {"name": "Later", "input_schema": {"type": "object"}, "defer_loading": true},
                    {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
                    {"type": "code_execution_20250825", "name": "code_execution"}
                ],
                "tool_choice": {"type": "auto"},
                "service_tier": "auto",
                "top_k": 5, "top_p": 0.9, "temperature": 1,
                "container": "container_1",
                "mcp_servers": [{"type": "url", "url": "https://example.com/sse", "name": "ex"}]
            })),
            None
        );
        assert_eq!(refusal(json!({"thinking": {"type": "adaptive"}})), None);
        assert_eq!(refusal(json!({"thinking": {"type": "disabled"}})), None);
        assert_eq!(
            refusal(
                json!({"thinking": {"type": "disabled"}, "temperature": 0, "tool_choice": {"type": "any"}})
            ),
            None
        );
    }

    #[test]
    fn malformed_options_name_the_field() {
        let cases = [
            (
                json!({"thinking": {"type": "on"}}),
                "thinking: Input tag 'on' found",
            ),
            (json!({"thinking": {}}), "thinking: Unable to extract tag"),
            (
                json!({"thinking": {"type": "enabled"}}),
                "thinking.enabled.budget_tokens: Field required",
            ),
            (
                json!({"thinking": {"type": "enabled", "budget_tokens": 1000}}),
                "thinking.enabled.budget_tokens: Input should be greater",
            ),
            (
                json!({"thinking": {"type": "enabled", "budget_tokens": 32_000}}),
                "`max_tokens` must be greater",
            ),
            (
                json!({"tool_choice": {"type": "tool"}}),
                "tool_choice.tool.name: Field required",
            ),
            (
                json!({"tool_choice": "auto"}),
                "tool_choice: Input should be a valid dictionary",
            ),
            (json!({"tools": {}}), "tools: Input should be a valid list"),
            (
                json!({"tools": [{"name": "a b", "input_schema": {}}]}),
                "tools.0.name: String should match",
            ),
            (
                json!({"tools": [{"name": "a"}]}),
                "tools.0.input_schema: Field required",
            ),
            (
                json!({"tools": [{"type": "web_search_20250305"}]}),
                "tools.0.name: Field required",
            ),
            (
                json!({"tools": [{"name": "a", "input_schema": {}}, {"name": "a", "input_schema": {}}]}),
                "tools: Tool names must be unique.",
            ),
            (json!({"top_k": -1}), "top_k: Input should be greater"),
            (
                json!({"top_k": 1.5}),
                "top_k: Input should be a valid integer",
            ),
            (json!({"top_p": 2}), "top_p: Input should be between"),
            (json!({"service_tier": "priority"}), "service_tier:"),
            (
                json!({"metadata": {"user_id": 5}}),
                "metadata.user_id: Input should be a valid string",
            ),
            (
                json!({"context_management": {"edits": [{}]}}),
                "context_management.edits.0.type: Field required",
            ),
            (
                json!({"context_management": {"edits": 1}}),
                "context_management.edits: Input should be a valid list",
            ),
            (
                json!({"mcp_servers": [{"type": "url", "name": "x"}]}),
                "mcp_servers.0.url: Field required",
            ),
            (json!({"container": 3}), "container:"),
            (
                json!({"thinking": {"type": "adaptive"}, "temperature": 0.5}),
                "`temperature` may only be set to 1 when thinking is enabled",
            ),
            (
                json!({"thinking": {"type": "enabled", "budget_tokens": 2048}, "tool_choice": {"type": "any"}}),
                "Thinking may not be enabled when tool_choice forces tool use.",
            ),
        ];
        for (extra, prefix) in cases {
            let message = refusal(extra.clone()).unwrap_or_else(|| panic!("{extra} was accepted"));
            assert!(
                message.starts_with(prefix),
                "{extra}: {message:?} should start with {prefix:?}"
            );
        }
    }
}
