//! A Messages request body as the gateway reads and rewrites it. Only the
//! top level is parsed (each value kept as its raw JSON text), so a body of
//! megabytes of conversation is neither rebuilt nor reordered inside, and a
//! rewrite changes exactly the fields it means to: `max_tokens` (and a
//! thinking budget that no longer fits under it) when the job's budget
//! clamps a request.

use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The fields of a Messages request that a token count takes; the rest
/// (`max_tokens`, `stream`, sampling, metadata) it refuses or ignores.
const COUNT_FIELDS: [&str; 6] = [
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
];

/// Content kinds whose token cost has no bound in their byte size: an image
/// or a PDF page costs far more tokens than its base64 is long, and a
/// redacted thinking block is opaque. Matched as whole JSON strings, so the
/// words inside text (where quotes are escaped) never match.
const UNBOUNDED_KINDS: [&str; 4] = [
    "\"image\"",
    "\"document\"",
    "\"redacted_thinking\"",
    "\"container_upload\"",
];

/// Room for what the upstream adds to the input beyond the body's own
/// text when the request defines tools: the tool-use system prompt, some
/// hundreds of tokens.
const TOOLS_OVERHEAD_TOKENS: u64 = 4096;

/// Room for the framing of a request without tools. A message costs a few
/// tokens of framing, and its JSON (`{"role":"user","content":""}`) is
/// already more bytes than that, so this is a floor, not a per-message sum.
pub const INPUT_OVERHEAD_TOKENS: u64 = 256;

/// The smallest thinking budget the Messages API accepts.
const MIN_THINKING_TOKENS: u64 = 1024;

/// A request body's top-level fields, in order, each as raw JSON.
pub(crate) struct Body {
    fields: Vec<(String, Box<RawValue>)>,
    len: usize,
    /// Whether the body holds content whose tokens its bytes cannot bound.
    unbounded: bool,
}

impl Body {
    /// The room added to the body's size for what the upstream adds.
    fn overhead(&self) -> u64 {
        let tools = self
            .get("tools")
            .is_some_and(|raw| !matches!(raw.get().trim(), "[]" | "null"));
        if tools {
            TOOLS_OVERHEAD_TOKENS
        } else {
            INPUT_OVERHEAD_TOKENS
        }
    }

    /// Parses the top level, refusing anything but an object with unique
    /// keys: with `{"model":"a","model":"b"}` the gateway and the upstream
    /// could otherwise read different models.
    pub fn parse(bytes: &[u8]) -> Result<Body, String> {
        let fields: Fields = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let unbounded = UNBOUNDED_KINDS
            .iter()
            .any(|kind| contains(bytes, kind.as_bytes()));
        Ok(Body {
            fields: fields.0,
            len: bytes.len(),
            unbounded,
        })
    }

    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// `key` parsed as JSON, when present and valid.
    pub fn value(&self, key: &str) -> Option<Value> {
        self.get(key)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }

    /// An upper bound on the request's input tokens from its bytes alone: a
    /// token is at least one byte of text, and JSON only adds bytes. `None`
    /// when the body holds images, documents or other content that can cost
    /// more tokens than bytes; then only the upstream can count it.
    pub fn input_bound(&self) -> Option<u64> {
        (!self.unbounded).then(|| self.len as u64 + self.overhead())
    }

    /// The body with `max_tokens` set to `max_tokens`, and an enabled
    /// thinking budget lowered below it (or thinking turned off when no
    /// budget the API accepts fits).
    pub fn with_max_tokens(&self, max_tokens: u64) -> Bytes {
        let mut fields: Vec<(String, String)> = self
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.get().to_owned()))
            .collect();
        for (key, raw) in &mut fields {
            match key.as_str() {
                "max_tokens" => *raw = max_tokens.to_string(),
                "thinking" => {
                    if let Some(thinking) = fit_thinking(raw, max_tokens) {
                        *raw = thinking;
                    }
                }
                _ => {}
            }
        }
        join(&fields)
    }

    /// The body of a token count for this request.
    pub fn count_body(&self) -> Bytes {
        let fields: Vec<(String, String)> = self
            .fields
            .iter()
            .filter(|(k, _)| COUNT_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.get().to_owned()))
            .collect();
        join(&fields)
    }
}

/// A lowered `thinking` object when its budget does not fit under
/// `max_tokens`; `None` when it fits, or is not an enabled budget.
fn fit_thinking(raw: &str, max_tokens: u64) -> Option<String> {
    let mut thinking: Map<String, Value> = serde_json::from_str(raw).ok()?;
    if thinking.get("type").and_then(Value::as_str) != Some("enabled") {
        return None;
    }
    let budget = thinking.get("budget_tokens").and_then(Value::as_u64)?;
    if budget < max_tokens {
        return None;
    }
    if max_tokens > MIN_THINKING_TOKENS {
        thinking.insert("budget_tokens".into(), Value::from(max_tokens - 1));
        serde_json::to_string(&thinking).ok()
    } else {
        Some(r#"{"type":"disabled"}"#.to_owned())
    }
}

fn join(fields: &[(String, String)]) -> Bytes {
    let mut out = String::from("{");
    for (i, (key, raw)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
        out.push(':');
        out.push_str(raw);
    }
    out.push('}');
    Bytes::from(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The top-level fields in order, refusing a key seen twice.
struct Fields(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = Fields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object (a Messages API request)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("duplicate field `{key}`")));
                    }
                    let value: Box<RawValue> = map.next_value()?;
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order_and_duplicates_are_refused() {
        let body = Body::parse(br#"{"model":"m","max_tokens":10,"messages":[]}"#).unwrap();
        assert_eq!(body.get("model").unwrap().get(), r#""m""#);
        let rewritten = body.with_max_tokens(7);
        assert_eq!(
            &rewritten[..],
            br#"{"model":"m","max_tokens":7,"messages":[]}"#
        );
        let err = Body::parse(br#"{"model":"a","model":"b"}"#).err().unwrap();
        assert!(err.contains("duplicate field `model`"), "{err}");
        assert!(Body::parse(b"[1]").is_err());
        assert!(Body::parse(br#"{"a":1} x"#).is_err());
    }

    #[test]
    fn text_is_bounded_by_its_bytes_and_images_are_not() {
        let text = br#"{"messages":[{"role":"user","content":"an \"image\" of words"}]}"#;
        let body = Body::parse(text).unwrap();
        assert_eq!(
            body.input_bound(),
            Some(text.len() as u64 + INPUT_OVERHEAD_TOKENS)
        );
        let tools = br#"{"messages":[],"tools":[{"name":"Bash","input_schema":{}}]}"#;
        let with_tools = Body::parse(tools).unwrap();
        assert_eq!(
            with_tools.input_bound(),
            Some(tools.len() as u64 + TOOLS_OVERHEAD_TOKENS)
        );
        let image = br#"{"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]}"#;
        assert_eq!(Body::parse(image).unwrap().input_bound(), None);
    }

    #[test]
    fn a_thinking_budget_is_lowered_under_a_clamped_max_tokens() {
        let body = Body::parse(
            br#"{"max_tokens":32000,"thinking":{"type":"enabled","budget_tokens":31999,"display":"omitted"}}"#,
        )
        .unwrap();
        let lowered: Value = serde_json::from_slice(&body.with_max_tokens(5000)).unwrap();
        assert_eq!(lowered["max_tokens"], 5000);
        assert_eq!(lowered["thinking"]["budget_tokens"], 4999);
        assert_eq!(lowered["thinking"]["display"], "omitted");
        let off: Value = serde_json::from_slice(&body.with_max_tokens(800)).unwrap();
        assert_eq!(off["thinking"], serde_json::json!({"type": "disabled"}));
        let roomy: Value = serde_json::from_slice(&body.with_max_tokens(32000)).unwrap();
        assert_eq!(roomy["thinking"]["budget_tokens"], 31999);
    }

    #[test]
    fn a_count_takes_only_what_the_count_endpoint_accepts() {
        let body = Body::parse(
            br#"{"model":"m","max_tokens":9,"stream":true,"system":"s","messages":[],"metadata":{}}"#,
        )
        .unwrap();
        assert_eq!(
            &body.count_body()[..],
            br#"{"model":"m","system":"s","messages":[]}"#
        );
    }
}
