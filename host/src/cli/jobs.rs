//! `jobs [--limit N]`

use std::path::PathBuf;

use crate::ops::{self, Context};
use crate::store::JobRow;

use super::{Finish, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many of the newest jobs to list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let jobs = ops::job_list::recent(&mut ctx, args.limit as usize)?;
    out.emit(&jobs, |w| {
        if jobs.is_empty() {
            return writeln!(w, "no jobs yet; `execute` runs one");
        }
        for job in &jobs {
            writeln!(
                w,
                "{}  {:<13} {}  {} of {} tokens, {} requests  {}",
                job.id,
                job.state.replace('_', " "),
                job.created_at,
                job.tokens_used(),
                job.granted_tokens,
                job.requests,
                what(job)
            )?;
        }
        Ok(())
    })?;
    Ok(Finish::Done)
}

/// What the job ran, in a few words.
fn what(job: &JobRow) -> String {
    if !job.agent.is_empty() {
        format!("{} in {}", job.agent, job.image)
    } else if job.command.is_empty() {
        format!("one prompt to {}", job.model)
    } else {
        format!("{} in {}", job.command.join(" "), job.image)
    }
}
