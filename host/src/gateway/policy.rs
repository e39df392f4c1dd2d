//! What the job's admission decided, and the per-request checks that hold a
//! request to it before anything reaches the upstream.
//!
//! The checks that need no shared state (body shape, model, `max_tokens`,
//! server-side tools, beta flags, the query) live here; the request count
//! and the token budget depend on what other requests have used and
//! reserved, so the ledger in `meter` checks those under its lock.

use hyper::StatusCode;
use serde_json::Value;

use super::body::Body;

/// Prefixes of server-side tool types that make the upstream reach the
/// internet on the job's behalf, and spend money token metering does not
/// see. `mcp_toolset` drives a remote MCP server.
const EGRESS_TOOLS: [&str; 4] = ["web_search", "web_fetch", "code_execution", "mcp_toolset"];

/// Prefixes of `anthropic-beta` values that turn on such tools, or reach
/// the owner's stored files and skills.
const EGRESS_BETAS: [&str; 6] = [
    "web-search-",
    "web-fetch-",
    "code-execution-",
    "mcp-client-",
    "files-api-",
    "skills-",
];

/// The limits the job was admitted with, fixed for the gateway's lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobGrant {
    pub job_id: String,
    /// The job's approved model(s); a request must name one exactly.
    pub allowed_models: Vec<String>,
    /// Input plus output tokens the job may use over all its requests. The
    /// gateway never lets metered usage pass it.
    pub budget_tokens: u64,
    /// Requests the job may forward upstream, token counts included.
    pub max_requests: u32,
    /// The decision allowed server-side tools that reach the internet.
    pub egress: bool,
    /// `anthropic-beta` values passed upstream; others are dropped.
    pub allowed_betas: Vec<String>,
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

/// Which endpoint a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Messages,
    CountTokens,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
        }
    }
}

/// What the gateway checked a request to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Checked {
    pub model: String,
    /// `None` for a token count, which produces no output.
    pub max_tokens: Option<u64>,
}

/// The checks that depend on the request alone: a parsed body of the right
/// shape, an approved model, a `max_tokens` of at least 1 for a message,
/// and no tool that reaches the internet unless the job may.
pub(crate) fn check(grant: &JobGrant, endpoint: Endpoint, body: &Body) -> Result<Checked, Refusal> {
    let model = match body.value("model") {
        Some(Value::String(model)) => model,
        Some(_) => return Err(Refusal::invalid("`model` must be a string")),
        None => return Err(Refusal::invalid("`model` is required")),
    };
    let max_tokens = match (endpoint, body.value("max_tokens")) {
        (Endpoint::CountTokens, _) => None,
        (Endpoint::Messages, Some(Value::Number(n))) => match n.as_u64() {
            Some(0) => return Err(Refusal::invalid("`max_tokens` must be at least 1")),
            Some(n) => Some(n),
            None => {
                return Err(Refusal::invalid(format!(
                    "`max_tokens` must be a positive integer, not {n}"
                )));
            }
        },
        (Endpoint::Messages, Some(_)) => {
            return Err(Refusal::invalid("`max_tokens` must be an integer"));
        }
        (Endpoint::Messages, None) => return Err(Refusal::invalid("`max_tokens` is required")),
    };
    if !grant.allowed_models.contains(&model) {
        let allowed = if grant.allowed_models.is_empty() {
            "none".to_owned()
        } else {
            grant.allowed_models.join(", ")
        };
        return Err(Refusal::forbidden(format!(
            "model `{}` is not approved for job {}; approved: {allowed}",
            quoted(&model),
            grant.job_id
        )));
    }
    if !grant.egress
        && let Some(what) = egress_asked(body)
    {
        return Err(Refusal::forbidden(format!(
            "{what} would reach the internet through the upstream, and job {} was not allowed \
             that; run it with --allow-egress on a node whose compliance allows egress",
            grant.job_id
        )));
    }
    Ok(Checked { model, max_tokens })
}

/// What in the body asks for server-side access to the internet, if anything.
fn egress_asked(body: &Body) -> Option<String> {
    if let Some(Value::Array(tools)) = body.value("tools") {
        for tool in &tools {
            let kind = tool.get("type").and_then(Value::as_str).unwrap_or("custom");
            if EGRESS_TOOLS.iter().any(|prefix| kind.starts_with(prefix)) {
                return Some(format!("the server-side tool `{}`", quoted(kind)));
            }
        }
    }
    let present = |key: &str| {
        body.value(key)
            .is_some_and(|v| !v.is_null() && v != Value::Array(Vec::new()))
    };
    if present("mcp_servers") {
        return Some("`mcp_servers`".to_owned());
    }
    if present("container") {
        return Some("a code execution `container`".to_owned());
    }
    None
}

/// The `anthropic-beta` values to pass upstream and the ones dropped. A
/// header may list several values, comma-separated, on several lines.
pub(crate) fn filter_betas<'a>(
    grant: &JobGrant,
    values: impl Iterator<Item = &'a str>,
) -> (Vec<String>, Vec<String>) {
    let (mut passed, mut dropped) = (Vec::new(), Vec::new());
    for beta in values.flat_map(|v| v.split(',')).map(str::trim) {
        if beta.is_empty() {
            continue;
        }
        let egress = EGRESS_BETAS.iter().any(|prefix| beta.starts_with(prefix));
        let allowed = if egress {
            grant.egress
        } else {
            grant.allowed_betas.iter().any(|b| b == beta)
        };
        if allowed {
            passed.push(beta.to_owned());
        } else {
            dropped.push(quoted(beta));
        }
    }
    (passed, dropped)
}

/// Refuses query parameters other than `beta` (how the SDKs reach the beta
/// Messages endpoint): the gateway does not know what others would change.
pub(crate) fn check_query(query: Option<&str>) -> Result<(), Refusal> {
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "beta" || !matches!(value, "true" | "false") {
            return Err(Refusal::invalid(format!(
                "unknown query parameter `{}`; the gateway accepts only beta=true",
                quoted(pair)
            )));
        }
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
            budget_tokens: 1000,
            max_requests: 5,
            egress: false,
            allowed_betas: vec!["claude-code-20250219".into()],
        }
    }

    fn checked(body: &str) -> Result<Checked, Refusal> {
        let body = Body::parse(body.as_bytes()).map_err(Refusal::invalid)?;
        check(&grant(), Endpoint::Messages, &body)
    }

    #[test]
    fn reads_model_and_max_tokens_and_ignores_the_rest() {
        let head = checked(
            r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}],"max_tokens":64,"stream":true}"#,
        )
        .expect("valid body");
        assert_eq!(
            head,
            Checked {
                model: "claude-sonnet-4-5".into(),
                max_tokens: Some(64)
            }
        );
        let count = Body::parse(br#"{"model":"claude-sonnet-4-5","messages":[]}"#).unwrap();
        let counted = check(&grant(), Endpoint::CountTokens, &count).unwrap();
        assert_eq!(counted.max_tokens, None);
    }

    #[test]
    fn malformed_bodies_are_invalid_requests() {
        for body in [
            "{\"max_tokens\":5}",
            "{\"model\":5,\"max_tokens\":5}",
            "{\"model\":\"claude-sonnet-4-5\"}",
            "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":\"5\"}",
            "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":-1}",
            "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":1.5}",
            "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":0}",
        ] {
            let refusal = checked(body).expect_err(body);
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(refusal.error_type, "invalid_request_error");
        }
    }

    #[test]
    fn unapproved_model_is_refused_naming_the_approved_ones() {
        let refusal = checked(r#"{"model":"claude-opus-4-1","max_tokens":10}"#).expect_err("model");
        assert_eq!(refusal.status, StatusCode::FORBIDDEN);
        assert_eq!(refusal.error_type, "permission_error");
        assert!(refusal.message.contains("claude-opus-4-1"));
        assert!(refusal.message.contains("claude-sonnet-4-5"));
    }

    #[test]
    fn tools_that_reach_the_internet_need_egress() {
        for body in [
            r#"{"model":"claude-sonnet-4-5","max_tokens":10,"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
            r#"{"model":"claude-sonnet-4-5","max_tokens":10,"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]}"#,
            r#"{"model":"claude-sonnet-4-5","max_tokens":10,"tools":[{"type":"code_execution_20250825","name":"code_execution"}]}"#,
            r#"{"model":"claude-sonnet-4-5","max_tokens":10,"mcp_servers":[{"type":"url","url":"https://example.com","name":"x"}]}"#,
        ] {
            let refusal = checked(body).expect_err(body);
            assert_eq!(refusal.status, StatusCode::FORBIDDEN, "{body}");
            assert!(
                refusal.message.contains("--allow-egress"),
                "{}",
                refusal.message
            );
            let parsed = Body::parse(body.as_bytes()).unwrap();
            let open = JobGrant {
                egress: true,
                ..grant()
            };
            assert!(check(&open, Endpoint::Messages, &parsed).is_ok(), "{body}");
        }
        let client_tools = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"mcp_servers":[],"tools":[{"name":"Bash","input_schema":{}},{"type":"bash_20250124","name":"bash"}]}"#;
        assert!(checked(client_tools).is_ok());
    }

    #[test]
    fn betas_pass_only_from_the_allow_list() {
        let (passed, dropped) = filter_betas(
            &grant(),
            [
                "claude-code-20250219, made-up-2030-01-01",
                "web-fetch-2025-09-10",
            ]
            .into_iter(),
        );
        assert_eq!(passed, ["claude-code-20250219"]);
        assert_eq!(dropped, ["made-up-2030-01-01", "web-fetch-2025-09-10"]);
        let open = JobGrant {
            egress: true,
            ..grant()
        };
        let (passed, _) = filter_betas(&open, ["web-fetch-2025-09-10"].into_iter());
        assert_eq!(passed, ["web-fetch-2025-09-10"]);
    }

    #[test]
    fn only_the_beta_query_is_accepted() {
        assert!(check_query(None).is_ok());
        assert!(check_query(Some("beta=true")).is_ok());
        for bad in ["beta=yes", "foo=bar", "beta=true&x=1", "x"] {
            assert!(check_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoted_client_text_is_bounded() {
        assert_eq!(quoted("claude-x"), "claude-x");
        let long = "é".repeat(5000);
        let shown = quoted(&long);
        assert_eq!(shown.chars().count(), 101);
        assert!(shown.ends_with('…'));
    }
}
