//! `status`

use std::io::{self, Write};
use std::path::PathBuf;

use crate::ops::status::StatusReport;
use crate::ops::{self, Context};

use super::output::short;
use super::{Finish, Output};

pub fn run(home: Option<PathBuf>, out: &Output) -> anyhow::Result<Finish> {
    let ctx = Context::open(home)?;
    let r = ops::status::report(&ctx)?;
    out.emit(&r, |w| print(w, &r, out))?;
    Ok(Finish::Done)
}

fn print(w: &mut dyn Write, r: &StatusReport, out: &Output) -> io::Result<()> {
    writeln!(w, "home:     {}", r.home)?;
    let consent = match (r.consent.opted_in, r.consent.claude_jobs) {
        (true, true) => "opted in to Claude jobs",
        (true, false) => "opted in, Claude jobs not allowed",
        _ => "not opted in (run `opt-in --claude-jobs`)",
    };
    writeln!(w, "consent:  {consent}")?;
    let terms = if r.terms_current {
        "accepted"
    } else {
        "NOT accepted (run `terms --accept`)"
    };
    writeln!(w, "terms:    version {} {terms}", r.terms_version)?;
    let (l, u) = (&r.limits, &r.usage_today);
    writeln!(
        w,
        "today:    {}/{} jobs, {}/{} tokens, {}/{} running",
        u.tasks_today,
        l.daily_tasks,
        u.tokens_today,
        l.daily_tokens,
        u.running_jobs,
        l.concurrent_jobs
    )?;
    writeln!(w, "policies:")?;
    for p in &r.policies {
        let origin = p.plugin.origin.as_str();
        let state = out.state(&p.state);
        writeln!(
            w,
            "  {:<11} {} ({origin}, {}) {state}",
            p.role.as_str(),
            p.plugin.name,
            short(&p.plugin.digest)
        )?;
        if let Some(problem) = &p.problem {
            writeln!(w, "              {problem}")?;
        }
    }
    match &r.audit.broken {
        None => writeln!(
            w,
            "audit:    {} rows, chain {}",
            r.audit.rows,
            out.state("ok")
        ),
        Some(b) => writeln!(
            w,
            "audit:    {} rows, chain {} at row {}: {}",
            r.audit.rows,
            out.state("broken"),
            b.seq,
            b.reason
        ),
    }
}
