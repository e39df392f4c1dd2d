//! The usage report ([`UsageReport`]) as an HTML page and as CSV.

use std::io::{self, Write};

use super::csv::write_csv;
use super::html::{Page, Row};
use super::svg::{bar_chart, stacked_bars};
use super::terminal::thousands;
use crate::ops::usage_stats::UsageReport;

const CHART_WIDTH: u32 = 720;
const CHART_HEIGHT: u32 = 260;

/// Columns of [`usage_csv`], in order.
pub const USAGE_CSV_HEADER: [&str; 8] = [
    "day",
    "tasks",
    "input_tokens",
    "output_tokens",
    "succeeded",
    "failed",
    "duration_p50_ms",
    "duration_p95_ms",
];

/// A self-contained HTML page: summary, tokens-per-day (stacked input and
/// output) and tasks-per-day charts, a per-day table and a model table.
pub fn usage_html(report: &UsageReport) -> String {
    let range = format!("{} to {}", report.from, report.to);
    let totals = &report.totals;
    let mut page = Page::new(&format!("Usage {range}"));
    page.h1(&format!("Usage {range}"));
    page.summary(&[
        (
            "Range",
            format!(
                "{range} (UTC, {} days)",
                thousands(report.days.len() as u64)
            ),
        ),
        ("Tasks", thousands(u64::from(totals.tasks))),
        (
            "Succeeded / failed",
            format!(
                "{} / {}",
                thousands(u64::from(totals.succeeded)),
                thousands(u64::from(totals.failed))
            ),
        ),
        (
            "Success rate",
            totals
                .success_rate
                .map_or_else(|| "n/a".to_owned(), percent),
        ),
        ("Input tokens", thousands(totals.input_tokens)),
        ("Output tokens", thousands(totals.output_tokens)),
        ("Duration p50", duration(totals.duration_p50_ms)),
        ("Duration p95", duration(totals.duration_p95_ms)),
    ]);

    let labels: Vec<String> = report.days.iter().map(|d| d.day.to_string()).collect();
    // f64 is exact for token counts below 2^53, far beyond any real day.
    let input: Vec<f64> = report.days.iter().map(|d| d.input_tokens as f64).collect();
    let output: Vec<f64> = report.days.iter().map(|d| d.output_tokens as f64).collect();
    page.h2("Tokens per day");
    page.svg(&stacked_bars(
        "Tokens per day",
        &labels,
        ("input", &input),
        ("output", &output),
        "tokens",
        CHART_WIDTH,
        CHART_HEIGHT,
    ));

    let tasks: Vec<(String, f64)> = report
        .days
        .iter()
        .map(|d| (d.day.to_string(), f64::from(d.tasks)))
        .collect();
    page.h2("Tasks per day");
    page.svg(&bar_chart(
        "Tasks per day",
        &tasks,
        "tasks",
        CHART_WIDTH,
        CHART_HEIGHT,
    ));

    page.h2("Per day");
    let day_rows: Vec<Row> = report
        .days
        .iter()
        .map(|d| {
            Row::new(vec![
                d.day.to_string(),
                thousands(u64::from(d.tasks)),
                thousands(u64::from(d.succeeded)),
                thousands(u64::from(d.failed)),
                thousands(d.input_tokens),
                thousands(d.output_tokens),
                duration(d.duration_p50_ms),
                duration(d.duration_p95_ms),
            ])
        })
        .collect();
    page.table(
        &[
            "Day",
            "Tasks",
            "Succeeded",
            "Failed",
            "Input tokens",
            "Output tokens",
            "p50",
            "p95",
        ],
        &day_rows,
    );

    page.h2("Models");
    if report.models.is_empty() {
        page.paragraph("No jobs in this range.");
    } else {
        let model_rows: Vec<Row> = report
            .models
            .iter()
            .map(|m| {
                Row::new(vec![
                    m.model.clone(),
                    thousands(u64::from(m.tasks)),
                    percent(m.share),
                    thousands(m.tokens),
                ])
            })
            .collect();
        page.table(&["Model", "Tasks", "Share of tasks", "Tokens"], &model_rows);
    }
    page.finish()
}

/// One CSV record per day, oldest first, with the columns in
/// [`USAGE_CSV_HEADER`]. Days are `YYYY-MM-DD`, numbers are plain digits
/// and a missing percentile is an empty field.
pub fn usage_csv(report: &UsageReport, out: &mut impl Write) -> io::Result<()> {
    let optional = |ms: Option<u64>| ms.map(|v| v.to_string()).unwrap_or_default();
    let rows = report.days.iter().map(|d| {
        vec![
            d.day.to_string(),
            d.tasks.to_string(),
            d.input_tokens.to_string(),
            d.output_tokens.to_string(),
            d.succeeded.to_string(),
            d.failed.to_string(),
            optional(d.duration_p50_ms),
            optional(d.duration_p95_ms),
        ]
    });
    write_csv(out, &USAGE_CSV_HEADER, rows)
}

/// `0.875` → `87.5%`.
fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// Human-readable duration: `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`; `n/a`
/// when there is none. Each unit is rounded to its shown precision and the
/// thresholds sit where rounding would carry over (59.96 s is `1m 00s`,
/// not `60.0 s`).
fn duration(ms: Option<u64>) -> String {
    match ms {
        None => "n/a".to_owned(),
        Some(ms) if ms < 1_000 => format!("{ms} ms"),
        Some(ms) if ms < 59_950 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) if ms < 3_599_500 => {
            let s = (ms + 500) / 1000;
            format!("{}m {:02}s", s / 60, s % 60)
        }
        Some(ms) => {
            let m = (ms + 30_000) / 60_000;
            format!("{}h {:02}m", m / 60, m % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::render::csv::parse;
    use crate::cli::render::svg::assert_well_formed;
    use crate::ops::usage_stats::{JobSample, summarize};
    use time::macros::date;

    fn sample(day: time::Date, model: &str, state: &str, ms: Option<u64>) -> JobSample {
        JobSample {
            day,
            model: model.to_owned(),
            state: state.to_owned(),
            input_tokens: 1200,
            output_tokens: 340,
            duration_ms: ms,
        }
    }

    fn report() -> UsageReport {
        let samples = [
            sample(
                date!(2026 - 11 - 18),
                "claude-opus-4",
                "finished",
                Some(4100),
            ),
            sample(
                date!(2026 - 11 - 20),
                "claude-opus-4",
                "failed",
                Some(65_000),
            ),
            sample(
                date!(2026 - 11 - 20),
                "<script>alert(1)</script>",
                "finished",
                None,
            ),
        ];
        summarize(&samples, date!(2026 - 11 - 20), 4)
    }

    #[test]
    fn html_has_summary_charts_and_tables() {
        let html = usage_html(&report());
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<title>Usage 2026-11-17 to 2026-11-20</title>"));
        assert!(html.contains("<dt>Tasks</dt><dd>3</dd>"));
        assert!(html.contains("<dt>Success rate</dt><dd>66.7%</dd>"));
        assert!(html.contains("<dt>Input tokens</dt><dd>3,600</dd>"));
        assert!(html.contains("<dt>Duration p95</dt><dd>1m 05s</dd>"));
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("<tr><td>2026-11-17</td><td>0</td>"));
        assert!(html.contains("<td>claude-opus-4</td><td>2</td><td>66.7%</td><td>3,080</td>"));
    }

    #[test]
    fn html_is_safe_and_self_contained() {
        let html = usage_html(&report());
        assert!(!html.to_ascii_lowercase().contains("<script"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(
            html.contains(
                "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\""
            )
        );
        let start = html.find("<svg").unwrap();
        let end = html[start..].find("</svg>").unwrap() + start + "</svg>".len();
        assert_well_formed(&html[start..end]);
    }

    #[test]
    fn html_for_an_empty_report() {
        let html = usage_html(&summarize(&[], date!(2026 - 11 - 20), 1));
        assert!(html.contains("<dt>Success rate</dt><dd>n/a</dd>"));
        assert!(html.contains("No jobs in this range."));
    }

    #[test]
    fn csv_has_one_row_per_day() {
        let mut out = Vec::new();
        usage_csv(&report(), &mut out).unwrap();
        let records = parse(&String::from_utf8(out).unwrap());
        assert_eq!(records[0], USAGE_CSV_HEADER);
        assert_eq!(records.len(), 5);
        assert_eq!(records[1], ["2026-11-17", "0", "0", "0", "0", "0", "", ""]);
        assert_eq!(
            records[2],
            ["2026-11-18", "1", "1200", "340", "1", "0", "4100", "4100"]
        );
        assert_eq!(
            records[4],
            ["2026-11-20", "2", "2400", "680", "1", "1", "65000", "65000"]
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(None), "n/a");
        assert_eq!(duration(Some(850)), "850 ms");
        assert_eq!(duration(Some(12_340)), "12.3 s");
        assert_eq!(duration(Some(245_000)), "4m 05s");
        assert_eq!(duration(Some(7_380_000)), "2h 03m");
        assert_eq!(duration(Some(59_949)), "59.9 s");
        assert_eq!(duration(Some(59_960)), "1m 00s");
        assert_eq!(duration(Some(3_599_499)), "59m 59s");
        assert_eq!(duration(Some(3_599_500)), "1h 00m");
    }
}
