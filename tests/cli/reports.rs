//! The audit log as JSON, CSV and a self-contained HTML page, checked the way
//! their readers would: parsed back, and the page opened in headless
//! Chromium (Debian's `chromium`, which `.ci/run` installs).

use std::process::Command;

use serde_json::Value;

use crate::support::Home;

/// Parses RFC 4180 CSV (quoted fields, doubled quotes, newlines in quotes).
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// The page's DOM after Chromium loaded it.
fn rendered_dom(page: &std::path::Path) -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("headless chromium runs (apt-get install chromium)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chain_status(dom: &str) -> String {
    let start = dom
        .find("id=\"chain-status\"")
        .expect("the page shows the chain status");
    let text = &dom[start..];
    let text = &text[text.find('>').unwrap() + 1..];
    text[..text.find('<').unwrap()]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[test]
fn audit_formats_parse_and_agree() {
    let home = Home::opted_in();
    home.set(&["limits.dailyTasks=4", "api.defaultModel=claude-haiku-4-5"]);
    home.dry_run(&["--prompt", "a, \"quoted\"\nprompt"]);
    let (_, doc) = home.json(&["audit", "--format", "json"]);
    let entries = doc["entries"].as_array().unwrap();
    let csv = home.ok(&["audit", "--format", "csv"]).stdout;
    let rows = parse_csv(&csv);
    assert_eq!(rows[0], ["seq", "ts", "kind", "subject", "details", "hash"]);
    assert_eq!(rows.len() - 1, entries.len(), "{csv}");
    for (row, entry) in rows[1..].iter().zip(entries) {
        assert_eq!(row[0], entry["seq"].to_string());
        assert_eq!(row[2], entry["kind"].as_str().unwrap());
        let details: Value = serde_json::from_str(&row[4]).expect("details are JSON");
        assert_eq!(details, entry["details"]);
        assert_eq!(row[5], entry["hash"].as_str().unwrap());
    }
}

#[test]
fn the_audit_page_opens_in_a_browser_and_shows_the_chain_status() {
    let home = Home::opted_in();
    home.set(&["limits.dailyTasks=4"]);
    let page = home.path().join("audit.html");
    let page_arg = page.to_str().unwrap();
    home.ok(&["audit", "--html", page_arg]);
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["src=", "href=", "<script", "@import", "url("] {
        assert!(
            !html.contains(external),
            "the page loads {external}: {html}"
        );
    }
    let dom = rendered_dom(&page);
    assert_eq!(chain_status(&dom), "intact");
    assert!(dom.contains("config.set"), "entries are listed");

    home.forge_audit_row(2);
    home.ok(&["audit", "--html", page_arg]);
    let dom = rendered_dom(&page);
    let status = chain_status(&dom);
    assert!(status.starts_with("broken at row 2"), "{status}");
    assert!(
        dom.contains("class=\"broken\""),
        "the broken row is highlighted"
    );
}
