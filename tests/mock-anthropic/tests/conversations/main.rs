//! Multi-turn conversations over the wire: scripted tool use streamed and
//! not, the pairing of tool calls with results, the default scenario, token
//! counting, and the fields real clients (Claude Code, the Python SDK) send.
//! One module per topic; the helpers here read streams as a client does.

#[path = "../common/mod.rs"]
mod common;

mod clients;
mod count_tokens;
mod tool_use;

use mock_anthropic::{Scenario, ToolCall};
use serde_json::{Value, json};

pub fn tool_turn(text: &str, call: ToolCall, input_tokens: u64, output_tokens: u64) -> Scenario {
    Scenario::ToolUse {
        text: text.to_owned(),
        calls: vec![call],
        input_tokens,
        output_tokens,
    }
}

pub fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(e, _)| e.as_str()).collect()
}

/// The event names of a streamed block: its start, `deltas` deltas, its stop.
pub fn block_events(deltas: usize) -> Vec<&'static str> {
    let mut names = vec!["content_block_start"];
    names.extend(std::iter::repeat_n("content_block_delta", deltas));
    names.push("content_block_stop");
    names
}

/// Rebuilds the assistant message's content from a stream as a client does:
/// text deltas appended, `partial_json` pieces joined and parsed at the stop.
pub fn assemble(events: &[(String, Value)]) -> Vec<Value> {
    let mut blocks: Vec<Value> = Vec::new();
    let mut json = String::new();
    for (name, data) in events {
        let index = data["index"].as_u64().map(|i| i as usize);
        match name.as_str() {
            "content_block_start" => {
                assert_eq!(index, Some(blocks.len()), "blocks start in order");
                blocks.push(data["content_block"].clone());
                json.clear();
            }
            "content_block_delta" => {
                let block = &mut blocks[index.unwrap()];
                let delta = &data["delta"];
                match delta["type"].as_str().unwrap() {
                    "text_delta" => {
                        let text = format!(
                            "{}{}",
                            block["text"].as_str().unwrap(),
                            delta["text"].as_str().unwrap()
                        );
                        block["text"] = json!(text);
                    }
                    "input_json_delta" => json.push_str(delta["partial_json"].as_str().unwrap()),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let block = &mut blocks[index.unwrap()];
                if block["type"] == "tool_use" {
                    block["input"] = serde_json::from_str(&json).unwrap();
                }
            }
            _ => {}
        }
    }
    blocks
}

/// The ids of the `tool_use` blocks in `content`.
pub fn call_ids(content: &[Value]) -> Vec<String> {
    content
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

pub fn result(id: &str, content: Value) -> Value {
    json!({"type": "tool_result", "tool_use_id": id, "content": content})
}
