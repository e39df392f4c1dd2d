//! `execute (--prompt TEXT | --file PATH) [--model M] [--max-tokens N] [--approve-all] [--dry-run]`

use std::io::{self, Write};
use std::path::PathBuf;

use crate::ops::execute::{DryRun, ExecuteOptions, PromptSource};
use crate::ops::{self, Context, OpsError};
use crate::policy::Outcome;

use super::output::short;
use super::{Finish, Output};

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
    /// Run the policy pipeline and print each role's decision; run nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    if !args.dry_run {
        return Err(OpsError::ExecutionNotBuilt.into());
    }
    let prompt = match (args.prompt, args.file) {
        (Some(text), _) => PromptSource::Text(text),
        (None, Some(path)) => PromptSource::File(path),
        (None, None) => unreachable!("clap requires --prompt or --file"),
    };
    let opts = ExecuteOptions {
        prompt,
        model: args.model,
        max_tokens: args.max_tokens,
        approve_all: args.approve_all,
    };
    let mut ctx = Context::open(home)?;
    let dry = ops::execute::dry_run(&mut ctx, &opts)?;
    out.emit(&dry, |w| print(w, &dry, out))?;
    Ok(if dry.pipeline.decision == Outcome::Deny {
        Finish::Denied
    } else {
        Finish::Done
    })
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
