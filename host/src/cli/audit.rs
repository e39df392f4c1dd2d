//! `audit [--format text|json|csv] [--output FILE] [--since DATE]`,
//! `audit --html FILE` (one self-contained page with a summary, the chain
//! status and every entry), `audit --verify [--against HEAD_FILE]`,
//! `audit head [--output FILE]` (a signed head to keep elsewhere) and
//! `audit --recover [--yes]` (a new chain after a break).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ops::{self, Context};

use super::render::{AuditRow, ChainView, audit_csv, audit_html};
use super::{Finish, Output, prompt};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
    Csv,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
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
    #[arg(long, conflicts_with_all = ["html", "output", "recover"])]
    verify: bool,
    /// With --verify: also check the log still holds the head in FILE (made
    /// by `audit head`), which catches a log rewritten or cut as a whole.
    #[arg(long, value_name = "FILE", requires = "verify")]
    against: Option<PathBuf>,
    /// After a break, start a new chain whose first row records the break
    /// and its evidence; nothing is removed.
    #[arg(long, conflicts_with_all = ["html", "output", "since"])]
    recover: bool,
    /// Confirm --recover without a prompt.
    #[arg(long, short, requires = "recover")]
    yes: bool,
    /// Write one self-contained HTML page (summary, chain status, entries) to FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "output")]
    html: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the chain's head signed with the node key, to keep somewhere
    /// this machine cannot write; `audit --verify --against FILE` checks it.
    Head {
        /// Write the signed head to FILE instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

pub(super) fn parse_since(s: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &format)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| format!("'{s}' is not a date: use YYYY-MM-DD or RFC 3339"))
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    if let Some(Command::Head { output }) = args.command {
        return head(&mut ctx, output, out);
    }
    if args.recover {
        return recover(&mut ctx, args.yes, out);
    }
    if let Some(path) = args.against {
        let report = ops::audit::verify_against(&ctx, &path)?;
        out.emit(&report, |w| {
            writeln!(
                w,
                "audit chain intact: {} rows; it holds the head anchored at row {} (signed {} by node {})",
                report.chain.rows,
                report.anchored_seq,
                report.signed_at,
                &report.signed_by[..12.min(report.signed_by.len())]
            )
        })?;
        return Ok(Finish::Done);
    }
    if args.verify {
        let chain = ops::audit::verify(&ctx)?;
        out.emit(&chain, |w| {
            writeln!(w, "audit chain intact: {} rows", chain.rows)?;
            for r in &chain.restarts {
                writeln!(
                    w,
                    "restarted at row {} after a break at row {}: {}",
                    r.seq, r.repaired.seq, r.repaired.reason
                )?;
            }
            Ok(())
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
        restarted: report
            .chain
            .restarts
            .last()
            .map(|r| (r.seq, r.repaired.seq)),
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

fn head(ctx: &mut Context, output: Option<PathBuf>, out: &Output) -> anyhow::Result<Finish> {
    let signed = ops::audit::head(ctx)?;
    let mut text = serde_json::to_string_pretty(&signed)?;
    text.push('\n');
    match output {
        Some(path) => {
            std::fs::write(&path, &text)
                .with_context(|| format!("writing the signed head to {}", path.display()))?;
            let summary =
                serde_json::json!({ "written": path, "seq": signed.seq, "hash": signed.hash });
            out.emit(&summary, |w| {
                writeln!(
                    w,
                    "wrote the head (row {}) to {}; keep it where this machine cannot write",
                    signed.seq,
                    path.display()
                )
            })?;
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(Finish::Done)
}

fn recover(ctx: &mut Context, yes: bool, out: &Output) -> anyhow::Result<Finish> {
    let confirmed = yes
        || (prompt::interactive()
            && prompt::confirm(
                "Start a new audit chain? The break and its evidence are recorded; nothing is removed.",
            )?);
    let restart = ops::audit::recover(ctx, confirmed)?;
    out.emit(&restart, |w| {
        writeln!(
            w,
            "new chain started at row {}; it records the break at row {}: {}",
            restart.seq, restart.details["break"]["seq"], restart.details["break"]["reason"]
        )
    })?;
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
        None => {
            writeln!(w, "-- {} rows, chain intact", report.chain.rows)?;
            for r in &report.chain.restarts {
                writeln!(
                    w,
                    "-- restarted at row {} after a break at row {}: {}",
                    r.seq, r.repaired.seq, r.repaired.reason
                )?;
            }
            Ok(())
        }
        Some(b) => writeln!(
            w,
            "-- {} rows, chain BROKEN at row {}: {}",
            report.chain.rows, b.seq, b.reason
        ),
    }
}
