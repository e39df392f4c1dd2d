//! `terms [--accept]`

use std::path::PathBuf;

use crate::ops::{self, Context};

use super::{Finish, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Record that you accept this version of the terms.
    #[arg(long)]
    accept: bool,
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let view = if args.accept {
        ops::terms::accept(&mut ctx)?
    } else {
        ops::terms::show(&ctx)?
    };
    out.emit(&view, |w| {
        writeln!(w, "{}", view.text)?;
        match &view.accepted_at {
            Some(at) => writeln!(w, "Terms version {}: accepted at {at}.", view.version),
            None => writeln!(
                w,
                "Terms version {}: not accepted. Accept with `claude-max-market terms --accept`.",
                view.version
            ),
        }
    })?;
    Ok(Finish::Done)
}
