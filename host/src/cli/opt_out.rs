//! `opt-out [--yes]`

use std::path::PathBuf;

use crate::ops::{self, Context};

use super::{Finish, Output, prompt};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Confirm without a prompt.
    #[arg(long, short)]
    yes: bool,
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let confirmed = args.yes
        || (prompt::interactive()
            && prompt::confirm("Opt out? No job will be admitted until you opt in again.")?);
    let done = ops::opt_out::run(&mut ctx, confirmed)?;
    out.emit(&done, |w| {
        if !done.stopped_jobs.is_empty() {
            writeln!(w, "Stopped running jobs: {}", done.stopped_jobs.join(", "))?;
        }
        if let Some(problem) = &done.containers_left {
            writeln!(
                w,
                "Their containers could not be killed ({problem}); run `claude-max-market clean --force`."
            )?;
        }
        writeln!(
            w,
            "Opted out. Usage history and the audit log are kept; see `claude-max-market audit`."
        )
    })?;
    Ok(Finish::Done)
}
