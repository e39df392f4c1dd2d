//! `audit [--format text|json|csv] [--output FILE] [--since DATE] [--verify]`
//! and `audit --html FILE`: one self-contained page with a summary, the
//! chain status and every entry.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ops::{self, Context};

use super::render::{AuditRow, ChainView, audit_csv, audit_html};
use super::{Finish, Output};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
    Csv,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Report format (--json implies json).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Only entries at or after DATE (YYYY-MM-DD or RFC 3339).
    #[arg(long, value_name = "DATE", value_parser = parse_since)]
    since: Option<OffsetDateTime>,
    /// Check the hash chain; fail naming the first altered or missing row.
    #[arg(long, conflicts_with_all = ["html", "output"])]
    verify: bool,
    /// Write one self-contained HTML page (summary, chain status, entries) to FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "output")]
    html: Option<PathBuf>,
}

fn parse_since(s: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &format)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| format!("'{s}' is not a date: use YYYY-MM-DD or RFC 3339"))
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let ctx = Context::open(home)?;
    if args.verify {
        let chain = ops::audit::verify(&ctx)?;
        out.emit(&chain, |w| {
            writeln!(w, "audit chain intact: {} rows", chain.rows)
        })?;
        return Ok(Finish::Done);
    }
    let report = ops::audit::report(&ctx, args.since)?;
    let rows: Vec<AuditRow> = report
        .entries
        .iter()
        .map(|e| AuditRow {
            seq: e.seq,
            ts: e.ts.clone(),
            kind: e.kind.clone(),
            subject: e.subject.clone(),
            details: e.details.clone(),
            hash: e.hash.clone(),
        })
        .collect();
    let chain = ChainView {
        rows: report.chain.rows,
        head: report.chain.head.clone(),
        broken: report
            .chain
            .broken
            .as_ref()
            .map(|b| (b.seq, b.reason.clone())),
    };
    let mut rendered = Vec::new();
    let output = match args.html {
        Some(path) => {
            let now = OffsetDateTime::now_utc().format(&Rfc3339)?;
            rendered = audit_html(&rows, &chain, &now).into_bytes();
            Some(path)
        }
        None => {
            match (out.json(), args.format) {
                (true, _) | (false, Format::Json) => {
                    serde_json::to_writer_pretty(&mut rendered, &report)?;
                    writeln!(rendered)?;
                }
                (false, Format::Csv) => audit_csv(&rows, &mut rendered)?,
                (false, Format::Text) => render_text(&mut rendered, &report)?,
            }
            args.output
        }
    };
    match output {
        Some(path) => {
            std::fs::write(&path, &rendered)
                .with_context(|| format!("writing the audit report to {}", path.display()))?;
            let summary = serde_json::json!({ "written": path, "entries": report.entries.len() });
            out.emit(&summary, |w| {
                writeln!(
                    w,
                    "wrote {} entries to {}",
                    report.entries.len(),
                    path.display()
                )
            })?;
        }
        None => std::io::stdout().lock().write_all(&rendered)?,
    }
    Ok(Finish::Done)
}

fn render_text(w: &mut Vec<u8>, report: &ops::audit::AuditReport) -> std::io::Result<()> {
    for e in &report.entries {
        writeln!(
            w,
            "#{:<5} {}  {:<20} {}  {}",
            e.seq, e.ts, e.kind, e.subject, e.details
        )?;
    }
    match &report.chain.broken {
        None => writeln!(w, "-- {} rows, chain intact", report.chain.rows),
        Some(b) => writeln!(
            w,
            "-- {} rows, chain BROKEN at row {}: {}",
            report.chain.rows, b.seq, b.reason
        ),
    }
}
