//! `limits [--daily N] [--tokens N] [--timeout SECS] [--concurrent N]`

use std::path::PathBuf;

use crate::ops::limits::LimitsOptions;
use crate::ops::{self, Context};

use super::{Finish, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Jobs allowed per UTC day.
    #[arg(long, value_name = "N")]
    daily: Option<u32>,
    /// Tokens allowed per UTC day.
    #[arg(long, value_name = "N")]
    tokens: Option<u64>,
    /// Wall-clock seconds one job may run.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u32>,
    /// Jobs that may run at the same time.
    #[arg(long, value_name = "N")]
    concurrent: Option<u32>,
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let view = ops::limits::apply(
        &mut ctx,
        &LimitsOptions {
            daily_tasks: args.daily,
            daily_tokens: args.tokens,
            timeout_secs: args.timeout,
            concurrent_jobs: args.concurrent,
        },
    )?;
    out.emit(&view, |w| {
        for c in &view.changes {
            writeln!(w, "changed {}: {} -> {}", c.key, c.from, c.to)?;
        }
        let (l, u) = (&view.limits, &view.usage_today);
        writeln!(w, "jobs today:      {} of {}", u.tasks_today, l.daily_tasks)?;
        writeln!(
            w,
            "tokens today:    {} of {}",
            u.tokens_today, l.daily_tokens
        )?;
        writeln!(
            w,
            "running jobs:    {} of {}",
            u.running_jobs, l.concurrent_jobs
        )?;
        writeln!(w, "max tokens/job:  {}", l.max_tokens_per_task)?;
        writeln!(w, "timeout/job:     {} s", l.timeout_secs)
    })?;
    Ok(Finish::Done)
}
