//! terms, opt-in and opt-out.

use crate::support::Home;

#[test]
fn terms_show_the_text_and_accept_records_the_version() {
    let home = Home::new();
    let (code, doc) = home.json(&["terms"]);
    assert_eq!(code, 0);
    assert_eq!(doc["accepted"], false);
    assert!(
        doc["text"]
            .as_str()
            .unwrap()
            .contains("Claude subscription (OAuth) credentials are for your own use")
    );
    let version = doc["version"].as_str().unwrap().to_string();
    assert_eq!(version.len(), 16);

    let (code, doc) = home.json(&["terms", "--accept"]);
    assert_eq!(code, 0);
    assert_eq!(doc["accepted"], true);
    assert_eq!(doc["version"], version.as_str());
}

#[test]
fn opt_in_refuses_until_terms_are_accepted() {
    let home = Home::new();
    let run = home.run(&["opt-in", "--claude-jobs"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("terms --accept"), "{}", run.stderr);

    let (code, doc) = home.json(&[
        "opt-in",
        "--claude-jobs",
        "--accept-terms",
        "--max-daily",
        "7",
        "--max-tokens",
        "5000",
    ]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["consent"]["opted_in"], true);
    assert_eq!(doc["consent"]["claude_jobs"], true);
    assert_eq!(
        home.ok(&["config", "--get", "limits.dailyTasks"])
            .stdout
            .trim(),
        "7"
    );
    assert_eq!(
        home.ok(&["config", "--get", "limits.dailyTokens"])
            .stdout
            .trim(),
        "5000"
    );
}

#[test]
fn opt_out_needs_confirmation_without_a_terminal_and_keeps_history() {
    let home = Home::opted_in();
    let run = home.run(&["opt-out"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);

    home.ok(&["opt-out", "--yes"]);
    let (_, status) = home.json(&["status"]);
    assert_eq!(status["consent"]["opted_in"], false);

    // Opting in again adds an event; nothing before it is erased.
    let rows_before = status["audit"]["rows"].as_u64().unwrap();
    home.ok(&["opt-in", "--claude-jobs"]);
    let (_, audit) = home.json(&["audit"]);
    let kinds: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(audit["entries"].as_array().unwrap().len() as u64 > rows_before);
    assert!(
        kinds.iter().filter(|k| k.contains("opt_in")).count() >= 2,
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k.contains("opt_out")), "{kinds:?}");
}
