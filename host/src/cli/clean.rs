//! `clean [--force]`

use std::path::PathBuf;

use crate::ops::{self, Context};

use super::{Finish, Output, prompt};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also stop running jobs of this data folder (asks first on a terminal).
    #[arg(long)]
    force: bool,
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    if args.force
        && prompt::interactive()
        && !prompt::confirm("Stop this data folder's running jobs too?")?
    {
        eprintln!("Nothing done.");
        return Ok(Finish::Done);
    }
    let cleaned = ops::clean::run(&mut ctx, args.force)?;
    out.emit(&cleaned, |w| {
        for job in &cleaned.reconciled.aborted_jobs {
            writeln!(w, "aborted job {job}: its host process had died")?;
        }
        for c in &cleaned.removed_containers {
            writeln!(w, "removed container {} ({})", c.name, c.state)?;
        }
        for folder in &cleaned.removed_folders {
            writeln!(w, "removed job folder {folder}")?;
        }
        for c in &cleaned.left_running {
            writeln!(w, "left running: {} (stop it with --force)", c.name)?;
        }
        if cleaned.reconciled.aborted_jobs.is_empty()
            && cleaned.removed_containers.is_empty()
            && cleaned.removed_folders.is_empty()
            && cleaned.left_running.is_empty()
        {
            writeln!(w, "Nothing to clean.")?;
        }
        Ok(())
    })?;
    Ok(Finish::Done)
}
