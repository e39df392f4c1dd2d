//! Test support: a scripted fake of the Messages API on 127.0.0.1, a
//! [`Meter`] that records what it is told, and a client that speaks HTTP/1.1
//! over the gateway's Unix socket the way a container would.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1 as client_http1;
use hyper::header::HeaderValue;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::meter::{GatewayEvent, Meter, Metered, RequestRecord};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One step of a scripted streamed reply.
pub(crate) enum Step {
    Chunk(Bytes),
    /// Hold the stream until the test says go.
    WaitFor(oneshot::Receiver<()>),
}

/// One scripted upstream reply.
pub(crate) enum Reply {
    Json {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
    },
    Stream {
        headers: Vec<(&'static str, &'static str)>,
        steps: Vec<Step>,
    },
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::Json {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }

    /// A successful non-streaming message with the given usage.
    pub fn message(input: u64, output: u64) -> Reply {
        Reply::json(
            200,
            &format!(
                r#"{{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{{"type":"text","text":"Hi"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":{input},"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":{output}}}}}"#
            ),
        )
    }

    pub fn error(status: u16, error_type: &str, retry_after: Option<&'static str>) -> Reply {
        Reply::Json {
            status,
            headers: retry_after
                .map(|secs| vec![("retry-after", secs)])
                .unwrap_or_default(),
            body: format!(
                r#"{{"type":"error","error":{{"type":"{error_type}","message":"scripted {status}"}}}}"#
            ),
        }
    }

    /// An SSE reply cut into `piece`-byte writes.
    pub fn sse(text: &str, piece: usize) -> Reply {
        Reply::Stream {
            headers: Vec::new(),
            steps: pieces(text, piece),
        }
    }
}

pub(crate) fn pieces(text: &str, piece: usize) -> Vec<Step> {
    text.as_bytes()
        .chunks(piece)
        .map(|c| Step::Chunk(Bytes::copy_from_slice(c)))
        .collect()
}

/// The events of a streamed message, as the Messages API sends them.
pub(crate) fn sse_head(input: u64, cache_read: u64) -> String {
    format!(
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{input},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":{cache_read},\"output_tokens\":1}}}}}}\n\n\
         event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n\
         event: ping\ndata: {{\"type\": \"ping\"}}\n\n"
    )
}

pub(crate) fn sse_text_delta(text: &str) -> String {
    format!(
        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"
    )
}

/// The end of a streamed message; `output` is the cumulative output count of
/// each `message_delta` sent.
pub(crate) fn sse_tail(outputs: &[u64]) -> String {
    let mut tail =
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
            .to_owned();
    for output in outputs {
        tail.push_str(&format!(
            "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{output}}}}}\n\n"
        ));
    }
    tail.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    tail
}

pub(crate) const SSE_OVERLOADED: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

/// A request as the fake upstream received it.
#[derive(Debug)]
pub(crate) struct Received {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

type TestBody = UnsyncBoxBody<Bytes, Infallible>;

struct Script {
    replies: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
}

pub(crate) struct FakeUpstream {
    pub base_url: String,
    script: Arc<Script>,
    server: JoinHandle<()>,
}

impl FakeUpstream {
    /// Starts a fake that answers requests with `replies` in order, and
    /// with a 500 once they run out.
    pub async fn start(replies: Vec<Reply>) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake upstream");
        let addr = listener.local_addr().expect("fake upstream address");
        let script = Arc::new(Script {
            replies: Mutex::new(replies.into()),
            received: Mutex::new(Vec::new()),
        });
        let served = Arc::clone(&script);
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(Arc::clone(&script), req));
                    let _ = server_http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeUpstream {
            base_url: format!("http://{addr}"),
            script,
            server,
        }
    }

    pub fn received(&self) -> MutexGuard<'_, Vec<Received>> {
        lock(&self.script.received)
    }

    pub fn request_count(&self) -> usize {
        self.received().len()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    script: Arc<Script>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    lock(&script.received).push(Received {
        method: parts.method,
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
    });
    let reply = lock(&script.replies)
        .pop_front()
        .unwrap_or_else(|| Reply::error(500, "api_error", None));
    let mut response = match reply {
        Reply::Json {
            status,
            headers,
            body,
        } => {
            let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
            *response.status_mut() = StatusCode::from_u16(status).expect("scripted status");
            set(&mut response, "content-type", "application/json");
            for (name, value) in headers {
                set(&mut response, name, value);
            }
            response
        }
        Reply::Stream { headers, steps } => {
            let frames = stream::unfold(steps.into_iter(), |mut steps| async move {
                loop {
                    match steps.next()? {
                        Step::Chunk(bytes) => {
                            // Let each piece go out as its own write.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            return Some((Ok(Frame::data(bytes)), steps));
                        }
                        Step::WaitFor(go) => {
                            let _ = go.await;
                        }
                    }
                }
            });
            let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
            set(&mut response, "content-type", "text/event-stream");
            for (name, value) in headers {
                set(&mut response, name, value);
            }
            response
        }
    };
    set(&mut response, "request-id", "req_fake_01");
    set(
        &mut response,
        "anthropic-ratelimit-requests-remaining",
        "49",
    );
    set(&mut response, "anthropic-organization-id", "org-private");
    set(&mut response, "set-cookie", "upstream=private");
    Ok(response)
}

fn set(response: &mut Response<TestBody>, name: &'static str, value: &'static str) {
    response
        .headers_mut()
        .insert(name, HeaderValue::from_static(value));
}

/// Records every call the gateway makes to its [`Meter`].
#[derive(Default)]
pub(crate) struct RecordingMeter {
    usages: Mutex<Vec<Metered>>,
    events: Mutex<Vec<GatewayEvent>>,
    requests: Mutex<Vec<RequestRecord>>,
}

impl RecordingMeter {
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.requests).clone()
    }

    pub fn usages(&self) -> Vec<Metered> {
        lock(&self.usages).clone()
    }

    pub fn events(&self) -> Vec<GatewayEvent> {
        lock(&self.events).clone()
    }

    pub fn refusals(&self) -> Vec<(u16, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                GatewayEvent::Refused { reason, status } => Some((status, reason)),
                _ => None,
            })
            .collect()
    }
}

impl Meter for RecordingMeter {
    fn usage(&self, totals: Metered) {
        lock(&self.usages).push(totals);
    }

    fn event(&self, event: GatewayEvent) {
        lock(&self.events).push(event);
    }

    fn request(&self, record: RequestRecord) {
        lock(&self.requests).push(record);
    }
}

/// An HTTP/1.1 connection to the gateway's socket, as a container has.
pub(crate) struct Client {
    sender: client_http1::SendRequest<TestRequestBody>,
}

pub(crate) type TestRequestBody = UnsyncBoxBody<Bytes, Infallible>;

impl Client {
    pub async fn connect(socket: &Path) -> Client {
        let stream = UnixStream::connect(socket)
            .await
            .expect("connect to the gateway socket");
        let (sender, connection) = client_http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        Client { sender }
    }

    pub async fn send(&mut self, request: Request<TestRequestBody>) -> Response<Incoming> {
        self.sender
            .send_request(request)
            .await
            .expect("gateway answers")
    }

    /// POSTs `body` to `/v1/messages` with the given extra headers.
    pub async fn post(
        &mut self,
        headers: &[(&'static str, &'static str)],
        body: &str,
    ) -> Response<Incoming> {
        let request = request(
            Method::POST,
            "/v1/messages",
            headers,
            Full::new(Bytes::from(body.to_owned())).boxed_unsync(),
        );
        self.send(request).await
    }
}

pub(crate) fn request(
    method: Method,
    uri: &str,
    headers: &[(&'static str, &'static str)],
    body: TestRequestBody,
) -> Request<TestRequestBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri.parse().expect("test URI");
    let map = request.headers_mut();
    map.insert("host", HeaderValue::from_static("localhost"));
    for (name, value) in headers {
        map.append(*name, HeaderValue::from_static(value));
    }
    request
}

/// One request on a fresh connection; returns status, headers and body text.
pub(crate) async fn post(
    socket: &Path,
    headers: &[(&'static str, &'static str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let response = Client::connect(socket).await.post(headers, body).await;
    read_all(response).await
}

pub(crate) async fn read_all(response: Response<Incoming>) -> (StatusCode, HeaderMap, String) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("read the reply").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).expect("UTF-8 reply"),
    )
}

/// A Messages request body.
pub(crate) fn body(model: &str, max_tokens: u64, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","max_tokens":{max_tokens},"stream":{stream},"messages":[{{"role":"user","content":"Hello"}}]}}"#
    )
}
