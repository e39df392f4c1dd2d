//! Passes the upstream's reply back to the client chunk by chunk and meters
//! it on the way through.
//!
//! Each chunk is metered before it is handed to the client, so the host's
//! record is never behind what the client has seen. A streamed reply (SSE)
//! is parsed incrementally: `message_start` carries the input tokens,
//! `message_delta` the cumulative output. A JSON reply is read when it ends.
//!
//! A client that hangs up mid-reply does not end the upstream's reply: it
//! is read on to its end in the background, with its reservation held, so
//! it is charged what the upstream reports, and disconnecting early dodges
//! nothing. When the gateway stops (the job ended, was killed or timed out)
//! the replies still open are cut: closing the upstream connection stops the
//! generation, so each is charged what was seen of it (its input bound when
//! not even `message_start` came), not tokens the upstream never made. A
//! reply that ended or broke off without its final usage while the gateway
//! ran is charged its whole reservation: the upstream may have generated up
//! to `max_tokens`. A token count's reply carries no usage and is charged
//! nothing. Every reply, once over, is reported to the [`Meter`] as one
//! [`RequestRecord`] for the audit log.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::Value;
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::meter::{GatewayEvent, Ledger, RequestRecord, Reservation};
use super::service::{BoxError, GatewayBody};
use super::sse::{SseEvent, SseParser};

/// A JSON reply larger than this is passed on but not read for usage (and so
/// charged its reservation); real replies are far smaller.
const MAX_JSON_REPLY_BYTES: usize = 8 * 1024 * 1024;

const REQUEST_ID: &str = "request-id";
const RATELIMIT_PREFIX: &str = "anthropic-ratelimit-";

/// Builds the client's response: the upstream status, the headers the
/// client may see, and a body that meters as it streams.
pub(crate) fn relay(
    reply: reqwest::Response,
    reservation: Reservation,
    mut record: RequestRecord,
    sent_at: Instant,
    ledger: Arc<Ledger>,
    drains: &Drains,
) -> Response<GatewayBody> {
    let status = reply.status();
    let headers = client_headers(reply.headers());
    let streamed = status.is_success() && is_event_stream(reply.headers());
    record.status = status.as_u16();
    record.request_id = reply
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let meter = ReplyMeter {
        ledger,
        reservation,
        record,
        sent_at,
        status,
        reader: if streamed {
            Reader::Sse(SseParser::default())
        } else {
            Reader::Json {
                buffer: Vec::new(),
                overflow: false,
            }
        },
        usage: Usage::default(),
        final_usage: false,
        stream_error: false,
        done: false,
    };
    let stream = Relay {
        reply: Some(Reply {
            upstream: reply.bytes_stream().boxed(),
            meter,
        }),
        drains: drains.clone(),
    };
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The upstream headers a client needs; everything else (cookies, the
/// owner's organisation id, ...) stays on the host.
fn client_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let passed = |name: &HeaderName| {
        *name == CONTENT_TYPE
            || *name == RETRY_AFTER
            || name.as_str() == REQUEST_ID
            || name.as_str().starts_with(RATELIMIT_PREFIX)
    };
    for (name, value) in upstream.iter().filter(|(name, _)| passed(name)) {
        headers.append(name.clone(), value.clone());
    }
    headers
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// Where replies whose client hung up are read to their end, and the
/// gateway's stop signal that cuts them.
#[derive(Clone)]
pub(crate) struct Drains {
    tasks: Arc<Mutex<JoinSet<()>>>,
    stop: watch::Receiver<bool>,
}

impl Drains {
    pub fn new(stop: watch::Receiver<bool>) -> Drains {
        Drains {
            tasks: Arc::default(),
            stop,
        }
    }

    fn spawn(&self, reply: Reply) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        // Settled drains are collected here, so the set holds only live ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(reply.drain(self.stop.clone()));
    }

    /// Waits for every drain; after the stop signal each settles at once.
    pub async fn settled(&self) {
        let mut tasks =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        while tasks.join_next().await.is_some() {}
    }
}

struct Relay {
    /// `None` once handed to a drain.
    reply: Option<Reply>,
    drains: Drains,
}

struct Reply {
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    meter: ReplyMeter,
}

impl Reply {
    /// Reads the rest of the reply for its usage, until it ends or the
    /// gateway stops.
    async fn drain(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                biased;
                () = super::stop_requested(&mut stop) => {
                    self.meter.finish(End::Cut);
                    return;
                }
                chunk = self.upstream.next() => match chunk {
                    Some(Ok(chunk)) => self.meter.feed(&chunk),
                    Some(Err(_)) => {
                        self.meter.finish(End::Broken);
                        return;
                    }
                    None => {
                        self.meter.finish(End::Complete);
                        return;
                    }
                },
            }
        }
    }
}

impl Stream for Relay {
    type Item = Result<Frame<Bytes>, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(reply) = self.get_mut().reply.as_mut() else {
            return Poll::Ready(None);
        };
        match reply.upstream.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                reply.meter.feed(&chunk);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(error))) => {
                tracing::warn!(
                    job_id = %reply.meter.ledger.grant().job_id,
                    %error,
                    "the upstream reply broke off"
                );
                reply.meter.finish(End::Broken);
                // An error frame makes hyper abort the response, so the
                // client sees a truncated reply rather than a complete one.
                Poll::Ready(Some(Err(Box::new(error))))
            }
            Poll::Ready(None) => {
                reply.meter.finish(End::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Relay {
    /// The client hung up, or the gateway cut the connection: the rest of
    /// the reply is read in the background for its usage.
    fn drop(&mut self) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        if reply.meter.done || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.drains.spawn(reply);
    }
}

/// How a reply's body ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// The upstream ended it.
    Complete,
    /// The upstream connection failed.
    Broken,
    /// The gateway stopped and closed the upstream connection.
    Cut,
}

enum Reader {
    Sse(SseParser),
    Json { buffer: Vec<u8>, overflow: bool },
}

/// The usage fields of one message as last reported; each replaces the
/// previous value when present, since the upstream's counts are cumulative.
#[derive(Default)]
struct Usage {
    input: Option<u64>,
    cache_creation: Option<u64>,
    cache_read: Option<u64>,
    output: Option<u64>,
}

impl Usage {
    /// Merges a `usage` object; true if it held any count.
    fn update(&mut self, usage: &Value) -> bool {
        let mut seen = false;
        let mut take = |slot: &mut Option<u64>, key: &str| {
            if let Some(n) = usage.get(key).and_then(Value::as_u64) {
                *slot = Some(n);
                seen = true;
            }
        };
        take(&mut self.input, "input_tokens");
        take(&mut self.cache_creation, "cache_creation_input_tokens");
        take(&mut self.cache_read, "cache_read_input_tokens");
        take(&mut self.output, "output_tokens");
        seen
    }

    /// Prompt-cache writes and reads are input the upstream processed (and
    /// bills), so they count against the budget like `input_tokens`.
    fn input_total(&self) -> Option<u64> {
        let parts = [self.input, self.cache_creation, self.cache_read];
        parts.iter().any(Option::is_some).then(|| {
            parts
                .iter()
                .flatten()
                .fold(0u64, |a, b| a.saturating_add(*b))
        })
    }
}

struct ReplyMeter {
    ledger: Arc<Ledger>,
    reservation: Reservation,
    record: RequestRecord,
    sent_at: Instant,
    status: StatusCode,
    reader: Reader,
    usage: Usage,
    /// The reply's final usage arrived (`message_delta`, or the JSON body).
    final_usage: bool,
    /// The upstream ended the stream with an `error` event.
    stream_error: bool,
    done: bool,
}

impl ReplyMeter {
    fn feed(&mut self, chunk: &[u8]) {
        match &mut self.reader {
            Reader::Sse(parser) => {
                let mut events = Vec::new();
                parser.feed(chunk, |event| events.push(event));
                for event in events {
                    self.on_event(event);
                }
            }
            Reader::Json { buffer, overflow } => {
                if buffer.len() + chunk.len() > MAX_JSON_REPLY_BYTES {
                    *overflow = true;
                } else if !*overflow {
                    buffer.extend_from_slice(chunk);
                }
            }
        }
    }

    fn on_event(&mut self, event: SseEvent) {
        let interesting = matches!(
            event.name.as_str(),
            "message_start" | "message_delta" | "error"
        );
        if !interesting {
            return;
        }
        let Ok(data) = serde_json::from_slice::<Value>(&event.data) else {
            tracing::warn!(
                job_id = %self.ledger.grant().job_id,
                event = %event.name,
                "unreadable event in the upstream stream"
            );
            return;
        };
        match event.name.as_str() {
            "message_start" => {
                if let Some(usage) = data.pointer("/message/usage") {
                    self.meter_usage(usage);
                }
            }
            "message_delta" => {
                if let Some(usage) = data.get("usage") {
                    self.final_usage |= self.meter_usage(usage);
                }
            }
            _ => {
                self.stream_error = true;
                self.upstream_error(error_type(&data));
            }
        }
    }

    fn meter_usage(&mut self, usage: &Value) -> bool {
        if !self.usage.update(usage) {
            return false;
        }
        self.reservation
            .record(self.usage.input_total(), self.usage.output);
        true
    }

    fn upstream_error(&self, error_type: String) {
        tracing::info!(
            job_id = %self.ledger.grant().job_id,
            status = self.status.as_u16(),
            %error_type,
            "upstream error"
        );
        self.ledger.meter().event(GatewayEvent::UpstreamError {
            status: self.status.as_u16(),
            error_type,
        });
    }

    /// Settles the reply once.
    fn finish(&mut self, end: End) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let mut body = None;
        if let Reader::Json { buffer, overflow } = &mut self.reader
            && end == End::Complete
            && !*overflow
        {
            body = serde_json::from_slice::<Value>(&std::mem::take(buffer)).ok();
        }
        let metered = self.record.endpoint == "messages";
        if self.status.is_success() && metered {
            if let Some(usage) = body.as_ref().and_then(|b| b.get("usage")) {
                self.final_usage |= self.meter_usage(usage);
            }
            if !self.final_usage && !self.stream_error {
                if end == End::Cut {
                    self.reservation.charge_seen();
                } else {
                    tracing::warn!(
                        job_id = %self.ledger.grant().job_id,
                        broken = end == End::Broken,
                        "reply ended without its final usage; charging the request's whole max_tokens"
                    );
                    self.reservation.charge_reserved();
                }
            }
        } else if !self.status.is_success() {
            let error_type = body
                .as_ref()
                .map(error_type)
                .unwrap_or_else(|| "unknown".to_owned());
            self.upstream_error(error_type);
        }
        self.reservation.release();
        let (input, output) = self.reservation.used();
        let record = RequestRecord {
            input_tokens: input,
            cache_creation_tokens: self.usage.cache_creation.unwrap_or(0),
            cache_read_tokens: self.usage.cache_read.unwrap_or(0),
            output_tokens: output,
            took: self.sent_at.elapsed(),
            ..std::mem::take(&mut self.record)
        };
        self.ledger.meter().request(record);
    }
}

impl Drop for ReplyMeter {
    /// Dropped unsettled only where no drain could be started (no runtime):
    /// nothing is known of the rest of the reply.
    fn drop(&mut self) {
        self.finish(End::Broken);
    }
}

fn error_type(body: &Value) -> String {
    body.pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn only_client_facing_headers_are_passed_back() {
        let mut upstream = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("request-id", "req_1"),
            ("retry-after", "3"),
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-tokens-remaining", "1000"),
            ("anthropic-organization-id", "org-secret"),
            ("set-cookie", "session=1"),
            ("cf-ray", "abc"),
        ] {
            upstream.insert(name, HeaderValue::from_static(value));
        }
        let passed = client_headers(&upstream);
        let mut names: Vec<_> = passed.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "anthropic-ratelimit-requests-limit",
                "anthropic-ratelimit-tokens-remaining",
                "content-type",
                "request-id",
                "retry-after"
            ]
        );
    }

    #[test]
    fn usage_fields_replace_individually_and_cache_counts_as_input() {
        let mut usage = Usage::default();
        assert_eq!(usage.input_total(), None);
        usage.update(&serde_json::json!({
            "input_tokens": 10, "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000, "output_tokens": 1
        }));
        assert_eq!(usage.input_total(), Some(1110));
        usage.update(&serde_json::json!({"output_tokens": 40, "input_tokens": 12}));
        assert_eq!(usage.input_total(), Some(1112));
        assert_eq!(usage.output, Some(40));
        assert!(!usage.update(&serde_json::json!({"cache_read_input_tokens": null})));
    }

    #[test]
    fn event_stream_detection_ignores_case_and_parameters() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Text/Event-Stream; charset=utf-8"),
        );
        assert!(is_event_stream(&headers));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!is_event_stream(&headers));
    }
}
