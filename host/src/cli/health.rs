//! `health [--json]`: one line per check; exit 1 when any check fails.

use std::path::PathBuf;

use crate::ops::health::CheckStatus;
use crate::ops::{self, Context};

use super::{Finish, Output};

pub fn run(home: Option<PathBuf>, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let health = ops::health::run(&mut ctx)?;
    out.emit(&health, |w| {
        for check in &health.checks {
            let word = match check.status {
                CheckStatus::Ok => out.state("ok"),
                CheckStatus::Warn => out.warn("warn"),
                CheckStatus::Fail => out.state("FAIL"),
            };
            writeln!(w, "{word:<4} {:<16} {}", check.name, check.detail)?;
            if let Some(fix) = &check.fix {
                writeln!(w, "     {:<16} → {fix}", "")?;
            }
        }
        Ok(())
    })?;
    Ok(if health.healthy {
        Finish::Done
    } else {
        Finish::Failed
    })
}
