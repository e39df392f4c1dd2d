//! A running job as the person or script watching sees it.
//!
//! On a terminal: the job's output as it arrives, with a status line on
//! stderr (a bar of the tokens used against the budget, requests made,
//! elapsed time, and for an agent its turn and last tool call) that redraws
//! itself above the output; before that, a bar of the job image's build
//! steps when the first job builds it. Not on a terminal: the output alone. With `--json`: one JSON
//! event per line on stdout, the last one the job's report. Claude Code's
//! `stream-json` is read rather than shown: its tool calls become lines on
//! stderr and its final answer is printed at the end.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::agent::claude_code::{self, AgentEvent, StreamJson};
use crate::gateway::Metered;
use crate::ops::{JobEvent, JobReport};
use crate::runner::Stream;

use super::bars::{Shown, StepBar};

/// How often the status line redraws on its own (for the elapsed time).
const TICK: Duration = Duration::from_millis(250);

pub struct JobView {
    json: bool,
    /// The job image's build, while the first job builds it.
    steps: Option<StepBar>,
    bar: Option<ProgressBar>,
    budget_tokens: u64,
    totals: Metered,
    /// Set for Claude Code: its stdout is read, not shown.
    agent: Option<StreamJson>,
    turn: u32,
    last_tool: String,
    answer: Option<String>,
    /// Stdout, kept for a `--json` report of a job without an agent.
    captured: Vec<u8>,
    /// While the status line is shown, output goes out a whole line at a
    /// time (the status line would split a partial one): what is held.
    partial: [Vec<u8>; 2],
}

impl JobView {
    /// A view for a job that runs `agent` (empty for none), in JSON when
    /// `json`.
    pub fn new(json: bool, agent: &str) -> JobView {
        JobView {
            json,
            steps: Some(StepBar::new(Shown::new(json))),
            bar: None,
            budget_tokens: 0,
            totals: Metered::default(),
            agent: (agent == claude_code::NAME).then(StreamJson::default),
            turn: 0,
            last_tool: String::new(),
            answer: None,
            captured: Vec::new(),
            partial: [Vec::new(), Vec::new()],
        }
    }

    pub fn event(&mut self, event: JobEvent<'_>) {
        match event {
            JobEvent::BuildingImage { tag } => {
                self.line(json!({ "event": "building_image", "tag": tag }), || {
                    format!(
                        "the job image {tag} is not here yet: building it once from what this \
                         binary carries (as `claude-max-market docker:build` does)"
                    )
                })
            }
            JobEvent::BuildStep(step) => {
                if let Some(steps) = &mut self.steps {
                    steps.step(step);
                }
            }
            JobEvent::Admitted { job_id, grant } => {
                if let Some(steps) = self.steps.take() {
                    steps.finish();
                }
                self.budget_tokens = grant.tokens;
                // Only now: approval may have asked a question on stderr.
                if !self.json && io::stderr().is_terminal() {
                    let bar = ProgressBar::new(grant.tokens);
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {elapsed} [{bar:20}] {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar.enable_steady_tick(TICK);
                    self.bar = Some(bar);
                }
                self.line(
                    json!({ "event": "admitted", "job": job_id, "grant": grant }),
                    || {
                        format!(
                            "job {job_id} admitted: {} tokens, {} requests, {} s",
                            grant.tokens, grant.requests, grant.timeout_secs
                        )
                    },
                );
                self.redraw();
            }
            JobEvent::Started { container_id } => {
                let id = &container_id[..container_id.len().min(12)];
                self.line(
                    json!({ "event": "started", "container": container_id }),
                    || format!("container {id} started"),
                );
            }
            JobEvent::Usage(totals) => {
                self.totals = totals;
                if self.json {
                    self.print_json(json!({
                        "event": "usage",
                        "requests": totals.requests,
                        "input_tokens": totals.input_tokens,
                        "output_tokens": totals.output_tokens,
                        "budget_tokens": self.budget_tokens,
                    }));
                }
                self.redraw();
            }
            JobEvent::Output(stream, bytes) => self.output(stream, bytes),
        }
    }

    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        if let (Stream::Stdout, Some(reader)) = (stream, self.agent.as_mut()) {
            let mut events = Vec::new();
            reader.feed(bytes, |e| events.push(e));
            for event in events {
                self.agent_event(event);
            }
            return;
        }
        if self.json {
            if matches!(stream, Stream::Stdout) {
                self.captured.extend_from_slice(bytes);
            }
            let name = match stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            let text = String::from_utf8_lossy(bytes);
            self.print_json(json!({ "event": "output", "stream": name, "text": text }));
            return;
        }
        let Some(bar) = &self.bar else {
            write_out(stream, bytes);
            return;
        };
        let held = &mut self.partial[stream as usize];
        held.extend_from_slice(bytes);
        if let Some(end) = held.iter().rposition(|b| *b == b'\n') {
            let lines: Vec<u8> = held.drain(..=end).collect();
            bar.suspend(|| write_out(stream, &lines));
        }
    }

    fn agent_event(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::Turn(turn) => {
                self.turn = turn;
                if self.json {
                    self.print_json(json!({ "event": "turn", "turn": turn }));
                }
            }
            AgentEvent::ToolCall { name, summary } => {
                self.last_tool = format!("{name}: {summary}");
                let turn = self.turn;
                self.line(
                    json!({ "event": "tool_call", "turn": turn, "tool": name, "input": summary }),
                    || format!("turn {turn} · {name}: {summary}"),
                );
            }
            AgentEvent::Finished {
                result,
                is_error,
                turns,
            } => {
                if self.json {
                    self.print_json(json!({
                        "event": "answer", "text": result, "is_error": is_error, "turns": turns,
                    }));
                }
                self.answer = Some(result);
            }
        }
        self.redraw();
    }

    /// Output held back for want of a newline, now that the bar is gone.
    fn flush_partial(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let held = std::mem::take(&mut self.partial[stream as usize]);
            if !held.is_empty() {
                write_out(stream, &held);
            }
        }
    }

    /// One event: a JSON line, or a line for people on stderr above the bar.
    fn line(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            self.print_json(value);
            return;
        }
        let text = human();
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn print_json(&self, value: serde_json::Value) {
        let mut w = io::stdout().lock();
        let _ = writeln!(w, "{value}").and_then(|()| w.flush());
    }

    fn redraw(&self) {
        let Some(bar) = &self.bar else { return };
        let t = &self.totals;
        let used = t.total_tokens();
        let percent = used.saturating_mul(100) / self.budget_tokens.max(1);
        bar.set_position(used.min(self.budget_tokens));
        let mut message = format!(
            "{} request{} · {used}/{} tokens ({percent}%)",
            t.requests,
            if t.requests == 1 { "" } else { "s" },
            self.budget_tokens
        );
        if self.turn > 0 {
            message.push_str(&format!(" · turn {}", self.turn));
        }
        if !self.last_tool.is_empty() {
            let tool: String = self.last_tool.chars().take(60).collect();
            message.push_str(&format!(" · {tool}"));
        }
        bar.set_message(message);
    }

    /// Ends the view: the agent's answer on stdout, then the report (the
    /// last JSON line with `--json`, a summary line on stderr otherwise).
    pub fn finish(mut self, report: &JobReport) -> io::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.flush_partial();
        if self.json {
            let output = match &self.answer {
                Some(answer) => answer.clone(),
                None => String::from_utf8_lossy(&self.captured).into_owned(),
            };
            self.print_json(json!({ "event": "end", "job": report, "output": output }));
            return Ok(());
        }
        if let Some(answer) = &self.answer {
            let mut w = io::stdout().lock();
            writeln!(w, "{}", answer.trim_end())?;
            w.flush()?;
        }
        eprintln!("{}", summary(report));
        Ok(())
    }
}

/// Writes job output to our own stdout or stderr. Best effort on a closed
/// terminal: the job's log file keeps all of it.
fn write_out(stream: Stream, bytes: &[u8]) {
    let _ = match stream {
        Stream::Stdout => {
            let mut w = io::stdout().lock();
            w.write_all(bytes).and_then(|()| w.flush())
        }
        Stream::Stderr => io::stderr().write_all(bytes),
    };
}

/// One line on how the job went, for stderr.
pub fn summary(r: &JobReport) -> String {
    let tokens = format!(
        "{} request{}, {} in + {} out tokens of a {}-token budget",
        r.requests,
        if r.requests == 1 { "" } else { "s" },
        r.input_tokens,
        r.output_tokens,
        r.granted.tokens
    );
    let secs = r.elapsed_ms as f64 / 1000.0;
    let code = r
        .exit_code
        .map(|c| format!(", exit code {c}"))
        .unwrap_or_default();
    let changes = r.workspace.as_ref().map_or(String::new(), |w| {
        if w.returned {
            format!(
                "; workspace: {} added, {} changed, {} removed (`claude-max-market result {}` \
                 shows them, `--apply` copies them into {})",
                w.added.len(),
                w.changed.len(),
                w.removed.len(),
                r.job_id,
                w.folder
            )
        } else {
            "; its workspace did not come back".to_owned()
        }
    });
    match r.state.as_str() {
        "finished" => format!(
            "job {} finished in {secs:.1} s: {tokens}{changes}",
            r.job_id
        ),
        state => format!(
            "job {} {}{}{code}: {tokens}{changes}; its output is in `claude-max-market logs --job {}`",
            r.job_id,
            state.replace('_', " "),
            r.detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default(),
            r.job_id
        ),
    }
}
