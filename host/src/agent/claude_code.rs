//! Claude Code as a job: the image that holds it, the command line and
//! environment that run it unattended inside the sandbox, and a reader for
//! its `stream-json` output that turns it into turns, tool calls and the
//! final answer.
//!
//! The image is `FROM scratch`: the CLI (a glibc program, taken from the
//! `claude-agent-sdk` wheel) and the programs its tools call (bash, the
//! core utilities, grep, git, …), each with the libraries it loads, all
//! from this machine.
//!
//! The sandbox is the permission: the container has no network, no
//! credential and a copy of the workspace, so Claude Code's own permission
//! prompts are skipped. Its background traffic (telemetry, update checks)
//! is turned off, since the gateway would refuse it anyway. Every model
//! name it could pick for a side task is set to the job's one approved
//! model, because the gateway refuses any other.

use std::path::Path;

use serde_json::Value;

use super::rootfs::{Rootfs, RootfsError};

/// The agent's name in job records and on the command line.
pub const NAME: &str = "claude-code";

/// The image `docker:build --agent claude-code` builds.
pub const IMAGE: &str = "claude-max-market-claude-code:latest";

/// The PyPI package whose wheel carries the CLI, the wheel for this
/// machine, and the CLI's place inside it.
pub const WHEEL_PACKAGE: &str = "claude-agent-sdk";
pub const WHEEL_PLATFORM: &str = "manylinux_2_17_x86_64.whl";
pub const WHEEL_MEMBER: &str = "claude_agent_sdk/_bundled/claude";
pub const WHEEL_VERSION: &str = "claude_agent_sdk/_bundled/claude.version";

/// Where the CLI goes in the image.
const CLI_PATH: &str = "/usr/local/bin/claude";

/// What its Bash tool cannot do without.
const REQUIRED: [&str; 3] = ["bash", "sh", "git"];

/// What its tools and the commands it writes commonly call; taken when this
/// machine has them.
const TOOLS: [&str; 58] = [
    "awk",
    "base64",
    "basename",
    "cat",
    "chmod",
    "cmp",
    "cp",
    "cut",
    "date",
    "diff",
    "dirname",
    "du",
    "echo",
    "env",
    "expr",
    "false",
    "file",
    "find",
    "grep",
    "gzip",
    "head",
    "id",
    "install",
    "less",
    "ln",
    "ls",
    "md5sum",
    "mkdir",
    "mktemp",
    "mv",
    "nproc",
    "od",
    "patch",
    "printf",
    "pwd",
    "readlink",
    "realpath",
    "rg",
    "rm",
    "rmdir",
    "sed",
    "seq",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "tail",
    "tar",
    "tee",
    "test",
    "timeout",
    "touch",
    "tr",
    "true",
    "uname",
    "uniq",
    "wc",
    "xargs",
];

/// The image's files: the CLI at `claude` and this machine's tools.
pub fn rootfs(claude: &Path) -> Result<Rootfs, RootfsError> {
    let mut fs = Rootfs::default();
    fs.executable(claude, CLI_PATH)?;
    for name in REQUIRED {
        fs.program(name)?;
    }
    for name in TOOLS {
        fs.optional_program(name)?;
    }
    Ok(fs)
}

/// The image's Dockerfile, for CLI `version`. Git needs a name to commit
/// under and the shell a home; the job's user is numeric like every job's.
pub fn dockerfile(version: &str) -> String {
    format!(
        "FROM scratch\n\
         COPY rootfs/ /\n\
         ENV PATH=/usr/local/bin:/usr/bin:/bin SHELL=/bin/bash \\\n    \
         GIT_AUTHOR_NAME=claude-code GIT_AUTHOR_EMAIL=claude-code@localhost \\\n    \
         GIT_COMMITTER_NAME=claude-code GIT_COMMITTER_EMAIL=claude-code@localhost\n\
         LABEL org.opencontainers.image.title=\"claude-code\" \\\n    \
         org.claude-max-market.role=\"agent\" org.claude-max-market.agent=\"{NAME}\" \\\n    \
         org.claude-max-market.agent-version=\"{version}\"\n\
         USER 65532:65532\n\
         ENTRYPOINT [\"{CLI_PATH}\"]\n"
    )
}

/// Claude Code's own ceiling for one response.
const MAX_OUTPUT_TOKENS: u64 = 32_000;

/// The command line: the prompt comes on stdin, so it appears neither in
/// the container's config nor in the job's audited command.
pub fn command(model: &str) -> Vec<String> {
    [
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        model,
        "--dangerously-skip-permissions",
    ]
    .map(String::from)
    .to_vec()
}

/// The environment the command needs, for a job with `budget_tokens`.
pub fn environment(model: &str, budget_tokens: u64) -> Vec<(String, String)> {
    let max_output = budget_tokens.clamp(1, MAX_OUTPUT_TOKENS);
    let mut env: Vec<(String, String)> = [
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_ERROR_REPORTING", "1"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    for key in [
        "ANTHROPIC_MODEL",
        "ANTHROPIC_SMALL_FAST_MODEL",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL",
        "ANTHROPIC_DEFAULT_SONNET_MODEL",
        "ANTHROPIC_DEFAULT_OPUS_MODEL",
        "CLAUDE_CODE_SUBAGENT_MODEL",
    ] {
        env.push((key.to_owned(), model.to_owned()));
    }
    env.push((
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS".to_owned(),
        max_output.to_string(),
    ));
    env
}

/// Something Claude Code did, read off its `stream-json` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// A new assistant turn began (counted from 1).
    Turn(u32),
    /// It called a tool, e.g. `Bash` with `ls -la`.
    ToolCall { name: String, summary: String },
    /// It finished: its final answer, whether it ended in an error, and
    /// how many turns it took.
    Finished {
        result: String,
        is_error: bool,
        turns: u32,
    },
}

/// Reads `stream-json` lines as they arrive, in chunks split anywhere.
#[derive(Debug, Default)]
pub struct StreamJson {
    pending: Vec<u8>,
    turns: u32,
}

/// A line longer than this is not one worth reading for progress (a tool
/// result of megabytes); it is skipped.
const MAX_LINE_BYTES: usize = 4 << 20;

/// How much of a tool's input a progress line shows.
const SUMMARY_CHARS: usize = 80;

impl StreamJson {
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(AgentEvent)) {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.line(&line, &mut on_event);
        }
        if self.pending.len() > MAX_LINE_BYTES {
            self.pending.clear();
        }
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(AgentEvent)) {
        let Ok(message) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        match message.get("type").and_then(Value::as_str) {
            Some("assistant") => {
                self.turns += 1;
                on_event(AgentEvent::Turn(self.turns));
                let content = message
                    .pointer("/message/content")
                    .and_then(Value::as_array);
                for block in content.into_iter().flatten() {
                    if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                        on_event(AgentEvent::ToolCall {
                            name: text(block.get("name")),
                            summary: summarise(block.get("input")),
                        });
                    }
                }
            }
            Some("result") => on_event(AgentEvent::Finished {
                result: text(message.get("result")),
                is_error: message.get("is_error").and_then(Value::as_bool) == Some(true),
                turns: self.turns,
            }),
            _ => {}
        }
    }
}

fn text(value: Option<&Value>) -> String {
    value.and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// One line about a tool's input: its command, path or pattern if it has
/// one, else the input itself, shortened.
fn summarise(input: Option<&Value>) -> String {
    let Some(input) = input else {
        return String::new();
    };
    let main = [
        "command",
        "file_path",
        "path",
        "pattern",
        "url",
        "description",
    ]
    .iter()
    .find_map(|key| input.get(key).and_then(Value::as_str));
    let whole = input.to_string();
    let text = main.unwrap_or(&whole).replace('\n', " ");
    match text.char_indices().nth(SUMMARY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_tool_calls_and_the_answer_are_read_across_chunks() {
        let stream = concat!(
            r#"{"type":"system","subtype":"init","model":"claude-sonnet-4-5"}"#,
            "\n",
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls -la\nwc -l"}}]}}"#,
            "\n",
            r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}}"#,
            "\n",
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Done."}]}}"#,
            "\n",
            r#"{"type":"result","subtype":"success","is_error":false,"result":"All done.","num_turns":2}"#,
            "\n",
        );
        let mut reader = StreamJson::default();
        let mut events = Vec::new();
        for chunk in stream.as_bytes().chunks(7) {
            reader.feed(chunk, |e| events.push(e));
        }
        assert_eq!(
            events,
            [
                AgentEvent::Turn(1),
                AgentEvent::ToolCall {
                    name: "Bash".into(),
                    summary: "ls -la wc -l".into()
                },
                AgentEvent::Turn(2),
                AgentEvent::Finished {
                    result: "All done.".into(),
                    is_error: false,
                    turns: 2
                }
            ]
        );
    }

    #[test]
    fn every_model_setting_is_the_jobs_and_output_fits_the_budget() {
        let env = environment("claude-haiku-4-5", 5000);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ANTHROPIC_SMALL_FAST_MODEL"), Some("claude-haiku-4-5"));
        assert_eq!(get("CLAUDE_CODE_MAX_OUTPUT_TOKENS"), Some("5000"));
        let big = environment("m", 1_000_000);
        assert!(big.contains(&("CLAUDE_CODE_MAX_OUTPUT_TOKENS".into(), "32000".into())));
        assert!(!command("m").iter().any(|a| a.contains("prompt")));
    }
}
