//! `compliance-check [--json]`: one line per finding, the score, and exit 1
//! when a critical finding failed.

use std::path::PathBuf;

use crate::ops::{self, Context};
use crate::policy::Severity;

use super::output::short;
use super::{Finish, Output};

pub fn run(home: Option<PathBuf>, out: &Output) -> anyhow::Result<Finish> {
    let ctx = Context::open(home)?;
    let report = ops::compliance::check(&ctx)?;
    out.emit(&report, |w| {
        writeln!(
            w,
            "judged by {} ({})",
            report.plugin.name,
            short(&report.plugin.digest)
        )?;
        for f in &report.findings {
            let word = match (f.passed, f.severity) {
                (true, _) => out.state("pass"),
                (false, Severity::Critical) => out.state("FAIL"),
                (false, _) => out.warn("warn"),
            };
            let severity = match f.severity {
                Severity::Critical => "critical",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            writeln!(w, "{word:<4} {severity:<8} {:<26} {}", f.id, f.message)?;
        }
        writeln!(
            w,
            "score {}/100; {} critical finding{} failed",
            report.score,
            report.critical_failures,
            if report.critical_failures == 1 {
                ""
            } else {
                "s"
            }
        )
    })?;
    Ok(if report.critical_failures == 0 {
        Finish::Done
    } else {
        Finish::Failed
    })
}
