//! `logs [--job ID] [--tail N] [--follow]`

use std::io::{self, Write};
use std::path::PathBuf;

use crate::ops::logs::LogsOptions;
use crate::ops::{self, Context};

use super::{Finish, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job (default: the newest).
    #[arg(long, value_name = "ID")]
    job: Option<String>,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Keep printing while the job runs.
    #[arg(long, short)]
    follow: bool,
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let opts = LogsOptions {
        job: args.job,
        tail: args.tail,
        follow: args.follow,
    };
    let mut text = Vec::new();
    let stdout = io::stdout();
    let shown = ops::logs::run(&mut ctx, &opts, &mut |bytes| {
        if out.json() {
            text.extend_from_slice(bytes);
            Ok(())
        } else {
            let mut w = stdout.lock();
            w.write_all(bytes)?;
            w.flush()
        }
    })?;
    if out.json() {
        let value = serde_json::json!({
            "job": shown.job,
            "output": String::from_utf8_lossy(&text),
        });
        out.emit(&value, |_| Ok(()))?;
    }
    Ok(Finish::Done)
}
