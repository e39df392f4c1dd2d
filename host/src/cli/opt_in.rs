//! `opt-in [--claude-jobs] [--max-daily N] [--max-tokens N] [--accept-terms]`
//!
//! Flags are honoured without questions. On a terminal, whatever the flags
//! leave open (terms not accepted, jobs not consented to) is asked.

use std::path::PathBuf;

use crate::ops::opt_in::OptInOptions;
use crate::ops::{self, Context};

use super::{Finish, Output, prompt};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Consent to running Claude jobs on this machine.
    #[arg(long)]
    claude_jobs: bool,
    /// Set the number of jobs allowed per day (limits.dailyTasks).
    #[arg(long, value_name = "N")]
    max_daily: Option<u32>,
    /// Set the tokens allowed per day (limits.dailyTokens).
    #[arg(long, value_name = "N")]
    max_tokens: Option<u64>,
    /// Accept the current terms as part of opting in.
    #[arg(long)]
    accept_terms: bool,
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let mut opts = OptInOptions {
        claude_jobs: args.claude_jobs,
        max_daily: args.max_daily,
        max_tokens: args.max_tokens,
        accept_terms: args.accept_terms,
    };
    if prompt::interactive() {
        ask_what_is_missing(&ctx, &mut opts)?;
    }
    let report = ops::opt_in::run(&mut ctx, &opts)?;
    out.emit(&report, |w| {
        let jobs = if report.consent.claude_jobs {
            "Claude jobs allowed"
        } else {
            "Claude jobs not allowed"
        };
        writeln!(w, "Opted in ({jobs}) under terms {}.", report.terms_version)?;
        for c in &report.changes {
            writeln!(w, "  {} = {} (was {})", c.key, c.to, c.from)?;
        }
        Ok(())
    })?;
    Ok(Finish::Done)
}

fn ask_what_is_missing(ctx: &Context, opts: &mut OptInOptions) -> anyhow::Result<()> {
    if !opts.accept_terms && !ops::terms::show(ctx)?.accepted {
        eprintln!("{}", ops::terms::TEXT);
        opts.accept_terms = prompt::confirm("Do you accept these terms?")?;
    }
    if !opts.claude_jobs {
        opts.claude_jobs = prompt::confirm("Allow this machine to run Claude jobs?")?;
    }
    Ok(())
}
