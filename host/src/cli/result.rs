//! `result [JOB] [--diff] [--apply [--force]]`

use std::path::PathBuf;

use crate::ops::result::ResultOptions;
use crate::ops::{self, Context};

use super::{Finish, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job (default: the newest that worked on a workspace).
    #[arg(value_name = "JOB")]
    job: Option<String>,
    /// Show the unified diff of the changes.
    #[arg(long)]
    diff: bool,
    /// Copy the changes into the folder the job started from.
    #[arg(long)]
    apply: bool,
    /// With --apply: overwrite files you changed since the job took its copy.
    #[arg(long, requires = "apply")]
    force: bool,
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let opts = ResultOptions {
        job: args.job,
        diff: args.diff,
        apply: args.apply,
        force: args.force,
    };
    let shown = ops::result::run(&mut ctx, &opts)?;
    out.emit(&shown, |w| {
        let ws = &shown.workspace;
        writeln!(
            w,
            "job {} ({}) on {}: {} added, {} changed, {} removed",
            shown.job.id,
            shown.job.state.replace('_', " "),
            ws.folder,
            ws.added.len(),
            ws.changed.len(),
            ws.removed.len()
        )?;
        for (mark, paths) in [("A", &ws.added), ("M", &ws.changed), ("D", &ws.removed)] {
            for path in paths {
                writeln!(w, "  {mark} {path}")?;
            }
        }
        for skipped in &ws.skipped {
            writeln!(w, "  skipped: {skipped}")?;
        }
        writeln!(w, "the final workspace is in {}", ws.result.display())?;
        if let Some(diff) = &shown.diff {
            write!(w, "{diff}")?;
        }
        if let Some(applied) = &shown.applied {
            writeln!(
                w,
                "applied to {}: {} written, {} removed, {} already so",
                ws.folder, applied.written, applied.removed, applied.unchanged
            )?;
        }
        Ok(())
    })?;
    Ok(Finish::Done)
}
