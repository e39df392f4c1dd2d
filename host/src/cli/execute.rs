//! `execute` runs a job: a prompt answered by the built-in worker
//! (`--prompt TEXT | --file PATH`), a command in an image
//! (`--image REF [--workspace DIR] [--env NAME=VALUE]... -- COMMAND [ARGS...]`),
//! or an agent on a folder (`--agent claude-code --workspace DIR --prompt …`),
//! within a budget (`--budget-tokens`, `--max-requests`, `--timeout`).
//! `--dry-run` shows each role's decision and runs nothing; `--market` runs
//! the same job on a peer, its workspace sent and returned encrypted.
//!
//! The job's output streams as it arrives with a status line on a terminal;
//! with `--json`, one event per line, the last one the report. The exit code
//! is 0 when the job finished (its command exited 0), 1 when it failed,
//! timed out, ran out of budget or was cancelled (the report carries the
//! command's own exit code), 3 when policy refused it.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::agent::Agent;
use crate::ops::execute::{DryRun, ExecuteOptions, Program, PromptSource};
use crate::ops::job::AskDetails;
use crate::ops::market::{MarketExecuteOptions, MarketProgress};
use crate::ops::{self, Context};
use crate::policy::Outcome;

use super::output::short;
use super::progress::JobView;
use super::{Finish, Output, prompt, serve_metrics, usage_error};

/// The agents `--agent` names.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AgentArg {
    /// Claude Code, in the image `docker:build --agent claude-code` builds.
    ClaudeCode,
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("input").args(["prompt", "file"]))]
pub struct Args {
    /// The prompt text (for the built-in worker, or for --agent).
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Run COMMAND (after `--`) in this image, which must be present locally.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// Run an agent on the prompt (default image: what `docker:build --agent` builds).
    #[arg(long, value_name = "AGENT", value_enum)]
    agent: Option<AgentArg>,
    /// Copy this folder in as the job's writable /workspace (never written back unless you `result --apply`).
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Set NAME=VALUE in the job's environment (NAME alone takes this shell's value).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Model to use (default: api.defaultModel).
    #[arg(long, value_name = "M")]
    model: Option<String>,
    /// A prompt job's largest response in tokens (default: 8192).
    #[arg(long, value_name = "N")]
    max_tokens: Option<u32>,
    /// Tokens (input + output, all requests) the job may use (default: what a prompt needs, else limits.maxTokensPerTask).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    budget_tokens: Option<u64>,
    /// Messages API requests the job may make (default: 1 for a prompt, else limits.requestsPerJob).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_requests: Option<u32>,
    /// Stop the job after this long: seconds, or with a unit (90s, 10m, 1h30m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<u32>,
    /// Ask to let the job use server-side tools that reach the internet (web search and fetch, code execution).
    #[arg(long)]
    allow_egress: bool,
    /// Ask approval to skip the prompt (honoured only if compliance.allowAutoApprove is on).
    #[arg(long)]
    approve_all: bool,
    /// Run the policy pipeline and print each role's decision; run nothing.
    #[arg(long, conflicts_with = "market")]
    dry_run: bool,
    /// Run the job on a peer through the market instead of here (a prompt, a command or an agent; the workspace travels encrypted).
    #[arg(long)]
    market: bool,
    /// With --market: the most to pay in RUV (never above market.maxBidPrice).
    #[arg(long, value_name = "N", requires = "market")]
    max_price: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics while the job runs.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// The command to run in --image, and its arguments.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// `NAME=VALUE`, or `NAME` to pass this shell's value on.
fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) => Ok((name.to_owned(), value.to_owned())),
        None => std::env::var(text)
            .map(|value| (text.to_owned(), value))
            .map_err(|_| format!("{text} is not set here; give it as {text}=VALUE")),
    }
}

/// Seconds, or a number with a unit: `90`, `90s`, `10m`, `1h30m`.
fn parse_duration(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a duration; use seconds or e.g. 90s, 10m, 1h30m");
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() {
        total = total.saturating_add(number.parse::<u64>().map_err(|_| bad())?);
    }
    match u32::try_from(total) {
        Ok(0) | Err(_) => Err(format!("`{text}` must be between 1 s and {} s", u32::MAX)),
        Ok(secs) => Ok(secs),
    }
}

impl Args {
    /// What runs, checked against what the flags may combine with.
    fn program(&mut self) -> Result<Program, String> {
        let prompt = match (self.prompt.take(), self.file.take()) {
            (Some(text), _) => Some(PromptSource::Text(text)),
            (None, Some(path)) => Some(PromptSource::File(path)),
            (None, None) => None,
        };
        let command = std::mem::take(&mut self.command);
        match (self.agent, command.is_empty(), prompt) {
            (Some(_), false, _) => Err("--agent runs its own command; drop `-- COMMAND`".into()),
            (Some(AgentArg::ClaudeCode), true, Some(prompt)) => Ok(Program::Agent {
                agent: Agent::ClaudeCode,
                image: self.image.take(),
                prompt,
            }),
            (Some(_), true, None) => {
                Err("--agent needs the task: --prompt TEXT or --file PATH".into())
            }
            (None, false, Some(_)) => Err(
                "a command gets no prompt from execute; pass it in COMMAND's own arguments, \
                 or use --agent claude-code"
                    .into(),
            ),
            (None, false, None) => match self.image.take() {
                Some(image) => Ok(Program::Command {
                    image,
                    argv: command,
                }),
                None => Err("`-- COMMAND` needs --image REF to run in".into()),
            },
            (None, true, Some(prompt)) if self.image.is_none() => Ok(Program::Prompt(prompt)),
            (None, true, Some(_)) => Err("--image needs `-- COMMAND` (or --agent)".into()),
            (None, true, None) => Err(
                "nothing to run: give --prompt TEXT (or --file PATH), `--image REF -- COMMAND`, \
                 or --agent claude-code --prompt TEXT"
                    .into(),
            ),
        }
    }
}

pub fn run(home: Option<PathBuf>, mut args: Args, out: &Output) -> anyhow::Result<Finish> {
    let _metrics = serve_metrics(args.metrics)?;
    let program = match args.program() {
        Ok(program) => program,
        Err(usage) => usage_error(&usage),
    };
    let opts = ExecuteOptions {
        program,
        model: args.model,
        max_tokens: args.max_tokens,
        budget_tokens: args.budget_tokens,
        max_requests: args.max_requests,
        timeout_secs: args.timeout,
        workspace: args.workspace,
        env: args.env,
        egress: args.allow_egress,
        approve_all: args.approve_all,
    };
    let mut ctx = Context::open(home)?;
    if args.market {
        let opts = MarketExecuteOptions {
            job: opts,
            max_price: args.max_price,
        };
        return run_on_market(&mut ctx, &opts, out);
    }
    if !args.dry_run {
        return run_job(&mut ctx, &opts, out);
    }
    let dry = ops::execute::dry_run(&mut ctx, &opts)?;
    out.emit(&dry, |w| print(w, &dry, out))?;
    Ok(if dry.pipeline.decision == Outcome::Deny {
        Finish::Denied
    } else {
        Finish::Done
    })
}

/// Progress on stderr as the task moves; the output on stdout as the
/// provider streams it, then whatever of the checked result the stream did
/// not show (with --json, one document at the end).
fn run_on_market(
    ctx: &mut Context,
    opts: &MarketExecuteOptions,
    out: &Output,
) -> anyhow::Result<Finish> {
    let quiet = out.json();
    let mut streamed = Vec::new();
    let mut confirm = |ask: &AskDetails| ask_owner(ask);
    let run = ops::market::execute(ctx, opts, &mut confirm, &mut |p| {
        if quiet {
            return;
        }
        let line = match p {
            MarketProgress::Output(piece) => {
                streamed.extend_from_slice(piece);
                // Best effort on a closed terminal: `market result` has it all.
                let mut w = io::stdout().lock();
                let _ = w.write_all(piece).and_then(|()| w.flush());
                return;
            }
            MarketProgress::AwaitingOffer { reasons, wait_secs } => {
                format!("no offer fits yet ({reasons}); waiting up to {wait_secs} s for one")
            }
            MarketProgress::Posted {
                task,
                bid,
                candidates,
            } => format!(
                "task {task} posted: bid up to {bid} RUV, {} candidate provider(s)",
                candidates.len()
            ),
            MarketProgress::Claimed { provider, price } => {
                format!("claimed by {} at {price} RUV", short(provider))
            }
            MarketProgress::Locked { amount } => format!("{amount} RUV locked in escrow"),
            MarketProgress::Running => "running on the provider".to_owned(),
        };
        eprintln!("{line}");
    })?;
    let shown = run.output.as_bytes().starts_with(&streamed);
    out.emit(&run, |w| {
        let rest = if shown {
            &run.output.as_bytes()[streamed.len()..]
        } else {
            run.output.as_bytes()
        };
        w.write_all(rest)?;
        if !run.output.is_empty() && !run.output.ends_with('\n') {
            writeln!(w)?;
        }
        Ok(())
    })?;
    if !quiet {
        if !shown {
            eprintln!(
                "the streamed output above is not the provider's checked result; do not rely on it"
            );
        }
        let price = match (run.paid, run.price) {
            (Some(paid), Some(locked)) if paid < locked => {
                format!(" for {paid} RUV (of {locked} locked; the rest came back)")
            }
            (_, Some(p)) => format!(" for {p} RUV"),
            _ => String::new(),
        };
        let by = run
            .provider
            .as_deref()
            .map(|p| format!(" by {}", short(p)))
            .unwrap_or_default();
        let detail = run
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        eprintln!(
            "task {} {}{by}{price} in {} ms ({} in / {} out tokens){detail}",
            run.task, run.outcome, run.elapsed_ms, run.input_tokens, run.output_tokens
        );
        if let Some(ws) = &run.workspace {
            eprintln!(
                "workspace: {} added, {} changed, {} removed; `result {}` shows the diff \
                 (--diff) and applies it (--apply)",
                ws.added.len(),
                ws.changed.len(),
                ws.removed.len(),
                run.task
            );
        }
    }
    Ok(if run.completed() {
        Finish::Done
    } else {
        Finish::Failed
    })
}

fn run_job(ctx: &mut Context, opts: &ExecuteOptions, out: &Output) -> anyhow::Result<Finish> {
    let mut confirm = |ask: &AskDetails| ask_owner(ask);
    let agent = match opts.program {
        Program::Agent { agent, .. } => agent.name(),
        _ => "",
    };
    let mut view = JobView::new(out.json(), agent);
    let report = ops::execute::run(ctx, opts, &mut confirm, &mut |event| view.event(event))?;
    view.finish(&report)?;
    Ok(if report.state == "finished" {
        Finish::Done
    } else {
        Finish::Failed
    })
}

/// Shows what approval asks about and asks; `None` without a terminal.
fn ask_owner(ask: &AskDetails) -> Option<bool> {
    if !prompt::interactive() {
        return None;
    }
    eprintln!("Approval asks: {}", ask.reason);
    eprintln!("  job        {}", ask.job_id);
    eprintln!("  model      {}", ask.model);
    eprintln!("  image      {}", ask.image);
    if !ask.command.is_empty() {
        eprintln!("  command    {}", ask.command.join(" "));
    }
    if let Some((files, bytes)) = ask.workspace {
        eprintln!("  workspace  {files} files, {bytes} bytes");
    }
    let b = &ask.budget;
    eprintln!(
        "  budget     {} tokens, {} requests, {} s",
        b.tokens, b.requests, b.timeout_secs
    );
    if !ask.prompt_start.is_empty() {
        let ellipsis = if ask.prompt_truncated { "…" } else { "" };
        eprintln!(
            "  prompt     {}{ellipsis}",
            ask.prompt_start.replace('\n', "\n             ")
        );
    }
    // A failed read of the answer is a no, which is also the default.
    Some(prompt::confirm("Run this job?").unwrap_or(false))
}

fn print(w: &mut dyn Write, dry: &DryRun, out: &Output) -> io::Result<()> {
    let job = &dry.job;
    let what = if job.command.is_empty() {
        format!("prompt {} bytes", job.prompt_bytes)
    } else {
        format!("`{}`", job.command.join(" "))
    };
    writeln!(
        w,
        "job {} ({}, {what} in {}, budget {} tokens / {} requests / {} s)",
        job.id,
        job.model,
        job.image,
        job.budget.tokens,
        job.budget.requests,
        job.budget.timeout_secs
    )?;
    writeln!(w, "decision: {}", out.outcome(dry.pipeline.decision))?;
    for r in &dry.pipeline.roles {
        let detail = match (&r.reason, &r.grant, &r.quote) {
            (Some(reason), _, _) => reason.clone(),
            (None, Some(g), _) => format!(
                "grant {} tokens, {} requests, {} s",
                g.tokens, g.requests, g.timeout_secs
            ),
            (None, None, Some(q)) => format!("quote {} RUV: {}", q.price, q.explanation),
            _ => String::new(),
        };
        let class = r.error_class.map(|c| format!(" [{c}]")).unwrap_or_default();
        writeln!(
            w,
            "  {:<11} {:<5}{class} {detail}",
            r.role.as_str(),
            out.outcome(r.outcome)
        )?;
        writeln!(
            w,
            "              by {} ({}) in {} µs",
            r.plugin.name,
            short(&r.plugin.digest),
            r.elapsed_us
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_take_seconds_or_units() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        for bad in ["", "0", "5x", "m", "-3", "99999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
