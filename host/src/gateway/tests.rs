//! End-to-end tests: a real gateway on a Unix socket in a temp folder, a
//! scripted fake upstream on 127.0.0.1, and a client speaking HTTP/1.1 over
//! the socket the way a container does.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Response, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::service::MAX_BODY_BYTES;
use super::test_upstream::{
    Client, FakeUpstream, RecordingMeter, Reply, SSE_OVERLOADED, Step, body, pieces, post,
    read_all, request, sse_head, sse_tail, sse_text_delta,
};
use super::*;

const OWNER_KEY: &str = "sk-ant-api03-OWNER-9f8e7d6c5b4a-secret";
const MODEL: &str = "claude-sonnet-4-5";
const WAIT: Duration = Duration::from_secs(10);
/// The last bytes of the `message_start` event and of the whole stream.
const START_DONE: &str = "\"output_tokens\":1}}}\n\n";
const STREAM_DONE: &str = "{\"type\":\"message_stop\"}\n\n";

struct Harness {
    dir: tempfile::TempDir,
    socket: PathBuf,
    gateway: Gateway,
    meter: Arc<RecordingMeter>,
    upstream: FakeUpstream,
}

fn grant(budget_tokens: u64, max_requests: u32) -> JobGrant {
    JobGrant {
        job_id: "job-42".into(),
        allowed_models: vec![MODEL.into()],
        budget_tokens,
        max_requests,
        egress: false,
        allowed_betas: vec![
            "prompt-caching-2024-07-31".into(),
            "token-efficient-tools-2025-02-19".into(),
        ],
    }
}

/// A token count's reply.
fn count(tokens: u64) -> Reply {
    Reply::json(200, &format!(r#"{{"input_tokens":{tokens}}}"#))
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    }
}

fn upstream_at(base_url: String, retry: RetryPolicy) -> Upstream {
    Upstream {
        base_url,
        key: ApiKey::new(OWNER_KEY).expect("owner key"),
        retry,
    }
}

async fn harness_with(replies: Vec<Reply>, grant: JobGrant, retry: RetryPolicy) -> Harness {
    let upstream = FakeUpstream::start(replies).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("gateway.sock");
    let meter = Arc::new(RecordingMeter::default());
    let gateway = Gateway::start(
        &socket,
        None,
        grant,
        upstream_at(upstream.base_url.clone(), retry),
        meter.clone(),
    )
    .await
    .expect("gateway starts");
    Harness {
        dir,
        socket,
        gateway,
        meter,
        upstream,
    }
}

async fn harness(replies: Vec<Reply>) -> Harness {
    harness_with(replies, grant(10_000, 100), fast_retry()).await
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("JSON reply")
}

fn error_type(text: &str) -> String {
    json(text)["error"]["type"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Reads the body until it contains `needle`; panics if the body ends first.
async fn read_until(body: &mut Incoming, seen: &mut String, needle: &str) {
    while !seen.contains(needle) {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("a chunk arrives while the upstream stream is still open")
            .expect("body not finished")
            .expect("body frame");
        if let Ok(data) = frame.into_data() {
            seen.push_str(std::str::from_utf8(&data).expect("UTF-8"));
        }
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn gated_stream(head: &str, rest: &str) -> (Reply, oneshot::Sender<()>) {
    let (go, wait) = oneshot::channel();
    let mut steps = pieces(head, 5);
    steps.push(Step::WaitFor(wait));
    steps.extend(pieces(rest, 5));
    (
        Reply::Stream {
            headers: Vec::new(),
            steps,
        },
        go,
    )
}

#[tokio::test]
async fn owner_key_replaces_client_credentials_and_headers_pass_through() {
    let h = harness(vec![Reply::message(10, 5)]).await;
    let sent_body = body(MODEL, 100, false);
    let mut client = Client::connect(&h.socket).await;
    let response = client
        .send(request(
            Method::POST,
            "/v1/messages?beta=true",
            &[
                ("x-api-key", "sk-container-bogus"),
                ("authorization", "Bearer container-bogus"),
                ("anthropic-version", "2023-01-01"),
                (
                    "anthropic-beta",
                    "prompt-caching-2024-07-31,web-fetch-2025-09-10",
                ),
                (
                    "anthropic-beta",
                    "token-efficient-tools-2025-02-19, made-up-2030-01-01",
                ),
                ("content-type", "application/json; charset=utf-8"),
                ("x-stainless-os", "Linux"),
            ],
            http_body_util::Full::new(Bytes::from(sent_body.clone())).boxed_unsync(),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    {
        let received = h.upstream.received();
        assert_eq!(received.len(), 1);
        let got = &received[0];
        assert_eq!(got.method, Method::POST);
        assert_eq!(got.path_and_query, "/v1/messages?beta=true");
        assert_eq!(got.body, sent_body.as_bytes());
        assert_eq!(got.headers["x-api-key"], OWNER_KEY);
        assert_eq!(got.headers.get_all("x-api-key").iter().count(), 1);
        assert!(got.headers.get("authorization").is_none());
        assert!(got.headers.get("x-stainless-os").is_none());
        assert_eq!(got.headers["content-type"], "application/json");
        assert_eq!(got.headers["anthropic-version"], "2023-01-01");
        assert_eq!(
            got.headers["anthropic-beta"],
            "prompt-caching-2024-07-31,token-efficient-tools-2025-02-19",
            "betas off the allow-list (and those for egress) are dropped"
        );
    }
    eventually("the request is recorded", || h.meter.requests().len() == 1).await;
    let record = &h.meter.requests()[0];
    assert_eq!(
        record.betas_dropped,
        ["web-fetch-2025-09-10", "made-up-2030-01-01"]
    );
    assert_eq!(
        (record.status, record.input_tokens, record.output_tokens),
        (200, 10, 5)
    );
    assert_eq!(record.request_id.as_deref(), Some("req_fake_01"));
}

#[tokio::test]
async fn anthropic_version_defaults_when_the_client_sends_none() {
    let h = harness(vec![Reply::message(1, 1)]).await;
    let (status, _, _) = post(&h.socket, &[], &body(MODEL, 10, false)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h.upstream.received()[0].headers["anthropic-version"],
        "2023-06-01"
    );
}

#[tokio::test]
async fn json_reply_is_passed_back_and_metered() {
    let h = harness(vec![Reply::message(25, 40)]).await;
    let (status, headers, text) = post(&h.socket, &[], &body(MODEL, 100, false)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&text)["usage"]["output_tokens"], 40);
    assert_eq!(headers["request-id"], "req_fake_01");
    assert_eq!(headers["anthropic-ratelimit-requests-remaining"], "49");
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.get("anthropic-organization-id").is_none());
    assert!(headers.get("set-cookie").is_none());

    let expected = Metered {
        requests: 1,
        input_tokens: 25,
        output_tokens: 40,
        ..Metered::default()
    };
    eventually("usage metered", || h.gateway.totals() == expected).await;
    assert_eq!(h.meter.usages().last(), Some(&expected));
    assert_eq!(h.gateway.shutdown().await, expected);
}

#[tokio::test]
async fn sse_reply_is_metered_with_cumulative_message_deltas() {
    let text = format!(
        "{}{}{}{}",
        sse_head(25, 100),
        sse_text_delta("Hel"),
        sse_text_delta("lo"),
        sse_tail(&[7, 15])
    );
    let h = harness(vec![Reply::sse(&text, 7)]).await;
    let (status, headers, received) = post(&h.socket, &[], &body(MODEL, 100, true)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(received, text, "the stream reaches the client unchanged");

    // Input includes the prompt-cache read; output is the last cumulative
    // count (15), not the sum of the deltas (22).
    let expected = Metered {
        requests: 1,
        input_tokens: 125,
        output_tokens: 15,
        ..Metered::default()
    };
    eventually("usage metered", || h.gateway.totals() == expected).await;
    let outputs: Vec<_> = h
        .meter
        .usages()
        .iter()
        .map(|m| (m.input_tokens, m.output_tokens))
        .collect();
    assert_eq!(outputs, [(0, 0), (125, 1), (125, 7), (125, 15)]);
}

#[tokio::test]
async fn sse_chunks_reach_the_client_before_the_stream_ends() {
    let head = sse_head(25, 0);
    let rest = format!("{}{}", sse_text_delta("Hi"), sse_tail(&[9]));
    let (reply, go) = gated_stream(&head, &rest);
    let h = harness(vec![reply]).await;
    let mut client = Client::connect(&h.socket).await;
    let response = client.post(&[], &body(MODEL, 100, true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "{\"type\": \"ping\"}\n\n").await;
    // The upstream is still holding the rest back, yet the client has the
    // start of the stream, and its input tokens are already on record.
    assert!(!seen.contains("message_stop"));
    assert_eq!(h.gateway.totals().input_tokens, 25);
    assert_eq!(h.meter.usages().last().map(|m| m.input_tokens), Some(25));

    go.send(()).expect("release the stream");
    read_until(&mut body, &mut seen, STREAM_DONE).await;
    assert_eq!(seen, format!("{head}{rest}"));
    eventually("final usage", || h.gateway.totals().output_tokens == 9).await;
}

#[tokio::test]
async fn refusals_never_reach_the_upstream() {
    let h = harness(Vec::new()).await;
    let cases: Vec<(&str, Method, &str, String, StatusCode, &str, &str)> = vec![
        (
            "unapproved model",
            Method::POST,
            "/v1/messages",
            body("claude-opus-4-1", 100, false),
            StatusCode::FORBIDDEN,
            "permission_error",
            "claude-opus-4-1",
        ),
        (
            "max_tokens of zero",
            Method::POST,
            "/v1/messages",
            body(MODEL, 0, false),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "at least 1",
        ),
        (
            "a server-side tool that reaches the internet",
            Method::POST,
            "/v1/messages",
            format!(
                r#"{{"model":"{MODEL}","max_tokens":10,"messages":[],"tools":[{{"type":"web_search_20250305","name":"web_search"}}]}}"#
            ),
            StatusCode::FORBIDDEN,
            "permission_error",
            "web_search_20250305",
        ),
        (
            "an unknown query parameter",
            Method::POST,
            "/v1/messages?stream=raw",
            body(MODEL, 10, false),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "stream=raw",
        ),
        (
            "not JSON",
            Method::POST,
            "/v1/messages",
            "{\"model\":".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "JSON",
        ),
        (
            "no max_tokens",
            Method::POST,
            "/v1/messages",
            format!(r#"{{"model":"{MODEL}","messages":[]}}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            "other path",
            Method::POST,
            "/v1/complete",
            body(MODEL, 10, false),
            StatusCode::NOT_FOUND,
            "not_found_error",
            "/v1/complete",
        ),
        (
            "other method",
            Method::GET,
            "/v1/messages",
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "not_found_error",
            "GET",
        ),
    ];
    for (what, method, uri, sent, status, kind, named) in &cases {
        let response = Client::connect(&h.socket)
            .await
            .send(request(
                method.clone(),
                uri,
                &[],
                http_body_util::Full::new(Bytes::from(sent.clone())).boxed_unsync(),
            ))
            .await;
        let (got_status, headers, text) = read_all(response).await;
        assert_eq!(got_status, *status, "{what}: {text}");
        assert_eq!(error_type(&text), *kind, "{what}: {text}");
        assert_eq!(json(&text)["type"], "error", "{what}");
        if *status != StatusCode::BAD_GATEWAY {
            assert_eq!(headers["x-should-retry"], "false", "{what}");
        }
        let message = json(&text)["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(named), "{what}: {message}");
        if *status == StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(headers["allow"], "POST");
        }
        assert_eq!(
            h.meter.refusals().last(),
            Some(&(status.as_u16(), message)),
            "{what}"
        );
    }

    // An oversized body sent chunked, without content-length.
    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
    let chunks = MAX_BODY_BYTES / chunk.len() + 1;
    let frames = stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
    );
    let response = Client::connect(&h.socket)
        .await
        .send(request(
            Method::POST,
            "/v1/messages",
            &[],
            StreamBody::new(frames).boxed_unsync(),
        ))
        .await;
    let (status, _, text) = read_all(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_type(&text), "request_too_large");

    // An oversized body announced by content-length is refused unread.
    let mut raw = tokio::net::UnixStream::connect(&h.socket)
        .await
        .expect("connect");
    raw.write_all(
        format!(
            "POST /v1/messages HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        )
        .as_bytes(),
    )
    .await
    .expect("send head");
    let mut head = [0u8; 12];
    raw.read_exact(&mut head).await.expect("read status line");
    assert_eq!(&head, b"HTTP/1.1 413");

    let refused_statuses: Vec<u16> = h.meter.refusals().iter().map(|r| r.0).collect();
    assert_eq!(
        refused_statuses,
        [403, 400, 403, 400, 400, 400, 404, 405, 413, 413]
    );
    assert_eq!(h.upstream.request_count(), 0);
    assert_eq!(h.gateway.totals(), Metered::default());
}

#[tokio::test]
async fn a_short_budget_clamps_max_tokens_and_an_empty_one_refuses_without_retry() {
    // A 1000-token budget: each body's bytes bound its input far above
    // what is left, so the gateway has the upstream count it (30 tokens,
    // reserved as 30 + a 64-token margin).
    let h = harness_with(
        vec![
            count(30),
            Reply::message(30, 500),
            count(30),
            Reply::message(30, 376),
            count(30),
        ],
        grant(1000, 10),
        fast_retry(),
    )
    .await;
    let (status, _, _) = post(&h.socket, &[], &body(MODEL, 5000, false)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = post(&h.socket, &[], &body(MODEL, 5000, false)).await;
    assert_eq!(status, StatusCode::OK);
    let sent: Vec<Value> = h
        .upstream
        .received()
        .iter()
        .filter(|r| r.path_and_query == "/v1/messages")
        .map(|r| serde_json::from_slice(&r.body).expect("JSON body"))
        .collect();
    assert_eq!(sent[0]["max_tokens"], 906, "clamped to 1000 - 94");
    assert_eq!(sent[1]["max_tokens"], 376, "clamped to 1000 - 530 - 94");
    assert_eq!(
        sent[0]["messages"],
        json(&body(MODEL, 1, false))["messages"]
    );

    // 936 used: not even the input fits.
    let (status, headers, text) = post(&h.socket, &[], &body(MODEL, 5000, false)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert_eq!(error_type(&text), "permission_error");
    assert_eq!(headers["x-should-retry"], "false");
    assert!(text.contains("936 of its 1000-token budget"), "{text}");

    let totals = h.gateway.totals();
    assert_eq!(
        (totals.requests, totals.total_tokens(), totals.exhausted),
        (2, 936, 1)
    );
    assert!(
        totals.total_tokens() <= 1000,
        "metered usage never passes the budget"
    );
    eventually("both requests recorded", || h.meter.requests().len() == 2).await;
    let records = h.meter.requests();
    assert_eq!(
        (records[0].max_tokens_asked, records[0].max_tokens_sent),
        (Some(5000), Some(906))
    );
    let counts = h
        .upstream
        .received()
        .iter()
        .filter(|r| r.path_and_query == "/v1/messages/count_tokens")
        .count();
    assert_eq!(counts, 3);
}

#[tokio::test]
async fn the_request_cap_counts_token_counts_too() {
    let h = harness_with(
        vec![count(12), Reply::message(1, 1)],
        grant(10_000, 2),
        fast_retry(),
    )
    .await;
    let response = Client::connect(&h.socket)
        .await
        .send(request(
            Method::POST,
            "/v1/messages/count_tokens?beta=true",
            &[],
            http_body_util::Full::new(Bytes::from(format!(
                r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"Hello"}}]}}"#
            )))
            .boxed_unsync(),
        ))
        .await;
    let (status, _, text) = read_all(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&text)["input_tokens"], 12);
    assert_eq!(
        h.upstream.received()[0].path_and_query,
        "/v1/messages/count_tokens?beta=true"
    );
    assert_eq!(
        h.gateway.totals().total_tokens(),
        0,
        "a count spends no tokens"
    );

    let (status, _, _) = post(&h.socket, &[], &body(MODEL, 10, false)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, text) = post(&h.socket, &[], &body(MODEL, 1, false)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(text.contains("2 of its 2 allowed requests"), "{text}");
    assert_eq!(h.upstream.request_count(), 2);
    assert_eq!(h.gateway.totals().exhausted, 1);
}

#[tokio::test]
async fn a_request_in_flight_holds_its_reservation() {
    let (reply, go) = gated_stream(&sse_head(10, 0), &sse_tail(&[20]));
    // The first holds its body-size bound plus 5000; the second must be
    // counted and clamped to what is left beside it.
    let h = harness_with(vec![reply, count(10)], grant(10_000, 10), fast_retry()).await;
    let mut first = Client::connect(&h.socket).await;
    let response = first.post(&[], &body(MODEL, 5000, true)).await;
    let mut first_body = response.into_body();
    let mut seen = String::new();
    read_until(&mut first_body, &mut seen, START_DONE).await;

    // 11 used (10 in, 1 out so far), 4999 output still held: 4990 left,
    // less the second's bound of 74.
    let (status, _, _) = post(&h.socket, &[], &body(MODEL, 5000, false)).await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the fake has no more replies"
    );
    let second: Value = serde_json::from_slice(&h.upstream.received()[2].body).unwrap();
    assert_eq!(second["max_tokens"], 4990 - 74);

    go.send(()).expect("release");
    read_until(&mut first_body, &mut seen, STREAM_DONE).await;
    eventually("first request settled", || {
        h.gateway.totals().total_tokens() == 30
    })
    .await;
}

#[tokio::test]
async fn rate_limited_request_waits_for_retry_after_then_succeeds() {
    let h = harness_with(
        vec![
            Reply::error(429, "rate_limit_error", Some("1")),
            Reply::message(10, 5),
        ],
        grant(10_000, 10),
        RetryPolicy::default(),
    )
    .await;
    let started = Instant::now();
    let (status, _, _) = post(&h.socket, &[], &body(MODEL, 100, false)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        h.meter.events(),
        [GatewayEvent::Retried {
            status: 429,
            attempt: 1,
            wait: Duration::from_secs(1)
        }]
    );
    assert_eq!(h.upstream.request_count(), 2);
    eventually("usage metered", || h.gateway.totals().output_tokens == 5).await;
    assert_eq!(
        h.gateway.totals().requests,
        1,
        "a retried request counts once"
    );
}

#[tokio::test]
async fn overloaded_529_is_retried_with_backoff() {
    let h = harness(vec![
        Reply::error(529, "overloaded_error", None),
        Reply::error(529, "overloaded_error", None),
        Reply::message(1, 1),
    ])
    .await;
    let (status, _, _) = post(&h.socket, &[], &body(MODEL, 10, false)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h.meter.events(),
        [
            GatewayEvent::Retried {
                status: 529,
                attempt: 1,
                wait: Duration::from_millis(10)
            },
            GatewayEvent::Retried {
                status: 529,
                attempt: 2,
                wait: Duration::from_millis(20)
            }
        ]
    );
}

#[tokio::test]
async fn exhausted_retries_pass_the_upstream_429_through() {
    let h = harness(vec![
        Reply::error(429, "rate_limit_error", Some("1")),
        Reply::error(429, "rate_limit_error", Some("1")),
        Reply::error(429, "rate_limit_error", Some("1")),
    ])
    .await;
    let (status, headers, text) = post(&h.socket, &[], &body(MODEL, 10, false)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(json(&text)["error"]["message"], "scripted 429");
    assert_eq!(h.upstream.request_count(), 3);
    let capped = Duration::from_millis(50);
    eventually("the upstream error is reported", || {
        h.meter.events().len() == 3
    })
    .await;
    assert_eq!(
        h.meter.events(),
        [
            GatewayEvent::Retried {
                status: 429,
                attempt: 1,
                wait: capped
            },
            GatewayEvent::Retried {
                status: 429,
                attempt: 2,
                wait: capped
            },
            GatewayEvent::UpstreamError {
                status: 429,
                error_type: "rate_limit_error".into()
            }
        ]
    );
    assert_eq!(
        h.gateway.totals(),
        Metered {
            requests: 1,
            input_tokens: 0,
            output_tokens: 0,
            ..Metered::default()
        }
    );
}

#[tokio::test]
async fn mid_stream_error_event_is_forwarded_and_reported() {
    let text = format!(
        "{}{}{}",
        sse_head(25, 0),
        sse_text_delta("Hi"),
        SSE_OVERLOADED
    );
    let h = harness(vec![Reply::sse(&text, 11)]).await;
    let (status, _, received) = post(&h.socket, &[], &body(MODEL, 500, true)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(received, text);
    eventually("the error is reported", || !h.meter.events().is_empty()).await;
    assert_eq!(
        h.meter.events(),
        [GatewayEvent::UpstreamError {
            status: 200,
            error_type: "overloaded_error".into()
        }]
    );
    // The upstream ended the message itself: only what it reported counts.
    assert_eq!(
        h.gateway.totals(),
        Metered {
            requests: 1,
            input_tokens: 25,
            output_tokens: 1,
            ..Metered::default()
        }
    );
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_naming_it() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
        probe.local_addr().expect("probe address").port()
    };
    let base_url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("gateway.sock");
    let meter = Arc::new(RecordingMeter::default());
    let gateway = Gateway::start(
        &socket,
        None,
        grant(10_000, 10),
        upstream_at(base_url.clone(), fast_retry()),
        meter.clone(),
    )
    .await
    .expect("gateway starts");
    let (status, _, text) = post(&socket, &[], &body(MODEL, 100, false)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_type(&text), "api_error");
    let message = json(&text)["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.starts_with(&format!("cannot reach the upstream {base_url}: ")),
        "{message}"
    );
    let events = meter.events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(
        events[0],
        GatewayEvent::Retried {
            status: 502,
            attempt: 1,
            ..
        }
    ));
    assert_eq!(
        events[2],
        GatewayEvent::UpstreamError {
            status: 502,
            error_type: "connection_error".into()
        }
    );
    // The reservation was released: the whole budget can be asked for again.
    let (status, _, _) = post(&socket, &[], &body(MODEL, 100, false)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(gateway.shutdown().await.requests, 2);
}

/// Sends a streamed request for 300 tokens, reads until `message_start`
/// (25 input tokens) and hangs up.
async fn hang_up_after_message_start(h: &Harness) {
    let mut client = Client::connect(&h.socket).await;
    let response: Response<Incoming> = client.post(&[], &body(MODEL, 300, true)).await;
    let mut body = response.into_body();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, START_DONE).await;
}

#[tokio::test]
async fn client_hanging_up_mid_stream_is_charged_what_the_upstream_reports() {
    let (reply, go) = gated_stream(&sse_head(25, 0), &sse_tail(&[40]));
    let h = harness(vec![reply]).await;
    hang_up_after_message_start(&h).await;
    let _ = go.send(());
    // The reply is read on to its end after the client has gone.
    eventually("the rest of the reply is metered", || {
        h.gateway.totals().output_tokens == 40
    })
    .await;
    assert_eq!(h.gateway.totals().input_tokens, 25);
}

#[tokio::test]
async fn a_reply_whose_client_hung_up_is_cut_at_shutdown_and_charged_what_was_seen() {
    let (reply, _go) = gated_stream(&sse_head(25, 0), &sse_tail(&[40]));
    let h = harness(vec![reply]).await;
    hang_up_after_message_start(&h).await;
    let totals = h.gateway.shutdown().await;
    assert_eq!(
        (totals.input_tokens, totals.output_tokens),
        (25, 1),
        "what message_start said, not the 300 max_tokens the upstream never made"
    );
}

#[tokio::test]
async fn socket_is_private_and_removed_on_shutdown() {
    let h = harness(vec![Reply::message(3, 4)]).await;
    let meta = std::fs::symlink_metadata(&h.socket).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(h.gateway.socket_path(), h.socket);
    let (status, _, _) = post(&h.socket, &[], &body(MODEL, 10, false)).await;
    assert_eq!(status, StatusCode::OK);
    let totals = h.gateway.shutdown().await;
    assert_eq!(totals.total_tokens(), 7);
    assert!(!h.socket.exists());
}

#[tokio::test]
async fn socket_owner_is_applied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = std::fs::metadata(dir.path()).expect("dir metadata");
    let socket = dir.path().join("gateway.sock");
    let gateway = Gateway::start(
        &socket,
        Some((ours.uid(), ours.gid())),
        grant(10, 1),
        upstream_at("https://api.anthropic.com".into(), fast_retry()),
        Arc::new(RecordingMeter::default()),
    )
    .await
    .expect("gateway starts");
    let meta = std::fs::symlink_metadata(&socket).expect("socket exists");
    assert_eq!((meta.uid(), meta.gid()), (ours.uid(), ours.gid()));
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_stale_socket_is_replaced_but_another_file_is_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("gateway.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale socket"));
    let gateway = Gateway::start(
        &socket,
        None,
        grant(10, 1),
        upstream_at("https://api.anthropic.com".into(), fast_retry()),
        Arc::new(RecordingMeter::default()),
    )
    .await
    .expect("a stale socket is replaced");
    gateway.shutdown().await;

    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").expect("write file");
    let err = Gateway::start(
        &file,
        None,
        grant(10, 1),
        upstream_at("https://api.anthropic.com".into(), fast_retry()),
        Arc::new(RecordingMeter::default()),
    )
    .await
    .err()
    .expect("a regular file is not replaced");
    assert!(matches!(err, GatewayError::NotASocket { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        "keep me"
    );
}

#[tokio::test]
async fn dropping_the_gateway_removes_the_socket() {
    let h = harness(Vec::new()).await;
    drop(h.gateway);
    assert!(!h.socket.exists());
}

#[tokio::test]
async fn shutdown_cuts_off_a_stuck_stream_after_the_grace_period() {
    let (reply, _go) = gated_stream(&sse_head(25, 0), &sse_tail(&[40]));
    let h = harness(vec![reply]).await;
    let mut client = Client::connect(&h.socket).await;
    let response = client.post(&[], &body(MODEL, 300, true)).await;
    let mut body = response.into_body();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, START_DONE).await;

    let started = Instant::now();
    let totals = h.gateway.shutdown().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Cut off before its final usage: charged what was seen of it.
    assert_eq!(
        totals,
        Metered {
            requests: 1,
            input_tokens: 25,
            output_tokens: 1,
            ..Metered::default()
        }
    );
    assert!(!h.socket.exists());
}

#[tokio::test]
async fn shutdown_lets_a_finishing_reply_complete() {
    let (reply, go) = gated_stream(&sse_head(5, 0), &sse_tail(&[6]));
    let h = harness(vec![reply]).await;
    let mut client = Client::connect(&h.socket).await;
    let response = client.post(&[], &body(MODEL, 300, true)).await;
    let mut body = response.into_body();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, START_DONE).await;

    let reader = tokio::spawn(async move {
        read_until(&mut body, &mut seen, STREAM_DONE).await;
        seen
    });
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = go.send(());
    });
    let totals = h.gateway.shutdown().await;
    assert_eq!(
        totals.output_tokens, 6,
        "metered, not charged the reservation"
    );
    assert!(reader.await.expect("reader").ends_with(STREAM_DONE));
    releaser.await.expect("releaser");
}

#[tokio::test]
async fn the_owner_key_never_appears_in_events_errors_or_replies() {
    let text = format!("{}{}", sse_head(5, 0), SSE_OVERLOADED);
    let h = harness(vec![
        Reply::error(429, "rate_limit_error", Some("1")),
        Reply::error(429, "rate_limit_error", Some("1")),
        Reply::error(429, "rate_limit_error", Some("1")),
        Reply::sse(&text, 13),
        Reply::error(401, "authentication_error", None),
    ])
    .await;
    let mut seen = Vec::new();
    for (uri_method, sent) in [
        (Method::POST, body(MODEL, 10, false)),
        (Method::POST, body(MODEL, 10, true)),
        (Method::POST, body(MODEL, 10, false)),
        (Method::POST, body("claude-opus-4-1", 10, false)),
        (Method::PUT, body(MODEL, 10, false)),
    ] {
        let response = Client::connect(&h.socket)
            .await
            .send(request(
                uri_method,
                "/v1/messages",
                &[("x-api-key", "sk-container-bogus")],
                http_body_util::Full::new(Bytes::from(sent)).boxed_unsync(),
            ))
            .await;
        let (status, headers, text) = read_all(response).await;
        seen.push(format!("{status} {headers:?} {text}"));
    }
    let response = Client::connect(&h.socket)
        .await
        .send(request(
            Method::GET,
            "/v1/models",
            &[],
            Empty::new().map_err(|never| match never {}).boxed_unsync(),
        ))
        .await;
    seen.push(format!("{:?}", read_all(response).await));

    let unreachable = Gateway::start(
        &h.dir.path().join("other.sock"),
        None,
        grant(10, 1),
        upstream_at("http://127.0.0.1:1".into(), fast_retry()),
        h.meter.clone(),
    )
    .await
    .expect("gateway starts");
    let (_, _, text) = post(unreachable.socket_path(), &[], &body(MODEL, 10, false)).await;
    seen.push(text);
    unreachable.shutdown().await;

    let upstream = upstream_at(h.upstream.base_url.clone(), fast_retry());
    seen.push(format!("{upstream:?} {} {:?}", upstream.key, upstream.key));
    let start_errors = [
        Gateway::start(
            &h.socket,
            None,
            grant(1, 1),
            upstream_at("ftp://nowhere".into(), fast_retry()),
            h.meter.clone(),
        )
        .await
        .err(),
        Gateway::start(
            &h.dir.path().join("missing/dir/x.sock"),
            None,
            grant(1, 1),
            upstream.clone(),
            h.meter.clone(),
        )
        .await
        .err(),
    ];
    for err in start_errors.iter().flatten() {
        seen.push(format!("{err} {err:?}"));
    }
    assert_eq!(start_errors.iter().flatten().count(), 2);
    seen.extend(h.meter.events().iter().map(|e| format!("{e:?}")));
    seen.extend(h.meter.usages().iter().map(|u| format!("{u:?}")));

    let kinds: Vec<_> = h
        .meter
        .events()
        .iter()
        .map(|e| match e {
            GatewayEvent::Refused { .. } => "refused",
            GatewayEvent::UpstreamError { .. } => "upstream",
            GatewayEvent::Retried { .. } => "retried",
        })
        .collect();
    for kind in ["refused", "upstream", "retried"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let everything = seen.join("\n");
    assert!(
        !everything.contains(OWNER_KEY),
        "the owner key leaked into:\n{everything}"
    );
    // Every upstream request did carry it, so the search above is meaningful.
    assert!(
        h.upstream
            .received()
            .iter()
            .all(|r| r.headers["x-api-key"] == OWNER_KEY)
    );
}
