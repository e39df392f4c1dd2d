//! config --set/--get/--list and limits.

use crate::support::Home;

#[test]
fn set_get_and_list_typed_keys() {
    let home = Home::new();
    home.set(&[
        "limits.dailyTasks=12",
        "compliance.allowedModels=claude-haiku-4-5,claude-sonnet-4-5",
    ]);
    assert_eq!(
        home.ok(&["config", "--get", "limits.dailyTasks"])
            .stdout
            .trim(),
        "12"
    );
    assert_eq!(
        home.ok(&["config", "--get", "compliance.allowedModels"])
            .stdout
            .trim(),
        "claude-haiku-4-5,claude-sonnet-4-5"
    );
    let (code, list) = home.json(&["config", "--list"]);
    assert_eq!(code, 0);
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    for key in [
        "docker.memory",
        "security.keyRotationDays",
        "market.maxBidPrice",
        "policy.fuel",
        "policy.isolation",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
}

#[test]
fn unknown_keys_and_bad_values_are_refused_with_the_choices() {
    let home = Home::new();
    let run = home.run(&["config", "--set", "limits.daily=3"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("limits.dailyTasks"), "{}", run.stderr);

    let run = home.run(&["config", "--set", "policy.isolation=shared"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("fresh") && run.stderr.contains("reuse"),
        "{}",
        run.stderr
    );

    // All or nothing: a bad value in a batch leaves the good one unwritten.
    let run = home.run(&[
        "config",
        "--set",
        "limits.dailyTasks=3",
        "--set",
        "limits.timeoutSecs=abc",
    ]);
    assert_eq!(run.code, 1);
    assert_eq!(
        home.ok(&["config", "--get", "limits.dailyTasks"])
            .stdout
            .trim(),
        "20"
    );
}

#[test]
fn every_change_is_audited() {
    let home = Home::new();
    home.ok(&["limits", "--daily", "4", "--concurrent", "3"]);
    let (_, audit) = home.json(&["audit"]);
    let change = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "config.set")
        .expect("a config.set row");
    let changes = change["details"]["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["key"] == "limits.dailyTasks" && c["from"] == "20" && c["to"] == "4")
    );
    assert!(
        changes
            .iter()
            .any(|c| c["key"] == "limits.concurrentJobs" && c["to"] == "3")
    );
}

#[test]
fn usage_errors_exit_2() {
    let home = Home::new();
    assert_eq!(home.run(&["limits", "--daily", "many"]).code, 2);
    assert_eq!(home.run(&["execute", "--dry-run"]).code, 2);
    assert_eq!(home.run(&["no-such-command"]).code, 2);
}
