//! The HTTP side: a runtime on its own thread accepts connections, each
//! request is decided on under one lock (admission, scenario, recording,
//! usage and rate-limit counters together, so their orders always agree),
//! and the decision is written out as JSON or, by `stream`, as SSE.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::channel::Channel;
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

use crate::plan::{self, Answer, Plan};
use crate::ratelimit::{Headers, RateWindow};
use crate::stream::produce;
use crate::validate::{self, Admitted, Rejection};
use crate::wire;
use crate::{Recorded, Reported, Scenario};

/// The real API's request size limit for the Messages endpoint.
const DEFAULT_MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

type Body = BoxBody<Bytes, Infallible>;

/// State shared between the public handle and the connection tasks.
pub(crate) struct Shared {
    api_key: String,
    state: Mutex<State>,
}

pub(crate) struct State {
    pub queue: VecDeque<Scenario>,
    /// What a Messages request gets while the queue is empty; `None` is the
    /// default reply.
    pub default: Option<Scenario>,
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
                default: None,
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
    pub(crate) fn add(&mut self, input_tokens: u64, output_tokens: u64) {
        self.input_tokens += input_tokens;
        self.output_tokens += output_tokens;
        self.replies += 1;
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
fn decide(shared: &Shared, parts: &Parts, read: ReadBody, at: Instant) -> (Plan, Headers) {
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
        Ok(Admitted::CountTokens(prompt)) => {
            let next = state.queue.front().or(state.default.as_ref());
            plan::count(next, &prompt)
        }
        Ok(Admitted::Messages(req)) => {
            let scenario = state.queue.pop_front().or_else(|| state.default.clone());
            plan::messages(scenario, &req, state.delta_delay)
        }
    };
    if let Plan::Answer(Answer::Message { reply, .. }) = &plan {
        state.reported.add(reply.input_tokens, reply.output_tokens);
    }
    let rate_headers = match plan.tokens() {
        Some((input_tokens, output_tokens)) => state.window.count(input_tokens, output_tokens),
        None => state.window.peek(),
    };
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

fn respond(answer: Answer, rate_headers: &Headers, shared: Arc<Shared>) -> Response<Body> {
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
                &reply.blocks(),
                reply.stop_reason,
                reply.input_tokens,
                reply.output_tokens,
            );
            builder
                .header("content-type", "application/json")
                .body(full(body))
        }
        Answer::Count { input_tokens } => builder
            .header("content-type", "application/json")
            .body(full(wire::token_count(input_tokens))),
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
