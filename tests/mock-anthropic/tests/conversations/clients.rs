//! Requests shaped like the real clients': Claude Code 2.1 and the Python
//! SDK 2.17.

use mock_anthropic::MockServer;
use serde_json::json;

use crate::common::{Conn, KEY, body, post, post_with, valid_headers};

/// A request shaped like Claude Code 2.1's: `?beta=true`, its beta values,
/// extended thinking, context management, cached system blocks, custom
/// tools with deferred loading beside server tools, and `system` messages
/// after user messages.
#[test]
fn what_claude_code_and_the_sdk_send_is_accepted() {
    let server = MockServer::start(KEY);
    let betas = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,mid-conversation-system-2026-04-07";
    let mut headers = valid_headers();
    headers.push(("anthropic-beta", betas));
    let call =
        json!({"type": "tool_use", "id": "toolu_01B", "name": "Bash", "input": {"command": "ls"}});
    let request = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 31999, "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "{\"device_id\":\"d\",\"session_id\":\"s\"}"},
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"}, {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "tools": [
            {"name": "Bash", "description": "Run", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}},
            {"name": "DeferredToolPlaceholder", "description": "d", "input_schema": {"type": "object", "properties": {}}, "defer_loading": true},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"type": "web_fetch_20250910", "name": "web_fetch"},
            {"type": "code_execution_20250825", "name": "code_execution"}
        ],
        "tool_choice": {"type": "auto"},
        "service_tier": "auto",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "go", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "# Environment"},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01B", "content": "a.txt", "is_error": false, "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": [{"type": "text", "text": "<total_tokens>1</total_tokens>", "cache_control": {"type": "ephemeral"}}]}
        ]
    });
    let r = Conn::tcp(&server.url())
        .send(
            "POST",
            "/v1/messages?beta=true",
            &headers,
            request.to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.events().last().unwrap().0, "message_stop");

    // A budget past max_tokens passes only under the interleaved-thinking beta.
    let mut over = request.clone();
    over["thinking"]["budget_tokens"] = json!(40000);
    let r = Conn::tcp(&server.url())
        .send(
            "POST",
            "/v1/messages",
            &headers,
            over.to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let r = post(&server, &over);
    assert_eq!(r.status, 400);
    assert!(
        r.error()
            .1
            .starts_with("`max_tokens` must be greater than `thinking.budget_tokens`")
    );

    // The Python SDK 2.17 sends its key as a bearer token, and a newer version.
    let sdk = [
        ("authorization", "Bearer sk-ant-api03-test"),
        ("anthropic-version", "2026-10-21"),
    ];
    assert_eq!(
        post_with(&server, &sdk, body("hi").to_string().as_bytes()).status,
        200
    );
    let wrong = [
        ("authorization", "Bearer other"),
        ("anthropic-version", "2026-10-21"),
    ];
    assert_eq!(
        post_with(&server, &wrong, body("hi").to_string().as_bytes()).status,
        401
    );
}
