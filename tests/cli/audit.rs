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

#[test]
fn a_log_cut_back_to_a_consistent_state_fails_against_an_anchored_head() {
    let home = Home::opted_in();
    home.ok(&["limits", "--daily", "9"]);
    let anchor = home.path().join("anchored-head.json");
    home.ok(&["audit", "head", "--output", anchor.to_str().unwrap()]);
    let (code, doc) = home.json(&["audit", "--verify", "--against", anchor.to_str().unwrap()]);
    assert_eq!(code, 0, "{doc:#}");
    let anchored = doc["anchored_seq"].as_i64().unwrap();
    assert!(anchored >= 3, "{doc:#}");

    // Cut the log below the anchored row and move the head to match, so the
    // chain alone still verifies.
    let keep = anchored - 2;
    home.tamper_audit(&format!(
        "DELETE FROM audit_log WHERE seq > {keep};
         UPDATE audit_head SET seq = {keep}, hash = (SELECT hash FROM audit_log WHERE seq = {keep})"
    ));
    assert!(home.ok(&["audit", "--verify"]).stdout.contains("intact"));
    let run = home.run(&["audit", "--verify", "--against", anchor.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("row {anchored} of the anchored head is gone")),
        "{}",
        run.stderr
    );
}

#[test]
fn an_altered_anchor_is_refused() {
    let home = Home::opted_in();
    let text = home.ok(&["audit", "head"]).stdout;
    let mut head: serde_json::Value = serde_json::from_str(&text).unwrap();
    head["seq"] = (head["seq"].as_i64().unwrap() - 1).into();
    let anchor = home.path().join("altered-head.json");
    std::fs::write(&anchor, head.to_string()).unwrap();
    let run = home.run(&["audit", "--verify", "--against", anchor.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("signature does not verify"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_broken_chain_denies_jobs_until_a_new_chain_records_the_break() {
    let home = Home::opted_in();
    home.set(&["limits.dailyTasks=3"]);
    home.forge_audit_row(2);
    let denied = home.run(&["execute", "--dry-run", "--prompt", "hello"]);
    assert_eq!(denied.code, 3, "{denied:?}");
    assert!(denied.stdout.contains("audit --recover"), "{denied:?}");
    assert!(
        home.run(&["audit", "head"])
            .stderr
            .contains("broken at row 2")
    );

    let unconfirmed = home.run(&["audit", "--recover"]);
    assert_ne!(unconfirmed.code, 0);
    assert!(
        unconfirmed.stderr.contains("--yes"),
        "{}",
        unconfirmed.stderr
    );

    let (code, restart) = home.json(&["audit", "--recover", "--yes"]);
    assert_eq!(code, 0, "{restart:#}");
    assert_eq!(restart["kind"], "audit.chain_restarted");
    assert_eq!(restart["details"]["break"]["seq"], 2);
    assert_eq!(
        restart["details"]["row_at_break"]["details"],
        r#"{"forged":true}"#
    );

    let verify = home.ok(&["audit", "--verify"]).stdout;
    assert!(verify.contains("restarted at row"), "{verify}");
    let run = home.run(&["execute", "--dry-run", "--prompt", "hello"]);
    assert_ne!(run.code, 3, "{run:?}");
    let again = home.run(&["audit", "--recover", "--yes"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("nothing to recover"),
        "{}",
        again.stderr
    );
}
