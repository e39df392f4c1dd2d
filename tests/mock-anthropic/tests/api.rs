//! The library mock over the wire: admission, replies, streams, scripted
//! scenarios, recording and lifecycle.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::thread;
use std::time::{Duration, Instant};

use common::{Conn, KEY, body, post, post_with, streaming, valid_headers};
use mock_anthropic::{MockServer, Reported, Scenario};
use serde_json::{Value, json};

const RATE_HEADERS: [&str; 12] = [
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-limit",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
];

fn assert_common_headers(r: &common::Response) {
    let id = r.header("request-id").expect("request-id header");
    assert!(id.starts_with("req_") && id.len() > 10, "{id}");
    for name in RATE_HEADERS {
        let value = r.header(name).unwrap_or_else(|| panic!("missing {name}"));
        if name.ends_with("-reset") {
            // RFC 3339 UTC, second precision: 2025-01-01T00:00:00Z
            let b = value.as_bytes();
            assert_eq!(b.len(), 20, "{name}: {value}");
            assert_eq!(
                (b[4], b[7], b[10], b[13], b[16], b[19]),
                (b'-', b'-', b'T', b':', b':', b'Z')
            );
        } else {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}: {value}"));
        }
    }
}

fn error_scenario(status: u16, kind: &str) -> Scenario {
    Scenario::Error {
        status,
        kind: kind.to_owned(),
        message: format!("scripted {kind}"),
        retry_after: None,
    }
}

#[test]
fn authentication_is_required_and_checked() {
    let server = MockServer::start(KEY);
    let no_key = [("anthropic-version", "2023-06-01")];
    let wrong_key = [
        ("x-api-key", "sk-wrong"),
        ("anthropic-version", "2023-06-01"),
    ];
    for headers in [&no_key[..], &wrong_key[..]] {
        let r = post_with(&server, headers, body("hi").to_string().as_bytes());
        assert_eq!(r.status, 401);
        assert_eq!(r.error().0, "authentication_error");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_common_headers(&r);
    }
    let r = post_with(&server, &wrong_key, b"");
    assert_eq!(r.error().1, "invalid x-api-key");
    // The Python SDK 2.17 sends the key as a bearer token; a wrong one is
    // refused like a wrong x-api-key.
    let bearer = [
        ("authorization", "Bearer sk-wrong"),
        ("anthropic-version", "2023-06-01"),
    ];
    let r = post_with(&server, &bearer, b"{}");
    assert_eq!((r.status, r.error().1.as_str()), (401, "invalid x-api-key"));
    assert_eq!(server.reported(), Reported::default());
}

#[test]
fn anthropic_version_is_required() {
    let server = MockServer::start(KEY);
    let body = body("hi").to_string();
    let r = post_with(&server, &[("x-api-key", KEY)], body.as_bytes());
    assert_eq!(r.status, 400);
    let (kind, message) = r.error();
    assert_eq!(kind, "invalid_request_error");
    assert!(message.starts_with("anthropic-version:"), "{message}");

    let r = post_with(
        &server,
        &[("x-api-key", KEY), ("anthropic-version", "2099-01-01")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert!(r.error().1.starts_with("anthropic-version:"));
}

#[test]
fn unknown_paths_and_methods() {
    let server = MockServer::start(KEY);
    let mut conn = Conn::tcp(&server.url());
    let r = conn
        .send("POST", "/v1/complete", &valid_headers(), b"{}")
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.error().0, "not_found_error");
    assert_common_headers(&r);
    // Batches are not mocked, though they live under the Messages path.
    let r = conn
        .send("POST", "/v1/messages/batches", &valid_headers(), b"{}")
        .unwrap();
    assert_eq!(r.status, 404);
    // Routing comes before authentication, as on the real API.
    let r = conn.send("GET", "/", &[], b"").unwrap();
    assert_eq!(r.status, 404);

    let r = conn
        .send("GET", "/v1/messages", &valid_headers(), b"")
        .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(r.error().0, "invalid_request_error");
    assert_common_headers(&r);

    // A query string does not change the route.
    let r = conn
        .send(
            "POST",
            "/v1/messages?beta=true",
            &valid_headers(),
            body("q").to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn body_validation_names_the_field() {
    let server = MockServer::start(KEY);
    // A scripted scenario must survive every rejected request.
    server.push(Scenario::Overloaded);
    let valid = body("hello");
    let with = |field: &str, value: Value| {
        let mut b = valid.clone();
        b[field] = value;
        b.to_string()
    };
    let without = |field: &str| {
        let mut b = valid.clone();
        b.as_object_mut().unwrap().remove(field);
        b.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        ("not json".to_owned(), "There was an error parsing the body"),
        ("[1, 2]".to_owned(), "body:"),
        (without("model"), "model:"),
        (with("model", json!("")), "model:"),
        (with("model", json!(7)), "model:"),
        (without("max_tokens"), "max_tokens:"),
        (with("max_tokens", json!(0)), "max_tokens:"),
        (with("max_tokens", json!(-1)), "max_tokens:"),
        (with("max_tokens", json!(1.5)), "max_tokens:"),
        (with("max_tokens", json!("10")), "max_tokens:"),
        (without("messages"), "messages:"),
        (with("messages", json!([])), "messages:"),
        (with("messages", json!("hi")), "messages:"),
        (with("messages", json!(["hi"])), "messages.0:"),
        (
            with("messages", json!([{"content": "hi"}])),
            "messages.0.role:",
        ),
        (
            with("messages", json!([{"role": "tool", "content": "hi"}])),
            "messages.0.role:",
        ),
        (
            with("messages", json!([{"role": "system", "content": "hi"}])),
            "messages: first message",
        ),
        (
            with("messages", json!([{"role": "user"}])),
            "messages.0.content:",
        ),
        (
            with("messages", json!([{"role": "user", "content": 5}])),
            "messages.0.content:",
        ),
        (
            with(
                "messages",
                json!([{"role": "user", "content": [{"text": "x"}]}]),
            ),
            "messages.0.content.0.type:",
        ),
        (
            with(
                "messages",
                json!([{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": 1}]}]),
            ),
            "messages.1.content.0.text:",
        ),
        (
            with("messages", json!([{"role": "assistant", "content": "hi"}])),
            "messages:",
        ),
        (with("system", json!(42)), "system:"),
        (with("stream", json!("yes")), "stream:"),
        (with("temperature", json!("hot")), "temperature:"),
        (with("stop_sequences", json!("END")), "stop_sequences:"),
        (with("stop_sequences", json!([1])), "stop_sequences:"),
        (with("metadata", json!("x")), "metadata:"),
    ];
    for (body, prefix) in &cases {
        let r = post_with(&server, &valid_headers(), body.as_bytes());
        assert_eq!(r.status, 400, "{body}");
        let (kind, message) = r.error();
        assert_eq!(kind, "invalid_request_error", "{body}");
        assert!(
            message.starts_with(prefix),
            "{body}: {message:?} should start with {prefix:?}"
        );
    }
    // Optional fields of the right types, and fields the mock does not model,
    // are accepted.
    let mut accepted = valid.clone();
    accepted["system"] = json!([{"type": "text", "text": "be brief"}]);
    accepted["temperature"] = json!(0.5);
    accepted["stop_sequences"] = json!(["END"]);
    accepted["metadata"] = json!({"user_id": "u1"});
    accepted["tools"] = json!([{"name": "t", "input_schema": {"type": "object"}}]);
    accepted["thinking"] = json!({"type": "disabled"});
    let r = post(&server, &accepted);
    assert_eq!(r.status, 529, "the queued scenario is still first in line");
    assert_eq!(post(&server, &valid).status, 200);
}

#[test]
fn json_reply_has_the_message_shape_and_documented_usage() {
    let server = MockServer::start(KEY);
    let request = json!({
        "model": "claude-opus-4-1",
        "max_tokens": 100,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "What is the capital of France, and why?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]},
            {"role": "user", "content": [{"type": "text", "text": "Tell me more about Paris, the city of light, please"}]}
        ]
    });
    let r = post(&server, &request);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_common_headers(&r);
    let m = r.json();
    let id = m["id"].as_str().unwrap();
    assert!(id.starts_with("msg_"), "{id}");
    let expected_text = "Mock reply to: Tell me more about Paris, the city of li";
    assert_eq!(
        m,
        json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": "claude-opus-4-1",
            "content": [{"type": "text", "text": expected_text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 36,
                "output_tokens": 13,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0
            }
        })
    );
    // 14 + 39 + 6 + 51 = 110 chars -> ceil(110 / 4) + 8 = 36; 12 words + 1 = 13.
    assert_eq!(
        server.reported(),
        Reported {
            input_tokens: 36,
            output_tokens: 13,
            replies: 1
        }
    );
}

#[test]
fn max_tokens_truncates_the_default_reply() {
    let server = MockServer::start(KEY);
    let mut request = body("one two three four");
    request["max_tokens"] = json!(4);
    let m = post(&server, &request).json();
    assert_eq!(m["content"][0]["text"], "Mock reply to:");
    assert_eq!(m["usage"]["output_tokens"], 4);
    assert_eq!(m["stop_reason"], "max_tokens");
}

#[test]
fn sse_events_come_in_order_with_cumulative_usage() {
    let server = MockServer::start(KEY);
    let r = post(&server, &streaming("stream me a few words"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_common_headers(&r);
    let events = r.events();
    // Each event is its own chunk.
    assert_eq!(r.chunks.len(), events.len());
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "content_block_delta")
        .count();
    assert!(deltas >= 3, "{names:?}");
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    for (event, data) in &events {
        assert_eq!(data["type"], event.as_str(), "event line and type agree");
    }

    let start = &events[0].1["message"];
    assert_eq!(start["type"], "message");
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["model"], "claude-sonnet-4-5");
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    // "stream me a few words" is 21 chars -> 6 + 8.
    assert_eq!(start["usage"]["input_tokens"], 14);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(
        events[1].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );

    let text: String = events
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["index"], 0);
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "Mock reply to: stream me a few words");
    let delta = &events[events.len() - 2].1;
    assert_eq!(
        *delta,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}})
    );
    assert_eq!(
        server.reported(),
        Reported {
            input_tokens: 14,
            output_tokens: 9,
            replies: 1
        }
    );
}

#[test]
fn delta_delay_spaces_out_the_deltas() {
    let server = MockServer::start(KEY);
    let delay = Duration::from_millis(80);
    server.set_delta_delay(delay);
    let sent = Instant::now();
    let r = post(&server, &streaming("a b c"));
    let times: Vec<Instant> = r
        .chunks
        .iter()
        .zip(r.events())
        .filter(|(_, (e, _))| e == "content_block_delta")
        .map(|((at, _), _)| *at)
        .collect();
    // "Mock reply to: a b c" gives six deltas, five pauses between them.
    assert_eq!(times.len(), 6);
    // The last delta cannot arrive before the server has paused five times.
    assert!(times[5] - sent >= delay * 5, "{:?}", times[5] - sent);
    // The first arrived well before the last, so the deltas were not held
    // back and sent together. (A slow reader on a busy machine can lose up
    // to a pause here, hence four rather than five.)
    assert!(
        times[5] - times[0] >= delay * 4,
        "{:?}",
        times[5] - times[0]
    );
}

#[test]
fn streamed_truncation_reports_max_tokens() {
    let server = MockServer::start(KEY);
    let mut request = streaming("one two three");
    request["max_tokens"] = json!(2);
    let events = post(&server, &request).events();
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 2);
    assert_eq!(server.reported().output_tokens, 2);
}

#[test]
fn scripted_errors_have_real_statuses_and_shapes() {
    let server = MockServer::start(KEY);
    let cases = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ];
    for (status, kind) in cases {
        // Streaming requests get the same JSON error: the stream never starts.
        for request in [body("x"), streaming("x")] {
            server.push(error_scenario(status, kind));
            let r = post(&server, &request);
            assert_eq!(r.status, status);
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("retry-after"), None);
            assert_common_headers(&r);
            assert_eq!(r.error(), (kind.to_owned(), format!("scripted {kind}")));
        }
    }

    server.push(Scenario::RateLimited { retry_after: 17 });
    let r = post(&server, &body("x"));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("17"));
    assert_eq!(r.error().0, "rate_limit_error");

    server.push(Scenario::Error {
        status: 529,
        kind: "overloaded_error".into(),
        message: "busy".into(),
        retry_after: Some(3),
    });
    let r = post(&server, &body("x"));
    assert_eq!(r.header("retry-after"), Some("3"));

    server.push(Scenario::Overloaded);
    let r = post(&server, &streaming("x"));
    assert_eq!(r.status, 529);
    assert_eq!(
        r.error(),
        ("overloaded_error".to_owned(), "Overloaded".to_owned())
    );

    assert_eq!(
        server.reported(),
        Reported::default(),
        "errors report no usage"
    );
}

#[test]
#[should_panic(expected = "not an HTTP status code")]
fn pushing_an_invalid_status_panics() {
    MockServer::start(KEY).push(error_scenario(1000, "api_error"));
}

#[test]
fn mid_stream_error_ends_the_stream_with_an_error_event() {
    let server = MockServer::start(KEY);
    server.push(Scenario::MidStreamError { after_deltas: 2 });
    let r = post(&server, &streaming("hello there"));
    assert_eq!(r.status, 200);
    let events = r.events();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(
        events[5].1,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    // More deltas than the reply has words: the words repeat.
    server.push(Scenario::MidStreamError { after_deltas: 9 });
    let events = post(&server, &streaming("hi")).events();
    assert_eq!(
        events
            .iter()
            .filter(|(e, _)| e == "content_block_delta")
            .count(),
        9
    );

    server.push(Scenario::MidStreamError { after_deltas: 2 });
    let r = post(&server, &body("not streaming"));
    assert_eq!(r.status, 500);
    assert_eq!(r.error().0, "api_error");
    assert_eq!(
        server.reported(),
        Reported::default(),
        "failed streams are not reported"
    );
}

#[test]
fn scenarios_are_consumed_in_order_then_the_default_applies() {
    let server = MockServer::start(KEY);
    server.push(Scenario::Reply {
        text: "first".into(),
        input_tokens: 100,
        output_tokens: 7,
    });
    server.push(Scenario::RateLimited { retry_after: 1 });
    server.push(Scenario::Reply {
        text: "third reply text".into(),
        input_tokens: 5,
        output_tokens: 3,
    });

    let m = post(&server, &body("a")).json();
    assert_eq!(m["content"][0]["text"], "first");
    assert_eq!(m["usage"]["input_tokens"], 100);
    assert_eq!(m["usage"]["output_tokens"], 7);
    assert_eq!(m["stop_reason"], "end_turn");

    // An invalid request in between consumes nothing.
    assert_eq!(post_with(&server, &valid_headers(), b"{}").status, 400);
    assert_eq!(post(&server, &body("b")).status, 429);

    let events = post(&server, &streaming("c")).events();
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 5);
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "third reply text");
    assert_eq!(events[events.len() - 2].1["usage"]["output_tokens"], 3);

    let m = post(&server, &body("d")).json();
    assert_eq!(m["content"][0]["text"], "Mock reply to: d");
    assert_eq!(
        server.reported(),
        // 100+7, 5+3, and the default reply to "d": 1 char -> 1 + 8, 4 words + 1.
        Reported {
            input_tokens: 114,
            output_tokens: 15,
            replies: 3
        }
    );
}

#[test]
fn every_request_is_recorded_in_order() {
    let server = MockServer::start(KEY);
    let before = Instant::now();
    let mut conn = Conn::tcp(&server.url());
    let headers = [
        ("x-api-key", KEY),
        ("anthropic-version", "2023-06-01"),
        ("Anthropic-Beta", "oauth-2025-04-20"),
    ];
    let sent = body("recorded").to_string();
    conn.send("POST", "/v1/messages?beta=true", &headers, sent.as_bytes())
        .unwrap();
    conn.send("POST", "/v1/messages", &[("x-api-key", "nope")], b"{}")
        .unwrap();
    conn.send("DELETE", "/v1/models", &[], b"").unwrap();

    let recorded = server.requests();
    assert_eq!(recorded.len(), 3);
    let first = &recorded[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/messages");
    assert_eq!(first.query.as_deref(), Some("beta=true"));
    assert_eq!(first.status, 200);
    assert_eq!(first.body, sent.as_bytes());
    assert_eq!(first.json(), Some(body("recorded")));
    assert_eq!(first.header("anthropic-beta"), Some("oauth-2025-04-20"));
    assert_eq!(first.header("X-API-KEY"), Some(KEY));
    assert!(
        first.headers.iter().any(|(n, _)| n == "anthropic-beta"),
        "names are lowercased"
    );
    assert!(first.at >= before);

    assert_eq!(
        (recorded[1].status, recorded[1].json()),
        (401, Some(json!({})))
    );
    assert_eq!(recorded[2].method, "DELETE");
    assert_eq!(recorded[2].path, "/v1/models");
    assert_eq!(recorded[2].query, None);
    assert_eq!(recorded[2].status, 404);
    assert!(recorded[2].json().is_none());
    assert!(recorded[0].at <= recorded[1].at && recorded[1].at <= recorded[2].at);
}

#[test]
fn rate_limit_headers_count_requests_and_tokens() {
    let server = MockServer::start(KEY);
    let first = post(&server, &body("x"));
    let second = post(&server, &body("x"));
    let remaining = |r: &common::Response, name: &str| -> u64 {
        r.header(&format!("anthropic-ratelimit-{name}-remaining"))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        remaining(&first, "requests") - remaining(&second, "requests"),
        1
    );
    // Each default reply to "x" costs 9 input and 5 output tokens.
    assert_eq!(
        remaining(&first, "input-tokens") - remaining(&second, "input-tokens"),
        9
    );
    assert_eq!(
        remaining(&first, "output-tokens") - remaining(&second, "output-tokens"),
        5
    );
    assert_eq!(
        first.header("anthropic-ratelimit-requests-reset"),
        second.header("anthropic-ratelimit-requests-reset"),
        "one window"
    );
}

#[test]
fn oversized_bodies_get_413() {
    let server = MockServer::start(KEY);
    server.set_max_request_bytes(1000);
    server.push(Scenario::Overloaded);
    let big = body(&"x".repeat(5000)).to_string();
    let r = post_with(&server, &valid_headers(), big.as_bytes());
    assert_eq!(r.status, 413);
    assert_eq!(r.error().0, "request_too_large");
    let recorded = server.requests();
    assert_eq!((recorded[0].status, recorded[0].body.len()), (413, 1000));
    // Authentication still comes first.
    let r = post_with(
        &server,
        &[("anthropic-version", "2023-06-01")],
        big.as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert_eq!(post(&server, &body("small")).status, 529, "queue untouched");
}

#[test]
fn keep_alive_and_connection_close() {
    let server = MockServer::start(KEY);
    let mut conn = Conn::tcp(&server.url());
    let headers = valid_headers();
    for request in [body("one"), streaming("two"), json!({}), body("four")] {
        let r = conn
            .send(
                "POST",
                "/v1/messages",
                &headers,
                request.to_string().as_bytes(),
            )
            .unwrap();
        assert!(r.status == 200 || r.status == 400);
    }
    assert_eq!(server.requests().len(), 4);

    let mut closing = headers.clone();
    closing.push(("connection", "close"));
    let r = conn
        .send(
            "POST",
            "/v1/messages",
            &closing,
            body("five").to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(conn.closed_by_server());
}

#[test]
fn hang_never_answers_and_drop_is_prompt() {
    let server = MockServer::start(KEY);
    server.push(Scenario::Hang);
    let url = server.url();
    let client = thread::spawn(move || {
        Conn::tcp(&url).send(
            "POST",
            "/v1/messages",
            &valid_headers(),
            body("wait").to_string().as_bytes(),
        )
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.requests().is_empty() {
        assert!(Instant::now() < deadline, "request never arrived");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.requests()[0].status, 0);
    thread::sleep(Duration::from_millis(100));
    assert!(!client.is_finished(), "a hung request got an answer");

    let dropping = Instant::now();
    drop(server);
    assert!(
        dropping.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        dropping.elapsed()
    );
    let outcome = client.join().unwrap();
    assert!(
        outcome.is_err(),
        "the connection is closed without a response"
    );
}

#[test]
fn drop_is_prompt_mid_stream() {
    let server = MockServer::start(KEY);
    server.set_delta_delay(Duration::from_secs(30));
    let url = server.url();
    let client = thread::spawn(move || {
        Conn::tcp(&url).send(
            "POST",
            "/v1/messages",
            &valid_headers(),
            streaming("slow stream").to_string().as_bytes(),
        )
    });
    while server.requests().is_empty() {
        thread::sleep(Duration::from_millis(10));
    }
    let dropping = Instant::now();
    drop(server);
    assert!(dropping.elapsed() < Duration::from_secs(2));
    assert!(client.join().unwrap().is_err(), "stream cut short");
}

#[test]
fn serves_on_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("mock-anthropic-{}.sock", std::process::id()));
    let server = MockServer::start_unix(KEY, &path);
    assert_eq!(server.url(), path.display().to_string());
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);

    let mut conn = Conn::unix(&path);
    let r = conn
        .send(
            "POST",
            "/v1/messages",
            &valid_headers(),
            body("over unix").to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["content"][0]["text"], "Mock reply to: over unix");
    let r = conn
        .send(
            "POST",
            "/v1/messages",
            &valid_headers(),
            streaming("again").to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.events().last().unwrap().0, "message_stop");
    assert_eq!(server.reported().replies, 2);

    drop(server);
    assert!(!path.exists(), "socket removed on drop");

    // A regular file at the path is never clobbered.
    std::fs::write(&path, b"precious").unwrap();
    assert!(MockServer::listen_unix(KEY, &path).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_file(&path).unwrap();

    // A stale socket from a crashed run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = MockServer::start_unix(KEY, &path);
    let r = Conn::unix(&path).send(
        "POST",
        "/v1/messages",
        &valid_headers(),
        body("again").to_string().as_bytes(),
    );
    assert_eq!(r.unwrap().status, 200);
    drop(server);
}

#[test]
fn refuses_non_loopback_addresses() {
    let err = MockServer::listen(KEY, "0.0.0.0:0".parse().unwrap())
        .err()
        .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(MockServer::listen(KEY, "192.0.2.1:0".parse().unwrap()).is_err());
}

#[test]
fn concurrent_clients_are_all_served() {
    let server = MockServer::start(KEY);
    let url = server.url();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            thread::spawn(move || {
                let mut conn = Conn::tcp(&url);
                for j in 0..5 {
                    let request = if j % 2 == 0 {
                        body(&format!("c{i}"))
                    } else {
                        streaming(&format!("c{i}"))
                    };
                    let r = conn
                        .send(
                            "POST",
                            "/v1/messages",
                            &valid_headers(),
                            request.to_string().as_bytes(),
                        )
                        .unwrap();
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(server.reported().replies, 40);
    assert_eq!(server.requests().len(), 40);
}

#[test]
fn usable_from_inside_an_async_runtime() {
    // Async tests start and drop the mock on a runtime thread; neither may
    // panic for nesting runtimes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = MockServer::start(KEY);
        let url = server.url();
        let status = tokio::task::spawn_blocking(move || {
            Conn::tcp(&url)
                .send(
                    "POST",
                    "/v1/messages",
                    &valid_headers(),
                    body("async").to_string().as_bytes(),
                )
                .unwrap()
                .status
        })
        .await
        .unwrap();
        assert_eq!(status, 200);
        drop(server);
    });
}
