//! What the job's admission decided, and the per-request checks that hold a
//! request to it before anything reaches the upstream.
//!
//! The checks that need no shared state (body shape, model, per-request
//! `max_tokens`) live here; the request count and the token budget depend on
//! what other requests have used and reserved, so the ledger in `meter`
//! checks those under its lock.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// The limits the job was admitted with, fixed for the gateway's lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobGrant {
    pub job_id: String,
    /// The job's approved model(s); a request must name one exactly.
    pub allowed_models: Vec<String>,
    /// Both the cap on one request's `max_tokens` and the job's total budget
    /// of input + output tokens.
    pub max_tokens: u32,
    /// How many requests the job may forward upstream.
    pub max_requests: u32,
}

/// A request the gateway answers itself, without contacting the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    /// The Messages API error type, e.g. `permission_error`.
    pub error_type: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn invalid(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            error_type: "invalid_request_error",
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            error_type: "permission_error",
            message: message.into(),
        }
    }
}

/// Client-supplied text as quoted in a refusal: refusals go to the audit
/// log, so a megabyte-long "model" must not go with them.
pub(crate) fn quoted(text: &str) -> String {
    const SHOWN_CHARS: usize = 100;
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The two fields the policy reads from a Messages request body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RequestHead {
    pub model: String,
    pub max_tokens: u64,
}

/// Reads `model` and `max_tokens` without building the whole document: the
/// body can be megabytes of conversation. Deserializing into a struct also
/// refuses duplicate keys, which matters: with `{"model":"a","model":"b"}` the
/// gateway and the upstream could otherwise read different models.
pub(crate) fn parse_head(body: &[u8]) -> Result<RequestHead, Refusal> {
    #[derive(Deserialize)]
    struct Raw {
        model: Option<Value>,
        max_tokens: Option<Value>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| {
        Refusal::invalid(format!(
            "the request body must be a JSON object (Messages API request): {e}"
        ))
    })?;
    let model = match raw.model {
        Some(Value::String(model)) => model,
        Some(_) => return Err(Refusal::invalid("`model` must be a string")),
        None => return Err(Refusal::invalid("`model` is required")),
    };
    let max_tokens = match raw.max_tokens {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            Refusal::invalid(format!(
                "`max_tokens` must be a non-negative integer, not {n}"
            ))
        })?,
        Some(_) => return Err(Refusal::invalid("`max_tokens` must be an integer")),
        None => return Err(Refusal::invalid("`max_tokens` is required")),
    };
    Ok(RequestHead { model, max_tokens })
}

/// The checks that depend on the request alone.
pub(crate) fn check_request(grant: &JobGrant, head: &RequestHead) -> Result<(), Refusal> {
    if !grant.allowed_models.contains(&head.model) {
        let allowed = if grant.allowed_models.is_empty() {
            "none".to_owned()
        } else {
            grant.allowed_models.join(", ")
        };
        return Err(Refusal::forbidden(format!(
            "model `{}` is not approved for job {}; approved: {allowed}",
            quoted(&head.model),
            grant.job_id
        )));
    }
    if head.max_tokens > u64::from(grant.max_tokens) {
        return Err(Refusal::forbidden(format!(
            "max_tokens {} exceeds the {} tokens granted to job {}; ask for at most {}",
            head.max_tokens, grant.max_tokens, grant.job_id, grant.max_tokens
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> JobGrant {
        JobGrant {
            job_id: "job-1".into(),
            allowed_models: vec!["claude-sonnet-4-5".into()],
            max_tokens: 1000,
            max_requests: 5,
        }
    }

    #[test]
    fn reads_model_and_max_tokens_and_ignores_the_rest() {
        let head = parse_head(
            br#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}],"max_tokens":64,"stream":true}"#,
        )
        .expect("valid body");
        assert_eq!(
            head,
            RequestHead {
                model: "claude-sonnet-4-5".into(),
                max_tokens: 64
            }
        );
    }

    #[test]
    fn malformed_bodies_are_invalid_requests() {
        for body in [
            &b"not json"[..],
            b"[1,2]",
            b"{\"max_tokens\":5}",
            b"{\"model\":5,\"max_tokens\":5}",
            b"{\"model\":\"m\"}",
            b"{\"model\":\"m\",\"max_tokens\":\"5\"}",
            b"{\"model\":\"m\",\"max_tokens\":-1}",
            b"{\"model\":\"m\",\"max_tokens\":1.5}",
            b"{\"model\":\"m\",\"max_tokens\":5} trailing",
        ] {
            let refusal = parse_head(body).expect_err(&String::from_utf8_lossy(body));
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
            assert_eq!(refusal.error_type, "invalid_request_error");
        }
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let refusal = parse_head(
            br#"{"model":"claude-sonnet-4-5","model":"claude-opus-4-1","max_tokens":5}"#,
        )
        .expect_err("duplicate model");
        assert!(refusal.message.contains("duplicate"), "{}", refusal.message);
    }

    #[test]
    fn unapproved_model_is_refused_naming_the_approved_ones() {
        let head = RequestHead {
            model: "claude-opus-4-1".into(),
            max_tokens: 10,
        };
        let refusal = check_request(&grant(), &head).expect_err("wrong model");
        assert_eq!(refusal.status, StatusCode::FORBIDDEN);
        assert_eq!(refusal.error_type, "permission_error");
        assert!(refusal.message.contains("claude-opus-4-1"));
        assert!(refusal.message.contains("claude-sonnet-4-5"));
    }

    #[test]
    fn quoted_client_text_is_bounded() {
        assert_eq!(quoted("claude-x"), "claude-x");
        let long = "é".repeat(5000);
        let shown = quoted(&long);
        assert_eq!(shown.chars().count(), 101);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn max_tokens_over_the_grant_is_refused_naming_both_values() {
        let head = RequestHead {
            model: "claude-sonnet-4-5".into(),
            max_tokens: 1001,
        };
        let refusal = check_request(&grant(), &head).expect_err("too many tokens");
        assert_eq!(refusal.status, StatusCode::FORBIDDEN);
        assert!(refusal.message.contains("1001") && refusal.message.contains("1000"));
        let at_cap = RequestHead {
            max_tokens: 1000,
            ..head
        };
        assert_eq!(check_request(&grant(), &at_cap), Ok(()));
    }
}
