//! `execute (--prompt TEXT | --file PATH) [--model M] [--max-tokens N]
//! [--approve-all] [--timeout SECS] [--dry-run | --market [--max-price N]]`
//!
//! The job's answer streams to stdout as it arrives (its stderr to stderr);
//! a summary line follows on stderr. With --json nothing streams: one
//! document at the end carries the report and the output.

use std::io::{self, Write};
use std::path::PathBuf;

use crate::ops::execute::{AskDetails, DryRun, ExecuteOptions, PromptSource};
use crate::ops::market::{MarketExecuteOptions, MarketProgress};
use crate::ops::{self, Context, JobReport};
use crate::policy::Outcome;
use crate::runner::Stream;

use super::output::short;
use super::{Finish, Output, prompt};

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["prompt", "file"]))]
pub struct Args {
    /// The prompt text.
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Model to use (default: api.defaultModel).
    #[arg(long, value_name = "M")]
    model: Option<String>,
    /// Largest response in tokens (default: limits.maxTokensPerTask).
    #[arg(long, value_name = "N")]
    max_tokens: Option<u32>,
    /// Ask approval to skip the prompt (honoured only if compliance.allowAutoApprove is on).
    #[arg(long)]
    approve_all: bool,
    /// Stop the job after this many seconds, if sooner than limits grants.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    timeout: Option<u32>,
    /// Run the policy pipeline and print each role's decision; run nothing.
    #[arg(long, conflicts_with = "market")]
    dry_run: bool,
    /// Run the job on a peer through the market instead of here.
    #[arg(long)]
    market: bool,
    /// With --market: the most to pay in RUV (never above market.maxBidPrice).
    #[arg(long, value_name = "N", requires = "market")]
    max_price: Option<u64>,
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let dry_run = args.dry_run;
    let source = match (args.prompt, args.file) {
        (Some(text), _) => PromptSource::Text(text),
        (None, Some(path)) => PromptSource::File(path),
        (None, None) => unreachable!("clap requires --prompt or --file"),
    };
    let opts = ExecuteOptions {
        prompt: source,
        model: args.model,
        max_tokens: args.max_tokens,
        approve_all: args.approve_all,
        timeout_secs: args.timeout,
    };
    let mut ctx = Context::open(home)?;
    if args.market {
        let opts = MarketExecuteOptions {
            prompt: opts.prompt,
            model: opts.model,
            max_tokens: opts.max_tokens,
            max_price: args.max_price,
            timeout_secs: opts.timeout_secs,
        };
        return run_on_market(&mut ctx, &opts, out);
    }
    if !dry_run {
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
    let run = ops::market::execute(ctx, opts, &mut |p| {
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
        let price = run
            .price
            .map(|p| format!(" for {p} RUV"))
            .unwrap_or_default();
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
    }
    Ok(if run.completed() {
        Finish::Done
    } else {
        Finish::Failed
    })
}

fn run_job(ctx: &mut Context, opts: &ExecuteOptions, out: &Output) -> anyhow::Result<Finish> {
    let mut captured = Vec::new();
    let mut confirm = |ask: &AskDetails| ask_owner(ask);
    let mut watch = |stream: Stream, bytes: &[u8]| {
        // The job's output is best effort on a closed terminal: the log
        // file keeps all of it.
        let _ = match (out.json(), stream) {
            (true, Stream::Stdout) => {
                captured.extend_from_slice(bytes);
                Ok(())
            }
            (true, Stream::Stderr) => Ok(()),
            (false, Stream::Stdout) => {
                let mut w = io::stdout().lock();
                w.write_all(bytes).and_then(|()| w.flush())
            }
            (false, Stream::Stderr) => io::stderr().write_all(bytes),
        };
    };
    let report = ops::execute::run(ctx, opts, &mut confirm, &mut watch)?;
    let ok = report.state == "finished";
    if out.json() {
        let value = serde_json::json!({
            "job": report,
            "output": String::from_utf8_lossy(&captured),
        });
        out.emit(&value, |_| Ok(()))?;
    } else {
        eprintln!("{}", summary(&report));
    }
    Ok(if ok { Finish::Done } else { Finish::Failed })
}

/// Shows what approval asks about and asks; `None` without a terminal.
fn ask_owner(ask: &AskDetails) -> Option<bool> {
    if !prompt::interactive() {
        return None;
    }
    eprintln!("Approval asks: {}", ask.reason);
    eprintln!("  job        {}", ask.job_id);
    eprintln!("  model      {}", ask.model);
    eprintln!("  max tokens {}", ask.max_tokens);
    let ellipsis = if ask.prompt_truncated { "…" } else { "" };
    eprintln!(
        "  prompt     {}{ellipsis}",
        ask.prompt_start.replace('\n', "\n             ")
    );
    // A failed read of the answer is a no, which is also the default.
    Some(prompt::confirm("Run this job?").unwrap_or(false))
}

fn summary(r: &JobReport) -> String {
    let tokens = format!(
        "{} request{}, {} in + {} out tokens of {} granted",
        r.requests,
        if r.requests == 1 { "" } else { "s" },
        r.input_tokens,
        r.output_tokens,
        r.granted_tokens
    );
    let secs = r.elapsed_ms as f64 / 1000.0;
    match r.state.as_str() {
        "finished" => format!("job {} finished in {secs:.1} s: {tokens}", r.job_id),
        state => format!(
            "job {} {}{}: {tokens}; its output is in `claude-max-market logs --job {}`",
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

fn print(w: &mut dyn Write, dry: &DryRun, out: &Output) -> io::Result<()> {
    let job = &dry.job;
    writeln!(
        w,
        "job {} ({}, max {} tokens, prompt {} bytes)",
        job.id, job.model, job.max_tokens, job.prompt_bytes
    )?;
    writeln!(w, "decision: {}", out.outcome(dry.pipeline.decision))?;
    for r in &dry.pipeline.roles {
        let detail = match (&r.reason, &r.grant, &r.quote) {
            (Some(reason), _, _) => reason.clone(),
            (None, Some(g), _) => format!("grant {} tokens, {} s", g.max_tokens, g.timeout_secs),
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
