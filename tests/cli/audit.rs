//! The audit report and tamper detection.

use crate::support::Home;

#[test]
fn verify_passes_then_names_the_altered_row() {
    let home = Home::opted_in();
    home.ok(&["limits", "--daily", "9"]);
    home.ok(&["execute", "--dry-run", "--prompt", "hello"]);
    let run = home.ok(&["audit", "--verify"]);
    assert!(run.stdout.contains("intact"), "{}", run.stdout);

    let (_, report) = home.json(&["audit"]);
    let entries = report["entries"].as_array().unwrap();
    assert!(entries.len() >= 4, "{report:#}");
    let victim = entries[1]["seq"].as_i64().unwrap();

    home.forge_audit_row(victim);

    let run = home.run(&["audit", "--verify"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!("row {victim}")),
        "{}",
        run.stderr
    );
    let (code, doc) = home.json(&["audit", "--verify"]);
    assert_eq!(code, 1);
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("row {victim}"))
    );
}

#[test]
fn report_formats_and_output_file() {
    let home = Home::opted_in();
    let text = home.ok(&["audit"]).stdout;
    assert!(text.contains("consent.opt_in"), "{text}");
    assert!(text.contains("chain intact"), "{text}");

    let out = home.path().join("report.json");
    home.ok(&[
        "audit",
        "--format",
        "json",
        "--output",
        out.to_str().unwrap(),
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(!doc["entries"].as_array().unwrap().is_empty());

    let (_, future) = home.json(&["audit", "--since", "2999-01-01"]);
    assert!(future["entries"].as_array().unwrap().is_empty());
    assert_eq!(home.run(&["audit", "--since", "yesterday"]).code, 2);
}
