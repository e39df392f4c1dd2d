//! The HTTP side: a runtime on its own thread accepts connections, each
//! request is decided on under one lock (admission, scenario, recording,
//! usage and rate-limit counters together, so their orders always agree),
//! and the decision is written out as JSON or as an SSE stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::channel::{Channel, SendError, Sender};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::reply::{self, Reply};
use crate::validate::{self, MessagesRequest, Rejection};
use crate::wire::{self, StopReason};
use crate::{Recorded, Reported, Scenario};

/// The real API's request size limit for the Messages endpoint.
const DEFAULT_MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// Rate limits the headers advertise. They are never enforced; they only
/// give clients that read the headers realistic, changing values.
const REQUESTS_LIMIT: u64 = 4_000;
const INPUT_TOKENS_LIMIT: u64 = 2_000_000;
const OUTPUT_TOKENS_LIMIT: u64 = 400_000;
const RATE_WINDOW: Duration = Duration::from_secs(60);

type Body = BoxBody<Bytes, Infallible>;

/// State shared between the public handle and the connection tasks.
pub(crate) struct Shared {
    api_key: String,
    state: Mutex<State>,
}

pub(crate) struct State {
    pub queue: VecDeque<Scenario>,
    pub requests: Vec<Recorded>,
    pub reported: Reported,
    pub delta_delay: Duration,
    pub max_request_bytes: usize,
    window: RateWindow,
}

impl Shared {
    pub(crate) fn new(api_key: &str) -> Self {
        Shared {
            api_key: api_key.to_owned(),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                requests: Vec::new(),
                reported: Reported::default(),
                delta_delay: Duration::ZERO,
                max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
                window: RateWindow::default(),
            }),
        }
    }

    /// The state, even if a panic poisoned the lock: nothing here panics while
    /// holding it, and one failing test should not make every later call on
    /// the same mock panic too.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Reported {
    fn add(&mut self, input_tokens: u64, output_tokens: u64) {
        self.input_tokens += input_tokens;
        self.output_tokens += output_tokens;
        self.replies += 1;
    }
}

/// The rate-limit header names, per limit: limit, remaining, reset.
const RATE_HEADER_NAMES: [[&str; 3]; 4] = [
    [
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ],
    [
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ],
    [
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ],
    [
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ],
];

/// A fixed 60-second window of counted requests and tokens, opened by the
/// first request after the previous window closed.
#[derive(Default)]
struct RateWindow {
    /// When the current window closes, as a monotonic and as a wall-clock time.
    closes: Option<(Instant, SystemTime)>,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
}

impl RateWindow {
    /// Counts one request and returns the rate-limit headers to answer it with.
    fn count(&mut self, input_tokens: u64, output_tokens: u64) -> Vec<(&'static str, String)> {
        let now = Instant::now();
        let (_, reset_at) = match self.closes {
            Some(closes) if now < closes.0 => closes,
            _ => {
                let closes = (now + RATE_WINDOW, SystemTime::now() + RATE_WINDOW);
                *self = RateWindow {
                    closes: Some(closes),
                    ..RateWindow::default()
                };
                closes
            }
        };
        self.requests += 1;
        self.input_tokens += input_tokens;
        self.output_tokens += output_tokens;

        let input_left = INPUT_TOKENS_LIMIT.saturating_sub(self.input_tokens);
        let output_left = OUTPUT_TOKENS_LIMIT.saturating_sub(self.output_tokens);
        // The `tokens-*` headers describe whichever token limit is closest to
        // running out.
        let tokens = if output_left <= input_left {
            (OUTPUT_TOKENS_LIMIT, output_left)
        } else {
            (INPUT_TOKENS_LIMIT, input_left)
        };
        let values = [
            (REQUESTS_LIMIT, REQUESTS_LIMIT.saturating_sub(self.requests)),
            tokens,
            (INPUT_TOKENS_LIMIT, input_left),
            (OUTPUT_TOKENS_LIMIT, output_left),
        ];
        let reset = wire::rfc3339(reset_at);
        RATE_HEADER_NAMES
            .iter()
            .zip(values)
            .flat_map(|([limit_name, left_name, reset_name], (limit, left))| {
                [
                    (*limit_name, limit.to_string()),
                    (*left_name, left.to_string()),
                    (*reset_name, reset.clone()),
                ]
            })
            .collect()
    }
}

/// A bound listener, not yet attached to a runtime.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum AsyncListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// The server thread. Stopping it drops its runtime, which drops every
/// connection task mid-await, so a request stuck in [`Scenario::Hang`] or a
/// slow stream cannot delay shutdown.
pub(crate) struct Running {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    pub(crate) fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The thread may already be gone; then there is nothing to stop.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has already been printed; the
            // test will see its effect as failed requests.
            let _ = thread.join();
        }
    }
}

/// Starts serving `listener` on a new thread with its own runtime.
pub(crate) fn spawn(listener: Listener, shared: Arc<Shared>) -> io::Result<Running> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mock-anthropic-worker")
        .enable_all()
        .build()?;
    // Converting to tokio listeners needs the runtime's reactor; doing it here
    // rather than on the new thread lets setup errors reach the caller.
    let listener = {
        let _entered = runtime.enter();
        match listener {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                AsyncListener::Tcp(tokio::net::TcpListener::from_std(l)?)
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                AsyncListener::Unix(tokio::net::UnixListener::from_std(l)?)
            }
        }
    };
    let (shutdown, stop_requested) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("mock-anthropic".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                // A dropped sender (the handle was leaked or its owner
                // panicked) also ends the server.
                tokio::select! {
                    () = accept_loop(listener, shared) => {}
                    _ = stop_requested => {}
                }
            });
            // Drops the connection tasks still pending (hung requests, slow
            // streams), closing their sockets.
            drop(runtime);
        })?;
    Ok(Running {
        shutdown: Some(shutdown),
        thread: Some(thread),
    })
}

async fn accept_loop(listener: AsyncListener, shared: Arc<Shared>) {
    loop {
        let accepted = match &listener {
            AsyncListener::Tcp(l) => l.accept().await.map(|(stream, _)| {
                // Without this, Nagle's algorithm holds back small SSE chunks
                // until the previous one is acknowledged, blurring the timing
                // of deltas that tests observe.
                let _ = stream.set_nodelay(true);
                serve_connection(stream, &shared);
            }),
            AsyncListener::Unix(l) => l
                .accept()
                .await
                .map(|(stream, _)| serve_connection(stream, &shared)),
        };
        if let Err(e) = accepted {
            // Accepting fails transiently (for example when out of file
            // descriptors); back off rather than spin.
            eprintln!("mock-anthropic: accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn serve_connection<S>(stream: S, shared: &Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let service = service_fn(move |req| handle(Arc::clone(&shared), req));
        // Clients hanging up mid-response (timeouts, abandoned streams) are
        // routine in the tests this serves; there is no one to report to.
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
}

/// An error response.
struct ApiError {
    status: u16,
    kind: String,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: u16, kind: &str, message: &str, retry_after: Option<u64>) -> Self {
        ApiError {
            status,
            kind: kind.to_owned(),
            message: message.to_owned(),
            retry_after,
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError {
            status: r.status,
            kind: r.kind.to_owned(),
            message: r.message,
            retry_after: None,
        }
    }
}

/// An SSE response: the text pieces to send as deltas and how it ends.
struct StreamPlan {
    id: String,
    model: String,
    input_tokens: u64,
    pieces: Vec<String>,
    end: StreamEnd,
    delay: Duration,
}

enum StreamEnd {
    Complete {
        output_tokens: u64,
        stop_reason: StopReason,
    },
    Overloaded,
}

enum Answer {
    Error(ApiError),
    Message {
        id: String,
        model: String,
        reply: Reply,
    },
    Stream(StreamPlan),
}

enum Plan {
    Answer(Answer),
    Hang,
}

impl Plan {
    /// The HTTP status to record; `0` for a request that is never answered.
    fn status(&self) -> u16 {
        match self {
            Plan::Answer(Answer::Error(e)) => e.status,
            Plan::Answer(_) => 200,
            Plan::Hang => 0,
        }
    }

    /// The tokens this answer consumes, as far as rate limiting is concerned.
    fn tokens(&self) -> (u64, u64) {
        match self {
            Plan::Answer(Answer::Message { reply, .. }) => {
                (reply.input_tokens, reply.output_tokens)
            }
            Plan::Answer(Answer::Stream(s)) => match s.end {
                StreamEnd::Complete { output_tokens, .. } => (s.input_tokens, output_tokens),
                StreamEnd::Overloaded => (s.input_tokens, 1),
            },
            Plan::Answer(Answer::Error(_)) | Plan::Hang => (0, 0),
        }
    }
}

/// What was read of a request body.
struct ReadBody {
    bytes: Vec<u8>,
    too_large: bool,
    broken: bool,
}

async fn read_body(mut body: Incoming, limit: usize) -> ReadBody {
    let mut read = ReadBody {
        bytes: Vec::new(),
        too_large: false,
        broken: false,
    };
    // Past the limit the rest is still read, and discarded: closing a socket
    // with request bytes unread makes the kernel reset the connection, and
    // the client could lose the 413 before reading it.
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            read.broken = true;
            break;
        };
        if let Ok(data) = frame.into_data() {
            let room = limit.saturating_sub(read.bytes.len());
            read.too_large |= data.len() > room;
            read.bytes.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    read
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let limit = shared.state().max_request_bytes;
    let read = read_body(body, limit).await;
    let (plan, rate_headers) = decide(&shared, &parts, read, at);
    match plan {
        Plan::Hang => std::future::pending().await,
        Plan::Answer(answer) => Ok(respond(answer, &rate_headers, shared)),
    }
}

/// Admits the request, picks its answer, and records it, all under the state
/// lock so that recording order, queue order and counters agree.
fn decide(
    shared: &Shared,
    parts: &Parts,
    read: ReadBody,
    at: Instant,
) -> (Plan, Vec<(&'static str, String)>) {
    let verdict = if read.broken {
        Err(Rejection {
            status: 400,
            kind: wire::INVALID_REQUEST,
            message: "body: could not be read".to_owned(),
        })
    } else {
        validate::admit(parts, &shared.api_key, &read.bytes, read.too_large)
    };
    let mut state = shared.state();
    let plan = match verdict {
        Err(rejection) => Plan::Answer(Answer::Error(rejection.into())),
        Ok(req) => {
            let scenario = state.queue.pop_front();
            plan_for(scenario, &req, state.delta_delay)
        }
    };
    if let Plan::Answer(Answer::Message { reply, .. }) = &plan {
        state.reported.add(reply.input_tokens, reply.output_tokens);
    }
    let (input_tokens, output_tokens) = plan.tokens();
    let rate_headers = state.window.count(input_tokens, output_tokens);
    state.requests.push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: read.bytes,
        status: plan.status(),
        at,
    });
    (plan, rate_headers)
}

fn plan_for(scenario: Option<Scenario>, req: &MessagesRequest, delay: Duration) -> Plan {
    let answer = match scenario {
        None => reply_answer(req, reply::default_reply(req), delay),
        Some(Scenario::Reply {
            text,
            input_tokens,
            output_tokens,
        }) => {
            let reply = Reply {
                text,
                input_tokens,
                output_tokens,
                stop_reason: StopReason::EndTurn,
            };
            reply_answer(req, reply, delay)
        }
        Some(Scenario::Error {
            status,
            kind,
            message,
            retry_after,
        }) => Answer::Error(ApiError {
            status,
            kind,
            message,
            retry_after,
        }),
        Some(Scenario::RateLimited { retry_after }) => Answer::Error(ApiError::new(
            429,
            wire::RATE_LIMIT,
            "Number of request tokens has exceeded your per-minute rate limit",
            Some(retry_after),
        )),
        Some(Scenario::Overloaded) => {
            Answer::Error(ApiError::new(529, wire::OVERLOADED, "Overloaded", None))
        }
        Some(Scenario::MidStreamError { after_deltas }) if req.stream => {
            let text = reply::reply_text(req);
            let pieces = reply::delta_pieces(&text)
                .into_iter()
                .cycle()
                .take(after_deltas)
                .map(str::to_owned)
                .collect();
            Answer::Stream(StreamPlan {
                id: wire::new_id("msg_"),
                model: req.model.clone(),
                input_tokens: reply::input_tokens(req),
                pieces,
                end: StreamEnd::Overloaded,
                delay,
            })
        }
        Some(Scenario::MidStreamError { .. }) => Answer::Error(ApiError::new(
            500,
            wire::API_ERROR,
            "Internal server error",
            None,
        )),
        Some(Scenario::Hang) => return Plan::Hang,
    };
    Plan::Answer(answer)
}

fn reply_answer(req: &MessagesRequest, reply: Reply, delay: Duration) -> Answer {
    let id = wire::new_id("msg_");
    let model = req.model.clone();
    if !req.stream {
        return Answer::Message { id, model, reply };
    }
    Answer::Stream(StreamPlan {
        id,
        model,
        input_tokens: reply.input_tokens,
        pieces: reply::delta_pieces(&reply.text)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        end: StreamEnd::Complete {
            output_tokens: reply.output_tokens,
            stop_reason: reply.stop_reason,
        },
        delay,
    })
}

fn respond(
    answer: Answer,
    rate_headers: &[(&'static str, String)],
    shared: Arc<Shared>,
) -> Response<Body> {
    let request_id = wire::new_id("req_");
    let mut builder = Response::builder().header("request-id", &request_id);
    for (name, value) in rate_headers {
        builder = builder.header(*name, value);
    }
    let response = match answer {
        Answer::Error(e) => {
            // Statuses come from the admission checks or from `push`, which
            // rejects invalid ones.
            let status =
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            builder = builder
                .status(status)
                .header("content-type", "application/json");
            if let Some(secs) = e.retry_after {
                builder = builder.header("retry-after", secs.to_string());
            }
            if status == StatusCode::METHOD_NOT_ALLOWED {
                builder = builder.header("allow", "POST");
            }
            let body = wire::error_body(&e.kind, &e.message, &request_id);
            builder.body(full(body))
        }
        Answer::Message { id, model, reply } => {
            let body = wire::message(
                &id,
                &model,
                &reply.text,
                reply.stop_reason,
                reply.input_tokens,
                reply.output_tokens,
            );
            builder
                .header("content-type", "application/json")
                .body(full(body))
        }
        Answer::Stream(plan) => {
            let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
            tokio::spawn(async move {
                // An error here means the client went away; the stream simply
                // stops, as the real API's does.
                let _ = produce(&mut tx, &shared, plan).await;
            });
            builder
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(body.boxed())
        }
    };
    // Every header value above is ASCII built by the mock itself.
    response.expect("mock-anthropic builds only valid responses")
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text)).boxed()
}

/// Writes an SSE stream event by event, so that hyper sends each as its own
/// chunk, pausing between deltas when a delay is set.
async fn produce(
    tx: &mut Sender<Bytes>,
    shared: &Shared,
    plan: StreamPlan,
) -> Result<(), SendError> {
    tx.send_data(wire::message_start(
        &plan.id,
        &plan.model,
        plan.input_tokens,
    ))
    .await?;
    tx.send_data(wire::content_block_start()).await?;
    tx.send_data(wire::ping()).await?;
    for (i, piece) in plan.pieces.iter().enumerate() {
        if i > 0 {
            pause(plan.delay).await;
        }
        tx.send_data(wire::text_delta(piece)).await?;
    }
    match plan.end {
        StreamEnd::Overloaded => {
            if !plan.pieces.is_empty() {
                pause(plan.delay).await;
            }
            tx.send_data(wire::stream_error(wire::OVERLOADED, "Overloaded"))
                .await?;
        }
        StreamEnd::Complete {
            output_tokens,
            stop_reason,
        } => {
            tx.send_data(wire::content_block_stop()).await?;
            tx.send_data(wire::message_delta(stop_reason, output_tokens))
                .await?;
            // Counted before `message_stop` goes out, so a test that has read
            // the whole stream always finds it in `reported()`.
            shared
                .state()
                .reported
                .add(plan.input_tokens, output_tokens);
            tx.send_data(wire::message_stop()).await?;
        }
    }
    Ok(())
}

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}
