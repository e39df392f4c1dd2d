//! `policy list | show ROLE | set ROLE FILE.wasm | reset ROLE`

use std::path::PathBuf;

use crate::ops::policy::PolicyStatus;
use crate::ops::{self, Context};
use crate::policy::Role;

use super::{Finish, Output};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The active plugin for every role.
    List,
    /// The active plugin for one role.
    Show { role: Role },
    /// Activate a local component for a role (after loading and validating it).
    Set { role: Role, file: PathBuf },
    /// Go back to the built-in default for a role.
    Reset { role: Role },
}

pub fn run(home: Option<PathBuf>, cmd: Command, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let listing = matches!(cmd, Command::List);
    let statuses = match cmd {
        Command::List => ops::policy::list(&ctx)?,
        Command::Show { role } => vec![ops::policy::show(&ctx, role)?],
        Command::Set { role, file } => vec![ops::policy::set(&mut ctx, role, &file)?],
        Command::Reset { role } => vec![ops::policy::reset(&mut ctx, role)?],
    };
    let doc = if listing {
        serde_json::to_value(&statuses)?
    } else {
        serde_json::to_value(&statuses[0])?
    };
    out.emit(&doc, |w| {
        for s in &statuses {
            print_status(w, s, out)?;
        }
        Ok(())
    })?;
    Ok(Finish::Done)
}

fn print_status(w: &mut dyn std::io::Write, s: &PolicyStatus, out: &Output) -> std::io::Result<()> {
    writeln!(
        w,
        "{} ({}): {}",
        s.role.as_str(),
        s.world,
        out.state(&s.state)
    )?;
    writeln!(w, "  plugin  {}", s.plugin.name)?;
    writeln!(w, "  origin  {}", s.plugin.origin.as_str())?;
    writeln!(w, "  sha256  {}", s.plugin.digest)?;
    if let Some(at) = &s.activated_at {
        writeln!(w, "  since   {at}")?;
    }
    if let Some(problem) = &s.problem {
        writeln!(w, "  problem {problem}")?;
    }
    Ok(())
}
