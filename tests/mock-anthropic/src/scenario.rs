//! What a test scripts: the [`Scenario`] an admitted request gets, and the
//! [`ToolCall`]s a scripted turn makes. Plain data that knows nothing about
//! HTTP; `plan` turns a scenario into an answer. Scenarios deserialize from
//! JSON (tagged by `type`, fields as named here) for the script files of
//! [`crate::Script`].

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// What the next admitted `POST /v1/messages` gets. Scenarios are consumed in
/// FIFO order, one per request that passes routing, authentication, the
/// version check and body validation; rejected requests and token counts
/// leave the queue alone. With the queue empty, requests get the scenario set
/// with [`crate::MockServer::set_default`], or else the default reply:
///
/// - text `"Mock reply to: "` + the first 40 characters of the last user
///   message's text;
/// - `input_tokens = ceil(prompt_chars / 4) + 8`, `prompt_chars` being the
///   character count of the system prompt plus all message text (string
///   contents, `text` blocks, and the text inside `tool_result` blocks);
/// - `output_tokens = words(reply) + 1`; if that exceeds `max_tokens`, the
///   reply is cut to its first `max_tokens - 1` words, `output_tokens =
///   max_tokens`, and `stop_reason` is `"max_tokens"` instead of
///   `"end_turn"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scenario {
    /// Reply with exactly this text and usage (`stop_reason: "end_turn"`),
    /// streamed or not as the request asks. `max_tokens` is not applied.
    Reply {
        text: String,
        input_tokens: u64,
        output_tokens: u64,
    },
    /// An assistant turn that calls tools (`stop_reason: "tool_use"`): a
    /// `text` block first unless `text` is empty, then one `tool_use` block
    /// per call, with exactly this usage. Streamed, each call's input arrives
    /// as `input_json_delta`s. `max_tokens` is not applied.
    ToolUse {
        #[serde(default)]
        text: String,
        calls: Vec<ToolCall>,
        input_tokens: u64,
        output_tokens: u64,
    },
    /// Answer with this status and error body. `retry_after` adds a
    /// `retry-after: SECONDS` header.
    Error {
        status: u16,
        kind: String,
        message: String,
        #[serde(default)]
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

/// One `tool_use` block of a [`Scenario::ToolUse`] turn.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// The block's id; when empty, each answer makes up a fresh `toolu_01…`,
    /// so a default scenario calls with a new id on every turn, as a model
    /// does.
    #[serde(default)]
    pub id: String,
    /// The tool's name, e.g. `Bash`.
    pub name: String,
    /// The tool's input; a JSON object, as the API's always is.
    pub input: Value,
}

impl ToolCall {
    /// A call of tool `name` with `input` and a fresh id on every answer.
    pub fn new(name: &str, input: Value) -> ToolCall {
        ToolCall {
            id: String::new(),
            name: name.to_owned(),
            input,
        }
    }
}

impl Scenario {
    /// Why the mock could not answer with this scenario, if it could not:
    /// a status that is no HTTP status, or a tool call the API never makes.
    pub(crate) fn problem(&self) -> Option<String> {
        match self {
            Scenario::Error { status, .. } if StatusCode::from_u16(*status).is_err() => {
                Some(format!("{status} is not an HTTP status code"))
            }
            Scenario::ToolUse { calls, .. } if calls.is_empty() => {
                Some("a tool_use turn needs at least one call".to_owned())
            }
            Scenario::ToolUse { calls, .. } => calls.iter().find_map(|call| {
                if call.name.is_empty() {
                    Some("a tool call needs a name".to_owned())
                } else if !call.input.is_object() {
                    Some(format!(
                        "tool call {}: input must be a JSON object",
                        call.name
                    ))
                } else {
                    None
                }
            }),
            _ => None,
        }
    }

    /// The input tokens this scenario's reply will report, when it names
    /// them; other scenarios report (if anything) the formula's count.
    pub(crate) fn named_input_tokens(&self) -> Option<u64> {
        match self {
            Scenario::Reply { input_tokens, .. } | Scenario::ToolUse { input_tokens, .. } => {
                Some(*input_tokens)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn problems_are_found() {
        let turn = |calls| Scenario::ToolUse {
            text: String::new(),
            calls,
            input_tokens: 1,
            output_tokens: 1,
        };
        assert_eq!(turn(vec![ToolCall::new("Bash", json!({}))]).problem(), None);
        assert!(turn(vec![]).problem().is_some());
        assert!(turn(vec![ToolCall::new("", json!({}))]).problem().is_some());
        assert!(
            turn(vec![ToolCall::new("Bash", json!("ls"))])
                .problem()
                .is_some()
        );
        let error = Scenario::Error {
            status: 99,
            kind: "api_error".into(),
            message: String::new(),
            retry_after: None,
        };
        assert!(error.problem().unwrap().contains("99"));
    }

    #[test]
    fn deserializes_by_type_tag() {
        let parsed: Scenario = serde_json::from_value(json!({
            "type": "tool_use",
            "calls": [{"name": "Bash", "input": {"command": "ls"}}],
            "input_tokens": 3,
            "output_tokens": 4
        }))
        .unwrap();
        assert_eq!(
            parsed,
            Scenario::ToolUse {
                text: String::new(),
                calls: vec![ToolCall::new("Bash", json!({"command": "ls"}))],
                input_tokens: 3,
                output_tokens: 4
            }
        );
        let hang: Scenario = serde_json::from_value(json!({"type": "hang"})).unwrap();
        assert_eq!(hang, Scenario::Hang);
        let typo = serde_json::from_value::<Scenario>(
            json!({"type": "rate_limited", "retry_after": 1, "retry": 2}),
        );
        assert!(typo.is_err(), "unknown fields are refused");
        let call = json!({"name": "Bash", "input": {}, "ids": "x"});
        assert!(serde_json::from_value::<ToolCall>(call).is_err());
    }
}
