//! Scripted tool use: three-turn conversations streamed and as messages,
//! the refusal of unanswered or stray tool calls, and the default scenario.

use mock_anthropic::{MockServer, Reported, Scenario, ToolCall};
use serde_json::{Value, json};

use crate::common::{KEY, body, post, streaming};
use crate::{assemble, block_events, call_ids, names, result, tool_turn};

/// The three-turn script both delivery tests play: Bash, then an edit, then
/// a closing text.
fn push_three_turns(server: &MockServer) {
    let bash = ToolCall::new(
        "Bash",
        json!({"command": "ls -la /workspace", "description": "List files"}),
    );
    let edit = ToolCall::new(
        "Edit",
        json!({"file_path": "/workspace/a.txt", "old_string": "hi", "new_string": "hello \"world\" é"}),
    );
    server.push(tool_turn("Let me look.", bash, 100, 20));
    server.push(tool_turn("", edit, 150, 30));
    server.push(Scenario::Reply {
        text: "All done.".into(),
        input_tokens: 200,
        output_tokens: 5,
    });
}

const THREE_TURNS_REPORTED: Reported = Reported {
    input_tokens: 450,
    output_tokens: 55,
    replies: 3,
};

#[test]
fn three_turn_tool_use_streamed_in_the_api_event_order() {
    let server = MockServer::start(KEY);
    push_three_turns(&server);
    let mut request = streaming("Tidy up /workspace");
    request["tools"] = json!([{"name": "Bash", "input_schema": {"type": "object"}}, {"name": "Edit", "input_schema": {"type": "object"}}]);

    let events = post(&server, &request).events();
    let text_deltas = events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "text_delta")
        .count();
    let json_deltas = events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
        .count();
    assert!(json_deltas >= 3, "the input arrives in a few pieces");
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(&block_events(text_deltas)[1..]);
    expected.extend(block_events(json_deltas));
    expected.extend(["message_delta", "message_stop"]);
    assert_eq!(names(&events), expected);
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 100);
    let tool_start = events
        .iter()
        .find(|(_, d)| d["content_block"]["type"] == "tool_use")
        .unwrap();
    let id = tool_start.1["content_block"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("toolu_01"), "{id}");
    assert_eq!(
        tool_start.1,
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": id, "name": "Bash", "input": {}}})
    );
    let first_json = events
        .iter()
        .find(|(_, d)| d["delta"]["type"] == "input_json_delta")
        .unwrap();
    assert_eq!(
        first_json.1["delta"]["partial_json"], "",
        "the API opens with an empty piece"
    );
    assert_eq!(
        events[events.len() - 2].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 20}})
    );
    let first = assemble(&events);
    assert_eq!(first[0], json!({"type": "text", "text": "Let me look."}));
    assert_eq!(
        first[1]["input"],
        json!({"command": "ls -la /workspace", "description": "List files"})
    );

    let mut messages = vec![request["messages"][0].clone()];
    messages.push(json!({"role": "assistant", "content": first}));
    messages.push(json!({"role": "user", "content": [result(&id, json!("a.txt\n"))]}));
    request["messages"] = json!(messages);
    let events = post(&server, &request).events();
    let json_deltas = events.len() - 6;
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(&block_events(json_deltas)[1..]);
    expected.extend(["message_delta", "message_stop"]);
    assert_eq!(
        names(&events),
        expected,
        "no text block when the turn says nothing"
    );
    let second = assemble(&events);
    assert_eq!(second[0]["name"], "Edit");
    assert_eq!(second[0]["input"]["new_string"], "hello \"world\" é");
    let edit_id = call_ids(&second)[0].clone();
    assert_ne!(edit_id, id);

    messages.push(json!({"role": "assistant", "content": second}));
    let listing = json!([{"type": "text", "text": "edit failed once"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]);
    messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": edit_id, "is_error": true, "content": listing}]}));
    request["messages"] = json!(messages);
    let events = post(&server, &request).events();
    assert_eq!(
        assemble(&events),
        vec![json!({"type": "text", "text": "All done."})]
    );
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "end_turn"
    );
    assert_eq!(server.reported(), THREE_TURNS_REPORTED);
}

#[test]
fn three_turn_tool_use_as_messages() {
    let server = MockServer::start(KEY);
    push_three_turns(&server);
    let mut request = body("Tidy up /workspace");

    let r = post(&server, &request);
    let first = r.json();
    let id = call_ids(first["content"].as_array().unwrap())[0].clone();
    let raw = String::from_utf8(r.body).unwrap();
    assert!(
        raw.contains(&format!(
            r#"{{"type":"tool_use","id":"{id}","name":"Bash","input":{{"#
        )),
        "tool_use fields in the API's order: {raw}"
    );
    assert_eq!(
        first,
        json!({
            "id": first["id"], "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": id, "name": "Bash", "input": {"command": "ls -la /workspace", "description": "List files"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 100, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 20}
        })
    );

    let mut messages = vec![request["messages"][0].clone()];
    messages.push(json!({"role": "assistant", "content": first["content"]}));
    messages.push(json!({"role": "user", "content": [result(&id, json!("a.txt"))]}));
    request["messages"] = json!(messages);
    let second = post(&server, &request).json();
    assert_eq!(second["stop_reason"], "tool_use");
    assert_eq!(second["content"].as_array().unwrap().len(), 1);
    assert_eq!(second["content"][0]["name"], "Edit");
    let edit_id = call_ids(second["content"].as_array().unwrap())[0].clone();

    messages.push(json!({"role": "assistant", "content": second["content"]}));
    messages.push(json!({"role": "user", "content": [result(&edit_id, json!("ok")), {"type": "text", "text": "thanks"}]}));
    request["messages"] = json!(messages);
    let third = post(&server, &request).json();
    assert_eq!(
        third["content"],
        json!([{"type": "text", "text": "All done."}])
    );
    assert_eq!(third["stop_reason"], "end_turn");
    assert_eq!(server.reported(), THREE_TURNS_REPORTED);
}

#[test]
fn unanswered_and_stray_tool_calls_are_refused() {
    let server = MockServer::start(KEY);
    server.push(Scenario::Overloaded);
    let call =
        json!({"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {"command": "ls"}});
    let conversation = |next: Value| {
        let mut b = body("go");
        b["messages"] = json!([{"role": "user", "content": "go"}, {"role": "assistant", "content": [call.clone()]}, next]);
        b
    };
    let r = post(
        &server,
        &conversation(json!({"role": "user", "content": "never mind"})),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error(),
        (
            "invalid_request_error".to_owned(),
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01A. \
             Each `tool_use` block must have a corresponding `tool_result` block in the next message."
                .to_owned()
        )
    );
    let stray = conversation(
        json!({"role": "user", "content": [result("toolu_01A", json!("ok")), result("toolu_01Z", json!("?"))]}),
    );
    let r = post(&server, &stray);
    assert_eq!(r.status, 400);
    assert!(r.error().1.starts_with(
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_01Z."
    ));
    let answered =
        conversation(json!({"role": "user", "content": [result("toolu_01A", json!("ok"))]}));
    assert_eq!(
        post(&server, &answered).status,
        529,
        "refusals consumed nothing"
    );
    assert_eq!(server.reported(), Reported::default());
}

#[test]
fn the_default_scenario_is_an_agent_that_never_stops() {
    let server = MockServer::start(KEY);
    server.set_default(tool_turn(
        "",
        ToolCall::new("Bash", json!({"command": "make"})),
        50,
        7,
    ));
    server.push(Scenario::Reply {
        text: "queued first".into(),
        input_tokens: 1,
        output_tokens: 1,
    });
    let mut request = streaming("build forever");
    let first = post(&server, &request).events();
    assert_eq!(
        assemble(&first),
        vec![json!({"type": "text", "text": "queued first"})]
    );

    let mut messages = vec![request["messages"][0].clone()];
    let mut ids = Vec::new();
    for turn in 0..5 {
        request["stream"] = json!(turn % 2 == 0);
        request["messages"] = json!(messages);
        let r = post(&server, &request);
        let content = if turn % 2 == 0 {
            assemble(&r.events())
        } else {
            r.json()["content"].as_array().unwrap().clone()
        };
        let id = call_ids(&content)[0].clone();
        assert!(!ids.contains(&id), "a fresh id every turn");
        ids.push(id.clone());
        messages.push(json!({"role": "assistant", "content": content}));
        messages.push(json!({"role": "user", "content": [result(&id, json!("built"))]}));
    }
    assert_eq!(
        server.reported(),
        Reported {
            input_tokens: 1 + 5 * 50,
            output_tokens: 1 + 5 * 7,
            replies: 6
        }
    );
}
