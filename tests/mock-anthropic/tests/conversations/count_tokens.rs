//! `POST /v1/messages/count_tokens`: its shape, its agreement with the next
//! turn, and its admission checks.

use mock_anthropic::{MockServer, Reported, Scenario, ToolCall};
use serde_json::{Value, json};

use crate::common::{self, Conn, KEY, post, valid_headers};
use crate::tool_turn;

/// POSTs to the token counting endpoint (with `target` giving its query).
fn count(
    server: &MockServer,
    target: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> common::Response {
    Conn::tcp(&server.url())
        .send("POST", target, headers, body.to_string().as_bytes())
        .unwrap()
}

fn count_body(text: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": text}], "system": "be brief"})
}

#[test]
fn count_tokens_agrees_with_the_next_turn_and_consumes_nothing() {
    let server = MockServer::start(KEY);
    let path = "/v1/messages/count_tokens";
    // "be brief" + "count these words" = 25 chars -> 7 tokens, + 8.
    let r = count(
        &server,
        path,
        &valid_headers(),
        &count_body("count these words"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("request-id").unwrap().starts_with("req_"));
    assert!(r.header("anthropic-ratelimit-requests-remaining").is_some());
    assert_eq!(r.json(), json!({"input_tokens": 15}));
    let mut same = count_body("count these words");
    same["max_tokens"] = json!(100);
    assert_eq!(
        post(&server, &same).json()["usage"]["input_tokens"],
        15,
        "the default reply agrees"
    );

    server.push(tool_turn("", ToolCall::new("Bash", json!({})), 777, 3));
    let r = count(
        &server,
        &format!("{path}?beta=true"),
        &valid_headers(),
        &count_body("x"),
    );
    assert_eq!(
        r.json(),
        json!({"input_tokens": 777}),
        "the next turn names its input"
    );
    assert_eq!(
        post(&server, &same).json()["usage"]["input_tokens"],
        777,
        "and was not consumed"
    );
    server.push(Scenario::Overloaded);
    assert_eq!(
        count(&server, path, &valid_headers(), &count_body("x")).json(),
        json!({"input_tokens": 11}),
        "a next scenario that names no input: the formula, 9 chars -> 3 + 8"
    );
    server.set_default(Scenario::Reply {
        text: "d".into(),
        input_tokens: 42,
        output_tokens: 1,
    });
    assert_eq!(post(&server, &same).status, 529);
    assert_eq!(
        count(&server, path, &valid_headers(), &count_body("x")).json(),
        json!({"input_tokens": 42})
    );
    assert_eq!(
        server.reported(),
        Reported {
            input_tokens: 15 + 777,
            // The default reply to "count these words" has 6 words, + 1.
            output_tokens: 7 + 3,
            replies: 2
        }
    );

    let refused = [
        (
            count(
                &server,
                path,
                &[("anthropic-version", "2023-06-01")],
                &count_body("x"),
            )
            .status,
            401,
        ),
        (
            count(&server, path, &[("x-api-key", KEY)], &count_body("x")).status,
            400,
        ),
        (
            count(&server, path, &valid_headers(), &json!({"messages": []})).status,
            400,
        ),
        (
            Conn::tcp(&server.url())
                .send("GET", path, &valid_headers(), b"")
                .unwrap()
                .status,
            405,
        ),
    ];
    for (got, want) in refused {
        assert_eq!(got, want);
    }
    let recorded = server.requests();
    let counts: Vec<_> = recorded.iter().filter(|r| r.path == path).collect();
    assert_eq!(counts.len(), 8, "counts are recorded, refused ones too");
    assert_eq!(counts[1].query.as_deref(), Some("beta=true"));
}
