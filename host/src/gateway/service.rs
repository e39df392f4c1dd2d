//! One HTTP request from the container, start to finish: route it, read and
//! check its body, admit it against the ledger, forward it, and relay the
//! reply. Everything the gateway refuses is answered here, in the Messages
//! API's error shape, before any byte goes upstream.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::meter::{GatewayEvent, Ledger};
use super::policy::{Refusal, check_request, parse_head, quoted};
use super::relay::relay;
use super::upstream::{Unreachable, UpstreamClient};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type GatewayBody = UnsyncBoxBody<Bytes, BoxError>;

const MESSAGES_PATH: &str = "/v1/messages";

/// The Messages API's own request-size limit: anything larger the upstream
/// would refuse anyway, and a long agent conversation (with images) easily
/// passes a few MiB, so a tighter cap would break real jobs.
pub(crate) const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// What every connection shares.
pub(crate) struct Shared {
    pub ledger: Arc<Ledger>,
    pub upstream: UpstreamClient,
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

async fn serve(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, Failure> {
    if request.uri().path() != MESSAGES_PATH {
        return Err(Refusal {
            status: StatusCode::NOT_FOUND,
            error_type: "not_found_error",
            message: format!(
                "the gateway serves only POST {MESSAGES_PATH}, not {}",
                quoted(request.uri().path())
            ),
        }
        .into());
    }
    if request.method() != Method::POST {
        return Err(Refusal {
            status: StatusCode::METHOD_NOT_ALLOWED,
            error_type: "not_found_error",
            message: format!("{MESSAGES_PATH} takes POST, not {}", request.method()),
        }
        .into());
    }
    let declared_length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large().into());
    }
    // `?beta=true` is how the Anthropic SDKs (and Claude Code) reach the beta
    // Messages endpoint; the query cannot change which endpoint is called.
    let query = request.uri().query().map(str::to_owned);
    let (parts, body) = request.into_parts();
    let body = read_body(body).await?;
    let head = parse_head(&body)?;
    let ledger = &shared.ledger;
    check_request(ledger.grant(), &head)?;
    let reservation = ledger.admit(head.max_tokens)?;
    tracing::debug!(
        job_id = %ledger.grant().job_id,
        model = %head.model,
        max_tokens = head.max_tokens,
        "forwarding request"
    );
    let reply = shared
        .upstream
        .send(query.as_deref(), &parts.headers, body, ledger.meter())
        .await?;
    Ok(relay(reply, reservation, Arc::clone(ledger)))
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
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("POST"));
    }
    response
}
