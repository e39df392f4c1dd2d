//! The audit log export: an HTML page with the hash-chain status and the
//! entries, and the same entries as CSV.
//!
//! [`AuditRow`] and [`ChainView`] are deliberately plain so the caller maps
//! its store types onto them and this module stays independent of the
//! store.

use std::io::{self, Write};

use super::csv::write_csv;
use super::html::{Page, Row, Status};
use super::terminal::thousands;

/// One audit log entry as shown in the export.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub seq: i64,
    pub ts: String,
    pub kind: String,
    pub subject: String,
    pub details: serde_json::Value,
    pub hash: String,
}

/// The result of verifying the hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainView {
    /// Rows in the whole log, which may be more than the entries exported.
    pub rows: u64,
    /// Hash of the newest row; `None` for an empty log.
    pub head: Option<String>,
    /// First bad seq and the reason; `None` when the chain verifies.
    pub broken: Option<(i64, String)>,
    /// The newest restart after a break: its row and the broken row.
    pub restarted: Option<(i64, i64)>,
}

/// Columns of [`audit_csv`], in order.
pub const AUDIT_CSV_HEADER: [&str; 6] = ["seq", "ts", "kind", "subject", "details", "hash"];

/// Id of the element whose text is [`chain_status`].
pub const CHAIN_STATUS_ID: &str = "chain-status";

/// Kind prefixes counted separately in the summary; anything else is
/// "other".
const KIND_GROUPS: [&str; 7] = [
    "consent", "config", "job", "gateway", "docker", "key", "policy",
];

/// Characters of the hash shown in the HTML table; the CSV has it whole.
const SHORT_HASH: usize = 12;

/// `intact` (saying where it was last restarted, if it was), or `broken at
/// row N: REASON` for the first bad row.
pub fn chain_status(chain: &ChainView) -> String {
    match (&chain.broken, chain.restarted) {
        (None, None) => "intact".to_owned(),
        (None, Some((at, broken))) => {
            format!("intact since row {at}, which restarted it after a break at row {broken}")
        }
        (Some((seq, reason)), _) => format!("broken at row {seq}: {reason}"),
    }
}

/// A self-contained HTML page: the chain status as a badge (element id
/// [`CHAIN_STATUS_ID`], text exactly [`chain_status`]) right under the
/// heading, a summary (rows, time range, counts per kind group), then a
/// table of `entries` in the given order with the first broken row
/// highlighted.
pub fn audit_html(entries: &[AuditRow], chain: &ChainView, generated_at: &str) -> String {
    let mut page = Page::new("Audit log");
    page.h1("Audit log");
    let status = if chain.broken.is_some() {
        Status::Broken
    } else {
        Status::Ok
    };
    page.badge(Some(CHAIN_STATUS_ID), status, &chain_status(chain));

    // Seq order is append order, so the lowest and highest seq bound the
    // time range without assuming anything about the timestamp format.
    let first = entries.iter().min_by_key(|e| e.seq);
    let last = entries.iter().max_by_key(|e| e.seq);
    let range = match (first, last) {
        (Some(first), Some(last)) => format!("{} to {}", first.ts, last.ts),
        _ => "none".to_owned(),
    };
    let mut summary = vec![
        ("Generated".to_owned(), generated_at.to_owned()),
        ("Rows in log".to_owned(), thousands(chain.rows)),
        ("Entries shown".to_owned(), thousands(entries.len() as u64)),
        ("Time range".to_owned(), range),
        (
            "Head hash".to_owned(),
            chain.head.clone().unwrap_or_else(|| "none".to_owned()),
        ),
    ];
    let mut counts = [0u64; KIND_GROUPS.len() + 1];
    for entry in entries {
        counts[kind_group(&entry.kind)] += 1;
    }
    let names = KIND_GROUPS.iter().map(|g| format!("{g}.*"));
    for (name, count) in names.chain(["other".to_owned()]).zip(counts) {
        summary.push((name, thousands(count)));
    }
    page.h2("Summary");
    page.summary(&summary);

    page.h2("Entries");
    if entries.is_empty() {
        page.paragraph("No entries.");
    } else {
        let broken_seq = chain.broken.as_ref().map(|(seq, _)| *seq);
        let rows: Vec<Row> = entries
            .iter()
            .map(|e| {
                let row = Row::new(vec![
                    e.seq.to_string(),
                    e.ts.clone(),
                    e.kind.clone(),
                    e.subject.clone(),
                    e.details.to_string(),
                    short_hash(&e.hash),
                ]);
                if Some(e.seq) == broken_seq {
                    row.with_class("broken")
                } else {
                    row
                }
            })
            .collect();
        // Subject and details are free text and unspaced JSON.
        page.table_breaking(
            &["Seq", "Time", "Kind", "Subject", "Details", "Hash"],
            &rows,
            &[3, 4],
        );
    }
    page.finish()
}

/// One CSV record per entry with the columns in [`AUDIT_CSV_HEADER`];
/// `details` is compact JSON and `hash` is complete.
pub fn audit_csv(entries: &[AuditRow], out: &mut impl Write) -> io::Result<()> {
    let rows = entries.iter().map(|e| {
        vec![
            e.seq.to_string(),
            e.ts.clone(),
            e.kind.clone(),
            e.subject.clone(),
            e.details.to_string(),
            e.hash.clone(),
        ]
    });
    write_csv(out, &AUDIT_CSV_HEADER, rows)
}

/// Index into the summary counts: the position of the kind's prefix
/// (text before the first `.`) in [`KIND_GROUPS`], or the last slot.
fn kind_group(kind: &str) -> usize {
    let prefix = kind.split('.').next().unwrap_or(kind);
    KIND_GROUPS
        .iter()
        .position(|g| *g == prefix)
        .unwrap_or(KIND_GROUPS.len())
}

fn short_hash(hash: &str) -> String {
    if hash.chars().count() > SHORT_HASH {
        let mut short: String = hash.chars().take(SHORT_HASH).collect();
        short.push('…');
        short
    } else {
        hash.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::render::csv::parse;
    use serde_json::json;

    const EVIL: &str = "<script>alert(1)</script>";

    fn entry(seq: i64, kind: &str, subject: &str, details: serde_json::Value) -> AuditRow {
        AuditRow {
            seq,
            ts: format!("2026-11-20T10:00:{seq:02}Z"),
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            details,
            hash: format!("{seq:0>64}"),
        }
    }

    fn entries() -> Vec<AuditRow> {
        vec![
            entry(1, "consent.granted", "operator", json!({"scope": "max"})),
            entry(2, "config.changed", "limits", json!({"daily": 10})),
            entry(
                3,
                "job.admitted",
                EVIL,
                json!({"note": EVIL, "q": "a,\"b\"\nc"}),
            ),
            entry(4, "job.finished", "j-1", json!(null)),
            entry(5, "gateway.started", "gw", json!({})),
            entry(6, "docker.pull", "img", json!([1, 2])),
            entry(7, "key.rotated", "k", json!({})),
            entry(8, "policy.updated", "p", json!({})),
            entry(9, "misc", "m", json!({})),
            entry(10, "jobs.weird", "m", json!({})),
        ]
    }

    fn intact() -> ChainView {
        ChainView {
            rows: 10,
            head: Some("f".repeat(64)),
            broken: None,
            restarted: None,
        }
    }

    fn broken() -> ChainView {
        ChainView {
            rows: 10,
            head: Some("f".repeat(64)),
            broken: Some((3, "hash mismatch".to_owned())),
            restarted: None,
        }
    }

    #[test]
    fn status_text() {
        assert_eq!(chain_status(&intact()), "intact");
        assert_eq!(chain_status(&broken()), "broken at row 3: hash mismatch");
        let restarted = ChainView {
            restarted: Some((11, 3)),
            ..intact()
        };
        assert_eq!(
            chain_status(&restarted),
            "intact since row 11, which restarted it after a break at row 3"
        );
    }

    #[test]
    fn intact_chain() {
        let html = audit_html(&entries(), &intact(), "2026-11-20T12:00:00Z");
        assert!(html.contains("<p class=\"badge ok\" id=\"chain-status\">intact</p>"));
        assert!(!html.contains("<tr class="));
        assert!(html.contains("<dt>Rows in log</dt><dd>10</dd>"));
        assert!(html.contains("<dt>Generated</dt><dd>2026-11-20T12:00:00Z</dd>"));
        assert!(
            html.contains(
                "<dt>Time range</dt><dd>2026-11-20T10:00:01Z to 2026-11-20T10:00:10Z</dd>"
            )
        );
        for (group, count) in [
            ("consent.*", 1),
            ("config.*", 1),
            ("job.*", 2),
            ("gateway.*", 1),
            ("docker.*", 1),
            ("key.*", 1),
            ("policy.*", 1),
            ("other", 2),
        ] {
            assert!(
                html.contains(&format!("<dt>{group}</dt><dd>{count}</dd>")),
                "{group}"
            );
        }
    }

    #[test]
    fn broken_chain_highlights_the_row() {
        let html = audit_html(&entries(), &broken(), "now");
        assert!(html.contains(
            "<p class=\"badge broken\" id=\"chain-status\">broken at row 3: hash mismatch</p>"
        ));
        assert_eq!(html.matches("<tr class=\"broken\">").count(), 1);
        assert!(html.contains("<tr class=\"broken\"><td>3</td>"));
    }

    #[test]
    fn reason_is_escaped() {
        let chain = ChainView {
            rows: 1,
            head: None,
            broken: Some((1, EVIL.to_owned())),
            restarted: None,
        };
        let html = audit_html(&[], &chain, EVIL);
        assert!(!html.to_ascii_lowercase().contains("<script"));
        assert!(html.contains("broken at row 1: &lt;script&gt;"));
        assert!(html.contains("No entries."));
        assert!(html.contains("<dt>Time range</dt><dd>none</dd>"));
        assert!(html.contains("<dt>Head hash</dt><dd>none</dd>"));
    }

    #[test]
    fn html_is_safe_and_self_contained() {
        let html = audit_html(&entries(), &broken(), "now");
        assert!(!html.to_ascii_lowercase().contains("<script"));
        assert!(html.contains("<td class=\"brk\">&lt;script&gt;alert(1)&lt;/script&gt;</td>"));
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(html.contains(
            "<meta http-equiv=\"Content-Security-Policy\" \
             content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        ));
        // Compact JSON, escaped.
        assert!(html.contains("<td class=\"brk\">{&quot;scope&quot;:&quot;max&quot;}</td>"));
        // Short hash in the table.
        assert!(html.contains("<td>000000000000…</td>"));
    }

    #[test]
    fn csv_round_trip() {
        let entries = entries();
        let mut out = Vec::new();
        audit_csv(&entries, &mut out).unwrap();
        let records = parse(&String::from_utf8(out).unwrap());
        assert_eq!(records[0], AUDIT_CSV_HEADER);
        assert_eq!(records.len(), entries.len() + 1);
        for (record, e) in records[1..].iter().zip(&entries) {
            assert_eq!(record[0], e.seq.to_string());
            assert_eq!(record[1], e.ts);
            assert_eq!(record[2], e.kind);
            assert_eq!(record[3], e.subject);
            let details: serde_json::Value = serde_json::from_str(&record[4]).unwrap();
            assert_eq!(details, e.details);
            assert_eq!(record[5], e.hash);
        }
        assert_eq!(
            records[3][4],
            r#"{"note":"<script>alert(1)</script>","q":"a,\"b\"\nc"}"#
        );
    }

    #[test]
    fn kind_groups() {
        assert_eq!(kind_group("job.admitted"), 2);
        assert_eq!(kind_group("job"), 2);
        assert_eq!(kind_group("jobs.x"), KIND_GROUPS.len());
        assert_eq!(kind_group(""), KIND_GROUPS.len());
    }
}
