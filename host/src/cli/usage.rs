//! `usage [--days N] [--csv] [--html FILE]` (and the global `--json`): per
//! day tasks, tokens, outcomes and durations, the models used, and a bar
//! chart of tokens per day.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context as _;

use crate::ops::usage_stats::UsageReport;
use crate::ops::{self, Context};

use super::render::terminal::{bars, thousands};
use super::render::{usage_csv, usage_html};
use super::{Finish, Output};

/// Width of the terminal bar chart, in cells.
const CHART_WIDTH: usize = 30;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many UTC days, ending today.
    #[arg(long, value_name = "N", default_value_t = 7)]
    days: u32,
    /// Print one CSV row per day instead of text.
    #[arg(long, conflicts_with = "html")]
    csv: bool,
    /// Write a self-contained HTML report with charts to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

pub fn run(home: Option<PathBuf>, args: Args, out: &Output) -> anyhow::Result<Finish> {
    let ctx = Context::open(home)?;
    let report = ops::usage::report(&ctx, args.days)?;
    if let Some(path) = &args.html {
        std::fs::write(path, usage_html(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        if !out.json() {
            eprintln!("wrote {}", path.display());
            return Ok(Finish::Done);
        }
    }
    if args.csv && !out.json() {
        let mut w = io::stdout().lock();
        usage_csv(&report, &mut w)?;
        w.flush()?;
        return Ok(Finish::Done);
    }
    out.emit(&report, |w| print(w, &report))?;
    Ok(Finish::Done)
}

fn ms(value: Option<u64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{:.1}s", v as f64 / 1000.0))
}

fn print(w: &mut dyn Write, r: &UsageReport) -> io::Result<()> {
    let t = &r.totals;
    writeln!(w, "usage {} to {} (UTC)", r.from, r.to)?;
    let rate = t
        .success_rate
        .map_or_else(|| "-".into(), |s| format!("{:.0}%", s * 100.0));
    writeln!(
        w,
        "  {} tasks, {} in + {} out tokens, {} succeeded, {} failed ({rate} success), \
         {} cancelled, duration p50 {} p95 {}",
        t.tasks,
        thousands(t.input_tokens),
        thousands(t.output_tokens),
        t.succeeded,
        t.failed,
        t.cancelled,
        ms(t.duration_p50_ms),
        ms(t.duration_p95_ms),
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "{:<10} {:>5} {:>9} {:>9} {:>4} {:>4} {:>6} {:>7} {:>7}",
        "day", "tasks", "in", "out", "ok", "fail", "cancel", "p50", "p95"
    )?;
    for d in &r.days {
        writeln!(
            w,
            "{:<10} {:>5} {:>9} {:>9} {:>4} {:>4} {:>6} {:>7} {:>7}",
            d.day.to_string(),
            d.tasks,
            thousands(d.input_tokens),
            thousands(d.output_tokens),
            d.succeeded,
            d.failed,
            d.cancelled,
            ms(d.duration_p50_ms),
            ms(d.duration_p95_ms),
        )?;
    }
    writeln!(w)?;
    writeln!(w, "tokens per day")?;
    let rows: Vec<(String, u64)> = r
        .days
        .iter()
        .map(|d| (d.day.to_string(), d.input_tokens + d.output_tokens))
        .collect();
    for line in bars(&rows, CHART_WIDTH) {
        writeln!(w, "  {line}")?;
    }
    if !r.models.is_empty() {
        writeln!(w)?;
        writeln!(w, "models")?;
        for m in &r.models {
            writeln!(
                w,
                "  {:<24} {:>4} tasks {:>4.0}%  {} tokens",
                m.model,
                m.tasks,
                m.share * 100.0,
                thousands(m.tokens)
            )?;
        }
    }
    Ok(())
}
