//! A whole conversation scripted in a JSON file, so programs outside Rust
//! (benchmark scripts driving the `mock-anthropic` binary with `--script`)
//! can script what the library's callers script with
//! [`MockServer::push`](crate::MockServer::push). Only parses and checks; the
//! server plays the scenarios.
//!
//! # Format
//!
//! One JSON object with two optional fields: `scenarios`, a list queued in
//! order, and `default`, the scenario for every request once the queue is
//! empty. Each scenario is an object tagged by `type`, with the fields of
//! the [`Scenario`] variant of that name in snake case:
//!
//! ```json
//! {
//!   "scenarios": [
//!     {"type": "tool_use", "text": "Let me run that.",
//!      "calls": [{"name": "Bash", "input": {"command": "echo hi > f.txt"}}],
//!      "input_tokens": 1200, "output_tokens": 40},
//!     {"type": "reply", "text": "Done.", "input_tokens": 1300, "output_tokens": 3},
//!     {"type": "error", "status": 529, "kind": "overloaded_error",
//!      "message": "Overloaded", "retry_after": 1},
//!     {"type": "rate_limited", "retry_after": 2},
//!     {"type": "overloaded"},
//!     {"type": "mid_stream_error", "after_deltas": 3},
//!     {"type": "hang"}
//!   ],
//!   "default": {"type": "tool_use",
//!               "calls": [{"name": "Bash", "input": {"command": "true"}}],
//!               "input_tokens": 500, "output_tokens": 20}
//! }
//! ```
//!
//! A tool call's `id` may be given; left out, every answer makes up a fresh
//! `toolu_01…`. `text` of a `tool_use` turn and `retry_after` of an `error`
//! may be left out. Unknown fields are refused (serde cannot do so for
//! `overloaded` and `hang`, which take none), so a misspelt one cannot
//! silently change what is played.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Scenario;

/// A parsed, checked script.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Queued in order, as by [`crate::MockServer::push`].
    #[serde(default)]
    pub scenarios: Vec<Scenario>,
    /// As set by [`crate::MockServer::set_default`].
    #[serde(default)]
    pub default: Option<Scenario>,
}

/// Why a script could not be used.
#[derive(Debug)]
pub enum ScriptError {
    /// The file could not be read.
    Read { path: PathBuf, source: io::Error },
    /// The text is not JSON of the script format.
    Parse { source: serde_json::Error },
    /// A scenario the mock cannot play; `at` is `scenarios.N` or `default`.
    Invalid { at: String, reason: String },
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScriptError::Read { path, source } => {
                write!(f, "cannot read script {}: {source}", path.display())
            }
            ScriptError::Parse { source } => write!(
                f,
                "not a mock-anthropic script ({source}); the format is in the crate's \
                 script module documentation"
            ),
            ScriptError::Invalid { at, reason } => write!(f, "script {at}: {reason}"),
        }
    }
}

impl std::error::Error for ScriptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScriptError::Read { source, .. } => Some(source),
            ScriptError::Parse { source } => Some(source),
            ScriptError::Invalid { .. } => None,
        }
    }
}

impl Script {
    /// Parses and checks the JSON text of a script.
    ///
    /// # Errors
    /// [`ScriptError::Parse`] for text that is not the format,
    /// [`ScriptError::Invalid`] for a scenario the mock cannot play (an
    /// error status that is no HTTP status, a tool call without a name or
    /// with a non-object input).
    pub fn from_json(text: &str) -> Result<Script, ScriptError> {
        let script: Script =
            serde_json::from_str(text).map_err(|source| ScriptError::Parse { source })?;
        let queued = script
            .scenarios
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("scenarios.{i}"), s));
        let default = script.default.iter().map(|s| ("default".to_owned(), s));
        for (at, scenario) in queued.chain(default) {
            if let Some(reason) = scenario.problem() {
                return Err(ScriptError::Invalid { at, reason });
            }
        }
        Ok(script)
    }

    /// Reads, parses and checks the script at `path`.
    ///
    /// # Errors
    /// [`ScriptError::Read`] if the file cannot be read; otherwise as
    /// [`Script::from_json`].
    pub fn load(path: &Path) -> Result<Script, ScriptError> {
        let text = fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: path.to_owned(),
            source,
        })?;
        Script::from_json(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("script.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| *l != "//! ```json")
            .skip(1)
            .take_while(|l| *l != "//! ```")
            .map(|l| l.trim_start_matches("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        let script = Script::from_json(&example).unwrap();
        assert_eq!(script.scenarios.len(), 7);
        assert!(matches!(script.default, Some(Scenario::ToolUse { .. })));
    }

    #[test]
    fn bad_scripts_say_where() {
        let err = Script::from_json(r#"{"scenarios": [{"type": "overloaded"}, {"type": "error", "status": 7, "kind": "k", "message": "m"}]}"#)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "script scenarios.1: 7 is not an HTTP status code"
        );
        let err = Script::from_json(r#"{"default": {"type": "tool_use", "calls": [], "input_tokens": 1, "output_tokens": 1}}"#)
            .unwrap_err();
        assert!(err.to_string().starts_with("script default:"), "{err}");
        let err = Script::from_json(r#"{"scenario": []}"#).unwrap_err();
        assert!(matches!(err, ScriptError::Parse { .. }), "{err}");
        assert_eq!(Script::from_json("{}").unwrap().scenarios, vec![]);
    }
}
