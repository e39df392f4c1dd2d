//! The real Messages API behind the gateway: where it is, the owner's key,
//! and how one admitted request is sent there, retrying 429/529 and failed
//! connections under a bounded policy.
//!
//! Only a fixed set of headers is built for the upstream request: the
//! client's own `x-api-key`/`authorization` (or anything else it sends) never
//! leave the host, beta flags are the ones the policy let through, and the
//! owner's key is marked sensitive so `http`'s Debug output hides it.
//! Redirects are not followed, since following one would carry the key to
//! wherever the redirect points.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Client, StatusCode, Url};

use super::GatewayError;
use super::credentials::ApiKey;
use super::meter::{GatewayEvent, Meter};
use super::policy::Endpoint;

const ANTHROPIC_VERSION: &str = "anthropic-version";
const ANTHROPIC_BETA: &str = "anthropic-beta";
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A non-streaming reply can take minutes to start (the Anthropic SDKs allow
/// ten); a streaming one sends pings far more often than this.
const READ_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a probe waits for each of its connection and its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Statuses that mean "try again later": rate limited, overloaded.
const RETRYABLE: [u16; 2] = [429, 529];

/// Where requests go and with which key.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// e.g. `https://api.anthropic.com`; `/v1/messages` is appended.
    pub base_url: String,
    pub key: ApiKey,
    pub retry: RetryPolicy,
}

/// What asking the upstream found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It counted a one-word message with the owner's key.
    Ready,
    /// It answered with an error status and this message.
    Refused { status: u16, message: String },
    /// No answer: refused connection, DNS, TLS or a timeout.
    Unreachable { reason: String },
}

impl Upstream {
    /// Asks the upstream to count the tokens of a one-word message for
    /// `model`: free, and one request checks the address, the key and the
    /// model. Not retried: a probe reports what is, now.
    pub async fn probe(&self, model: &str) -> Result<Probe, GatewayError> {
        let client = UpstreamClient::new(self.clone())?;
        let sent = Sent {
            endpoint: Endpoint::CountTokens,
            query: None,
            version: None,
            betas: &[],
        };
        let body = serde_json::json!({
            "model": model,
            "messages": [{ "role": "user", "content": "ping" }],
        });
        let request = client
            .http
            .post(client.url(&sent))
            .headers(client.upstream_headers(&sent))
            .body(body.to_string())
            .send();
        let reply = match tokio::time::timeout(PROBE_TIMEOUT, request).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                return Ok(Probe::Unreachable {
                    reason: error_chain(&e),
                });
            }
            Err(_) => {
                return Ok(Probe::Unreachable {
                    reason: format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
                });
            }
        };
        let status = reply.status();
        if status.is_success() {
            return Ok(Probe::Ready);
        }
        let text = tokio::time::timeout(PROBE_TIMEOUT, reply.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_owned))
            .unwrap_or(text)
            .chars()
            .take(300)
            .collect();
        Ok(Probe::Refused {
            status: status.as_u16(),
            message,
        })
    }
}

/// How 429/529 replies and failed connections are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first wait; each further one doubles.
    pub base_delay: Duration,
    /// The longest wait, also the cap on an honoured `retry-after`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (from 1): the upstream's
    /// `retry-after` if it gave one, else exponential backoff; capped either way.
    pub(crate) fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = || {
            let factor = 2u32
                .checked_pow(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX);
            self.base_delay.saturating_mul(factor)
        };
        retry_after.unwrap_or_else(backoff).min(self.max_delay)
    }
}

/// Parses `retry-after` in seconds (the form Anthropic sends); the HTTP-date
/// form falls back to backoff.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// The upstream as the gateway uses it: one HTTP client, its URL and key
/// header prepared once.
pub(crate) struct UpstreamClient {
    http: Client,
    base_url: String,
    /// The base URL with no path, for joining an endpoint's path.
    root: Url,
    key_header: HeaderValue,
    retry: RetryPolicy,
}

/// Where a request goes upstream and what it carries besides the key.
#[derive(Clone, Copy)]
pub(crate) struct Sent<'a> {
    pub endpoint: Endpoint,
    pub query: Option<&'a str>,
    /// The client's `anthropic-version`, if it sent one.
    pub version: Option<&'a HeaderValue>,
    /// The `anthropic-beta` values the policy let through.
    pub betas: &'a [String],
}

/// Why a request got no upstream reply; the message is for the client.
#[derive(Debug)]
pub(crate) struct Unreachable {
    pub message: String,
}

impl UpstreamClient {
    pub fn new(upstream: Upstream) -> Result<UpstreamClient, GatewayError> {
        let base = upstream.base_url.trim_end_matches('/');
        let root = Url::parse(&format!("{base}/"))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| GatewayError::BadBaseUrl {
                base_url: upstream.base_url.clone(),
            })?;
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| GatewayError::HttpClient {
                reason: error_chain(&e),
            })?;
        Ok(UpstreamClient {
            http,
            base_url: upstream.base_url,
            root,
            key_header: upstream.key.header_value(),
            retry: upstream.retry,
        })
    }

    fn url(&self, sent: &Sent<'_>) -> Url {
        let mut url = self.root.clone();
        url.set_path(sent.endpoint.path());
        url.set_query(sent.query);
        url
    }

    /// Asks the upstream how many input tokens `body` (a count body) holds:
    /// the exact bound the budget needs when the body's size gives none.
    pub async fn count_tokens(
        &self,
        sent: &Sent<'_>,
        body: Bytes,
        meter: &dyn Meter,
    ) -> Result<u64, String> {
        let count = Sent {
            endpoint: Endpoint::CountTokens,
            ..*sent
        };
        let reply = self
            .send(&count, body, meter)
            .await
            .map_err(|e| e.message)?;
        let status = reply.status();
        let text = reply
            .text()
            .await
            .map_err(|e| format!("reading the count: {}", error_chain(&e)))?;
        if !status.is_success() {
            return Err(format!("the upstream answered {status}: {text}"));
        }
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("input_tokens")?.as_u64())
            .ok_or_else(|| format!("the count is not {{\"input_tokens\": N}}: {text}"))
    }

    /// Sends the request body, retrying per the policy while the answer is
    /// 429/529 or the connection fails. Returns the last reply, whatever
    /// its status, once retries are spent.
    pub async fn send(
        &self,
        sent: &Sent<'_>,
        body: Bytes,
        meter: &dyn Meter,
    ) -> Result<reqwest::Response, Unreachable> {
        let url = self.url(sent);
        let headers = self.upstream_headers(sent);
        let mut attempt = 0;
        loop {
            let sent = self
                .http
                .post(url.clone())
                .headers(headers.clone())
                .body(body.clone())
                .send()
                .await;
            let may_retry = attempt < self.retry.max_retries;
            let (status, retry_after) = match sent {
                Ok(reply) if may_retry && RETRYABLE.contains(&reply.status().as_u16()) => {
                    (reply.status(), retry_after(reply.headers()))
                }
                Ok(reply) => return Ok(reply),
                // Only a failed connect is safe to repeat: after that the
                // upstream may have started (and billed) the request.
                Err(e) if may_retry && e.is_connect() => {
                    tracing::info!(error = %error_chain(&e), "cannot connect to the upstream");
                    (StatusCode::BAD_GATEWAY, None)
                }
                Err(e) => return Err(self.unreachable(&e)),
            };
            attempt += 1;
            let wait = self.retry.wait(attempt, retry_after);
            tracing::info!(
                status = status.as_u16(),
                attempt,
                wait_ms = wait.as_millis() as u64,
                "retrying the upstream request"
            );
            meter.event(GatewayEvent::Retried {
                status: status.as_u16(),
                attempt,
                wait,
            });
            tokio::time::sleep(wait).await;
        }
    }

    fn upstream_headers(&self, sent: &Sent<'_>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", self.key_header.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let version = sent
            .version
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION));
        headers.insert(ANTHROPIC_VERSION, version);
        if !sent.betas.is_empty()
            && let Ok(betas) = HeaderValue::from_str(&sent.betas.join(","))
        {
            headers.insert(ANTHROPIC_BETA, betas);
        }
        headers
    }

    fn unreachable(&self, error: &reqwest::Error) -> Unreachable {
        Unreachable {
            message: format!(
                "cannot reach the upstream {}: {}",
                self.base_url,
                error_chain(error)
            ),
        }
    }
}

/// An error and its causes on one line: reqwest's own message is only
/// "error sending request", the useful part ("Connection refused") is below.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.wait(1, None), Duration::from_millis(500));
        assert_eq!(policy.wait(2, None), Duration::from_secs(1));
        assert_eq!(policy.wait(3, None), Duration::from_secs(2));
        assert_eq!(policy.wait(6, None), Duration::from_secs(10));
        assert_eq!(policy.wait(u32::MAX, None), Duration::from_secs(10));
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(120))),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        let mut headers = HeaderMap::new();
        for (value, expected) in [
            ("1", Some(Duration::from_secs(1))),
            (" 2.5 ", Some(Duration::from_millis(2500))),
            ("-1", None),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ] {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(value));
            assert_eq!(retry_after(&headers), expected, "{value}");
        }
    }

    #[test]
    fn base_url_must_be_http_or_https() {
        let key = ApiKey::new("sk-test").expect("key");
        for base_url in ["ftp://example.com", "not a url", "unix:/tmp/sock"] {
            let upstream = Upstream {
                base_url: base_url.into(),
                key: key.clone(),
                retry: RetryPolicy::default(),
            };
            let err = UpstreamClient::new(upstream).err().expect(base_url);
            assert!(matches!(err, GatewayError::BadBaseUrl { .. }), "{err:?}");
        }
    }

    #[test]
    fn only_the_fixed_header_set_goes_upstream() {
        let upstream = Upstream {
            base_url: "https://api.anthropic.com/".into(),
            key: ApiKey::new("sk-owner").expect("key"),
            retry: RetryPolicy::default(),
        };
        let client = UpstreamClient::new(upstream).expect("client");
        let betas = ["beta-a".to_owned(), "beta-b".to_owned()];
        let sent = Sent {
            endpoint: Endpoint::CountTokens,
            query: Some("beta=true"),
            version: None,
            betas: &betas,
        };
        assert_eq!(
            client.url(&sent).as_str(),
            "https://api.anthropic.com/v1/messages/count_tokens?beta=true"
        );
        let headers = client.upstream_headers(&sent);
        assert_eq!(headers.len(), 4, "{headers:?}");
        assert_eq!(headers["x-api-key"], "sk-owner");
        assert!(headers["x-api-key"].is_sensitive());
        assert!(!format!("{headers:?}").contains("sk-owner"));
        assert_eq!(headers[ANTHROPIC_VERSION], DEFAULT_ANTHROPIC_VERSION);
        assert_eq!(headers[ANTHROPIC_BETA], "beta-a,beta-b");
    }
}
