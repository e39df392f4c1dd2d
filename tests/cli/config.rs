//! config --set/--get/--list and limits.

use serde_json::Value;

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
fn a_credential_is_never_a_setting_and_never_reaches_the_audit_log() {
    let home = Home::opted_in();
    let key = "sk-ant-api03-a-real-looking-key-0123456789abcdef";
    for assignment in [
        format!("market.user={key}"),
        format!("api.baseUrl=https://{key}@example.com"),
    ] {
        let run = home.run(&["config", "--set", &assignment]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("looks like an Anthropic credential"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains(key), "the error repeats no key");
    }
    let audit = Value::Array(home.audit_entries()).to_string();
    assert!(!audit.contains("sk-ant-"), "{audit}");
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap_or_default();
    assert!(!config.contains("sk-ant-"));
    // So compliance still admits jobs.
    let (code, check) = home.json(&["compliance-check"]);
    assert_eq!(code, 0, "{check:#}");
    assert_eq!(check["critical_failures"], 0, "{check:#}");
}

#[test]
fn usage_errors_exit_2() {
    let home = Home::new();
    assert_eq!(home.run(&["limits", "--daily", "many"]).code, 2);
    assert_eq!(home.run(&["execute", "--dry-run"]).code, 2);
    assert_eq!(home.run(&["no-such-command"]).code, 2);
}

#[test]
fn settings_changed_at_once_by_several_processes_all_land() {
    let home = Home::new();
    let assignments = [
        "limits.dailyTasks=7",
        "limits.dailyTokens=7777",
        "limits.timeoutSecs=77",
        "limits.concurrentJobs=3",
        "docker.pidsLimit=77",
        "workspace.maxFiles=777",
        "market.slots=7",
        "policy.timeoutMs=77",
    ];
    let spawn = |assignment: &str| {
        home.command()
            .args(["config", "--set", assignment])
            .output()
            .expect("running config --set")
    };
    std::thread::scope(|s| {
        let runs: Vec<_> = assignments
            .iter()
            .map(|a| s.spawn(move || spawn(a)))
            .collect();
        for run in runs {
            let out = run.join().unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    });
    for assignment in assignments {
        let (key, value) = assignment.split_once('=').unwrap();
        let got = home.ok(&["config", "--get", key]).stdout;
        assert_eq!(got.trim(), value, "{key} was lost");
    }

    // The same key from many processes: each audit row's previous value is
    // the value the row before it set.
    std::thread::scope(|s| {
        let runs: Vec<_> = (1..=8)
            .map(|n| s.spawn(move || spawn(&format!("limits.requestsPerJob={n}"))))
            .collect();
        for run in runs {
            assert!(run.join().unwrap().status.success());
        }
    });
    let changes: Vec<(String, String)> = home
        .audit_of("config.set")
        .iter()
        .flat_map(|e| e["details"]["changes"].as_array().unwrap().clone())
        .filter(|c| c["key"] == "limits.requestsPerJob")
        .map(|c| {
            (
                c["from"].as_str().unwrap().to_owned(),
                c["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(changes.len(), 8, "{changes:?}");
    for pair in changes.windows(2) {
        assert_eq!(pair[1].0, pair[0].1, "{changes:?}");
    }
    let last = home
        .ok(&["config", "--get", "limits.requestsPerJob"])
        .stdout;
    assert_eq!(last.trim(), changes[7].1);
}
