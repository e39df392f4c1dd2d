//! The job spec the host writes to the worker's stdin, and the Messages API
//! request body built from it.
//!
//! The spec is deliberately strict (unknown fields are rejected): a typo in a
//! field name on the host side should fail loudly here instead of being
//! silently dropped and producing a request the host did not mean to send.

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub model: String,
    pub max_tokens: u32,
    pub prompt: String,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default = "stream_by_default")]
    pub stream: bool,
}

fn stream_by_default() -> bool {
    true
}

impl JobSpec {
    pub fn parse(input: &[u8]) -> Result<JobSpec, String> {
        let spec: JobSpec = serde_json::from_slice(input).map_err(|e| e.to_string())?;
        spec.validate()?;
        Ok(spec)
    }

    // Mirrors the API's own checks, so an obviously doomed request is caught
    // before it costs a round trip through the gateway.
    fn validate(&self) -> Result<(), String> {
        if self.model.trim().is_empty() {
            return Err("`model` must not be empty".into());
        }
        if self.max_tokens == 0 {
            return Err("`max_tokens` must be at least 1".into());
        }
        if self.prompt.trim().is_empty() {
            return Err("`prompt` must contain non-whitespace text".into());
        }
        Ok(())
    }

    pub fn request_body(&self) -> Vec<u8> {
        let request = MessagesRequest {
            model: &self.model,
            max_tokens: self.max_tokens,
            messages: [UserMessage {
                role: "user",
                content: &self.prompt,
            }],
            system: self.system.as_deref(),
            stream: self.stream,
        };
        serde_json::to_vec(&request).expect("a struct of strings and numbers always serializes")
    }
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    messages: [UserMessage<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    stream: bool,
}

#[derive(Serialize)]
struct UserMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(v: Value) -> Result<JobSpec, String> {
        JobSpec::parse(v.to_string().as_bytes())
    }

    #[test]
    fn minimal_spec_defaults_to_streaming_without_system() {
        let spec = parse(json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "prompt": "hi"}))
            .unwrap();
        assert_eq!(
            spec,
            JobSpec {
                model: "claude-sonnet-4-5".into(),
                max_tokens: 1024,
                prompt: "hi".into(),
                system: None,
                stream: true,
            }
        );
    }

    #[test]
    fn full_spec_builds_the_messages_request() {
        let spec = parse(json!({
            "model": "m", "max_tokens": 5, "prompt": "p", "system": "s", "stream": false
        }))
        .unwrap();
        let body: Value = serde_json::from_slice(&spec.request_body()).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "m", "max_tokens": 5,
                "messages": [{"role": "user", "content": "p"}],
                "system": "s", "stream": false
            })
        );
    }

    #[test]
    fn system_is_left_out_of_the_request_when_absent() {
        let spec = parse(json!({"model": "m", "max_tokens": 1, "prompt": "p"})).unwrap();
        let body: Value = serde_json::from_slice(&spec.request_body()).unwrap();
        assert!(body.get("system").is_none());
        assert_eq!(body["stream"], json!(true));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse(json!({"model": "m", "max_tokens": 1, "prompt": "p", "temperature": 1}))
            .unwrap_err();
        assert!(err.contains("unknown field `temperature`"), "{err}");
    }

    #[test]
    fn missing_fields_are_named() {
        let err = parse(json!({"model": "m", "prompt": "p"})).unwrap_err();
        assert!(err.contains("missing field `max_tokens`"), "{err}");
    }

    #[test]
    fn bad_json_is_reported() {
        let err = JobSpec::parse(b"{\"model\": ").unwrap_err();
        assert!(err.contains("EOF"), "{err}");
        assert!(JobSpec::parse(b"").is_err());
    }

    #[test]
    fn wrong_types_are_rejected() {
        assert!(parse(json!({"model": "m", "max_tokens": -1, "prompt": "p"})).is_err());
        assert!(parse(json!({"model": "m", "max_tokens": 1, "prompt": 3})).is_err());
        assert!(
            parse(json!({"model": "m", "max_tokens": 1, "prompt": "p", "stream": "yes"})).is_err()
        );
    }

    #[test]
    fn empty_values_are_rejected() {
        let err = parse(json!({"model": "m", "max_tokens": 0, "prompt": "p"})).unwrap_err();
        assert!(err.contains("max_tokens"), "{err}");
        let err = parse(json!({"model": " ", "max_tokens": 1, "prompt": "p"})).unwrap_err();
        assert!(err.contains("model"), "{err}");
        let err = parse(json!({"model": "m", "max_tokens": 1, "prompt": "\n "})).unwrap_err();
        assert!(err.contains("prompt"), "{err}");
    }
}
