//! One HTTP request from the container, start to finish: route it, read and
//! check its body, bound its input, admit it against the ledger (clamping
//! its `max_tokens` when the budget is short), forward it, and relay the
//! reply. Everything the gateway refuses is answered here, in the Messages
//! API's error shape, before any byte goes upstream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::body::Body;
use super::meter::{GatewayEvent, Ledger, RequestRecord, Reservation};
use super::policy::{Endpoint, Refusal, check, check_query, filter_betas, quoted};
use super::relay::{Drains, relay};
use super::upstream::{Sent, Unreachable, UpstreamClient};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type GatewayBody = UnsyncBoxBody<Bytes, BoxError>;

const ANTHROPIC_VERSION: &str = "anthropic-version";
const ANTHROPIC_BETA: &str = "anthropic-beta";

/// The Messages API's own request-size limit: anything larger the upstream
/// would refuse anyway, and a long agent conversation (with images) easily
/// passes a few MiB, so a tighter cap would break real jobs.
pub(crate) const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// `count_tokens` is "an estimate" that the real request may exceed by a
/// little; the reservation adds this fraction (1/50) and a floor on top.
const COUNT_MARGIN_DIVISOR: u64 = 50;
const COUNT_MARGIN_MIN: u64 = 64;

/// What every connection shares.
pub(crate) struct Shared {
    pub ledger: Arc<Ledger>,
    pub upstream: UpstreamClient,
    pub drains: Drains,
}

enum Failure {
    Refused(Refusal),
    Unreachable(Unreachable),
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Failure::Refused(refusal)
    }
}

impl From<Unreachable> for Failure {
    fn from(unreachable: Unreachable) -> Self {
        Failure::Unreachable(unreachable)
    }
}

/// hyper's service function; every outcome is an HTTP response.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    let ledger = &shared.ledger;
    let response = match serve(&shared, request).await {
        Ok(response) => response,
        Err(Failure::Refused(refusal)) => {
            tracing::info!(
                job_id = %ledger.grant().job_id,
                status = refusal.status.as_u16(),
                reason = %refusal.message,
                "request refused"
            );
            ledger.meter().event(GatewayEvent::Refused {
                reason: refusal.message.clone(),
                status: refusal.status.as_u16(),
            });
            error_response(refusal.status, refusal.error_type, &refusal.message)
        }
        Err(Failure::Unreachable(unreachable)) => {
            tracing::warn!(
                job_id = %ledger.grant().job_id,
                reason = %unreachable.message,
                "upstream unreachable"
            );
            ledger.meter().event(GatewayEvent::UpstreamError {
                status: StatusCode::BAD_GATEWAY.as_u16(),
                error_type: "connection_error".to_owned(),
            });
            error_response(StatusCode::BAD_GATEWAY, "api_error", &unreachable.message)
        }
    };
    Ok(response)
}

fn route(request: &Request<Incoming>) -> Result<Endpoint, Refusal> {
    let path = request.uri().path();
    let endpoint = [Endpoint::Messages, Endpoint::CountTokens]
        .into_iter()
        .find(|e| e.path() == path)
        .ok_or_else(|| Refusal {
            status: StatusCode::NOT_FOUND,
            error_type: "not_found_error",
            message: format!(
                "the gateway serves only POST {} and POST {}, not {}",
                Endpoint::Messages.path(),
                Endpoint::CountTokens.path(),
                quoted(path)
            ),
        })?;
    if request.method() != Method::POST {
        return Err(Refusal {
            status: StatusCode::METHOD_NOT_ALLOWED,
            error_type: "not_found_error",
            message: format!("{path} takes POST, not {}", request.method()),
        });
    }
    check_query(request.uri().query())?;
    let declared_length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    Ok(endpoint)
}

async fn serve(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, Failure> {
    let endpoint = route(&request)?;
    let query = request.uri().query().map(str::to_owned);
    let (parts, body) = request.into_parts();
    let raw = read_body(body).await?;
    let body = Body::parse(&raw).map_err(|e| {
        Refusal::invalid(format!(
            "the request body must be a JSON object (Messages API request): {e}"
        ))
    })?;
    let ledger = &shared.ledger;
    let checked = check(ledger.grant(), endpoint, &body)?;
    let (betas, betas_dropped) = filter_betas(
        ledger.grant(),
        parts
            .headers
            .get_all(ANTHROPIC_BETA)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let sent = Sent {
        endpoint,
        query: query.as_deref(),
        version: parts.headers.get(ANTHROPIC_VERSION),
        betas: &betas,
    };
    let (reservation, raw) = match checked.max_tokens {
        None => (ledger.admit_count()?, raw),
        Some(asked) => {
            let reservation = admit_message(shared, &sent, &body, asked).await?;
            let sent_max = reservation.max_tokens();
            let raw = if sent_max < asked {
                body.with_max_tokens(sent_max)
            } else {
                raw
            };
            (reservation, raw)
        }
    };
    let record = RequestRecord {
        endpoint: endpoint.name(),
        model: quoted(&checked.model),
        max_tokens_asked: checked.max_tokens,
        max_tokens_sent: checked.max_tokens.map(|_| reservation.max_tokens()),
        input_bound: reservation.input_bound(),
        betas_dropped,
        ..RequestRecord::default()
    };
    tracing::debug!(
        job_id = %ledger.grant().job_id,
        endpoint = endpoint.name(),
        model = %checked.model,
        max_tokens = ?record.max_tokens_sent,
        input_bound = record.input_bound,
        "forwarding request"
    );
    let sent_at = Instant::now();
    let reply = shared.upstream.send(&sent, raw, ledger.meter()).await?;
    Ok(relay(
        reply,
        reservation,
        record,
        sent_at,
        Arc::clone(ledger),
        &shared.drains,
    ))
}

/// Admits a message request: with the input bounded by the body's size
/// when the whole `max_tokens` fits under that, else by the upstream's own
/// count (plus a margin), so a long conversation is not clamped for bytes
/// its tokens do not have.
async fn admit_message(
    shared: &Shared,
    sent: &Sent<'_>,
    body: &Body,
    asked: u64,
) -> Result<Reservation, Refusal> {
    let ledger = &shared.ledger;
    ledger.check_open()?;
    let cheap = body.input_bound();
    if let Some(bound) = cheap
        && ledger.fits(bound, asked)
    {
        return ledger.admit_message(bound, asked);
    }
    let counted = shared
        .upstream
        .count_tokens(sent, body.count_body(), ledger.meter())
        .await;
    let bound = match (counted, cheap) {
        (Ok(tokens), _) => tokens + (tokens / COUNT_MARGIN_DIVISOR).max(COUNT_MARGIN_MIN),
        (Err(reason), Some(bound)) => {
            tracing::info!(job_id = %ledger.grant().job_id, %reason, "no token count; bounding the input by its size");
            bound
        }
        (Err(reason), None) => {
            return Err(Refusal {
                status: StatusCode::BAD_GATEWAY,
                error_type: "api_error",
                message: format!(
                    "could not count this request's input tokens, which its images or \
                     documents need to stay within job {}'s budget: {reason}",
                    ledger.grant().job_id
                ),
            });
        }
    };
    ledger.admit_message(bound, asked)
}

/// Reads the body with a cap, so a chunked upload without `content-length`
/// cannot grow without bound either.
async fn read_body(body: Incoming) -> Result<Bytes, Refusal> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Refusal::invalid(format!(
            "could not read the request body: {e}"
        ))),
    }
}

fn too_large() -> Refusal {
    Refusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        error_type: "request_too_large",
        message: format!(
            "the request body is larger than the gateway's limit of {} MiB",
            MAX_BODY_BYTES / (1024 * 1024)
        ),
    }
}

/// An answer in the Messages API's error shape, so SDK clients in the
/// container report it like any other API error.
fn error_response(status: StatusCode, error_type: &str, message: &str) -> Response<GatewayBody> {
    let body = serde_json::json!({
        "type": "error",
        "error": { "type": error_type, "message": message },
    })
    .to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The Anthropic SDKs honour this over their own retry rules: asking
    // again cannot change the gateway's answer (a 502 is a failed upstream,
    // which may recover).
    if status != StatusCode::BAD_GATEWAY {
        headers.insert("x-should-retry", HeaderValue::from_static("false"));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("POST"));
    }
    response
}
