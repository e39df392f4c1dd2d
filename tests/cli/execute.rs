//! execute --dry-run with the default policies.

use crate::support::{Home, role};

#[test]
fn not_opted_in_is_denied_by_compliance() {
    let home = Home::new();
    let (code, doc) = home.dry_run(&["--prompt", "hello"]);
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(doc["decision"], "deny");
    let compliance = role(&doc, "compliance");
    assert_eq!(compliance["outcome"], "deny");
    assert!(
        compliance["reason"].as_str().unwrap().contains("opt-in"),
        "{compliance}"
    );
}

#[test]
fn approval_asks_by_default_and_allows_when_not_required() {
    let home = Home::opted_in();
    let (code, doc) = home.dry_run(&["--prompt", "hello"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["decision"], "ask");
    assert_eq!(role(&doc, "approval")["outcome"], "ask");

    home.set(&["compliance.requireApproval=false"]);
    let (code, doc) = home.dry_run(&["--prompt", "hello", "--budget-tokens", "6000"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["decision"], "allow");
    let grant = &role(&doc, "limits")["grant"];
    assert_eq!(
        (&grant["tokens"], &grant["requests"]),
        (&6000.into(), &1.into())
    );
    assert!(role(&doc, "pricing")["quote"]["price"].as_u64().unwrap() > 0);
    assert_eq!(doc["job"]["prompt_bytes"], 5);
    assert_eq!(
        doc["job"]["command"],
        serde_json::json!([]),
        "the built-in worker"
    );
}

#[test]
fn approve_all_is_honoured_only_when_config_permits() {
    let home = Home::opted_in();
    let (_, doc) = home.dry_run(&["--prompt", "hi", "--approve-all"]);
    assert_eq!(doc["decision"], "ask", "{doc:#}");
    home.set(&["compliance.allowAutoApprove=true"]);
    let (_, doc) = home.dry_run(&["--prompt", "hi", "--approve-all"]);
    assert_eq!(doc["decision"], "allow", "{doc:#}");
}

#[test]
fn models_sizes_and_limits_are_enforced() {
    let home = Home::opted_in();
    home.set(&[
        "compliance.requireApproval=false",
        "compliance.maxPromptBytes=10",
    ]);
    let (code, doc) = home.dry_run(&["--prompt", "hi", "--model", "gpt-4"]);
    assert_eq!((code, &doc["decision"]), (3, &"deny".into()), "{doc:#}");
    assert!(
        role(&doc, "approval")["reason"]
            .as_str()
            .unwrap()
            .contains("gpt-4")
    );

    let (_, doc) = home.dry_run(&["--prompt", "this prompt is too long"]);
    assert_eq!(role(&doc, "approval")["outcome"], "deny", "{doc:#}");

    let (_, doc) = home.dry_run(&["--prompt", "hi", "--budget-tokens", "300000"]);
    assert_eq!(role(&doc, "limits")["outcome"], "deny", "{doc:#}");
    let reason = role(&doc, "limits")["reason"].as_str().unwrap();
    assert!(reason.contains("limits.maxTokensPerTask"), "{reason}");
    let (_, doc) = home.dry_run(&["--prompt", "hi", "--max-requests", "1000"]);
    assert_eq!(role(&doc, "limits")["outcome"], "deny", "{doc:#}");
    let (_, doc) = home.dry_run(&["--prompt", "hi", "--timeout", "2h"]);
    assert!(
        role(&doc, "limits")["reason"]
            .as_str()
            .unwrap()
            .contains("7200 s"),
        "{doc:#}"
    );
}

#[test]
fn a_command_job_is_judged_on_its_image_command_and_budget() {
    let home = Home::opted_in();
    home.set(&["compliance.requireApproval=false"]);
    let (code, doc) = home.dry_run(&[
        "--image",
        "python-agent:3",
        "--max-requests",
        "20",
        "--timeout",
        "5m",
        "--",
        "python3",
        "agent.py",
        "--fix",
    ]);
    assert_eq!(code, 0, "{doc:#}");
    let job = &doc["job"];
    assert_eq!(job["image"], "python-agent:3");
    assert_eq!(
        job["command"],
        serde_json::json!(["python3", "agent.py", "--fix"])
    );
    assert_eq!(job["budget"]["tokens"], 200_000, "limits.maxTokensPerTask");
    assert_eq!(
        (&job["budget"]["requests"], &job["budget"]["timeout_secs"]),
        (&20.into(), &300.into())
    );
    assert_eq!(doc["decision"], "allow", "a local job may use any image");

    home.set(&["compliance.restrictLocalImages=true"]);
    let (code, doc) = home.dry_run(&["--image", "python-agent:3", "--", "true"]);
    assert_eq!(code, 3, "{doc:#}");
    let reason = role(&doc, "compliance")["reason"].as_str().unwrap();
    assert!(reason.contains("compliance.allowedImages"), "{reason}");

    home.set(&["compliance.restrictLocalImages=false"]);
    let (code, doc) = home.dry_run(&["--image", "x:1", "--allow-egress", "--", "true"]);
    assert_eq!(code, 3, "{doc:#}");
    assert!(
        role(&doc, "compliance")["reason"]
            .as_str()
            .unwrap()
            .contains("compliance.allowEgress"),
        "{doc:#}"
    );
}

#[test]
fn flags_that_do_not_fit_together_are_usage_errors() {
    let home = Home::opted_in();
    for args in [
        &["execute", "--", "true"][..],
        &["execute", "--agent", "claude-code"],
        &[
            "execute",
            "--agent",
            "claude-code",
            "--prompt",
            "x",
            "--",
            "true",
        ],
        &["execute", "--image", "x:1", "--prompt", "hi"],
        &["execute", "--image", "x:1", "--prompt", "hi", "--", "true"],
        &["execute"],
        &["execute", "--prompt", "hi", "--timeout", "soon"],
        &["execute", "--prompt", "hi", "--env", "NOT_SET_ANYWHERE_X"],
    ] {
        let run = home.run(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
    let run = home.run(&["execute", "--dry-run", "--prompt", "hi", "--workspace", "."]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("--workspace and --env are for commands"),
        "{}",
        run.stderr
    );
}

#[test]
fn prompt_from_file_and_errors_for_bad_input() {
    let home = Home::opted_in();
    let file = home.path().join("prompt.txt");
    std::fs::write(&file, "from a file").unwrap();
    let (code, doc) = home.dry_run(&["--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["job"]["prompt_bytes"], 11);

    let run = home.run(&["execute", "--dry-run", "--file", "/no/such/prompt"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("/no/such/prompt"), "{}", run.stderr);
    assert_eq!(home.run(&["execute", "--dry-run", "--prompt", ""]).code, 1);
}

#[test]
fn without_consent_a_real_run_is_denied_before_anything_else() {
    let home = Home::new();
    let (code, doc) = home.json(&["execute", "--prompt", "hello"]);
    assert_eq!(code, 3, "{doc}");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(message.contains("terms"), "{doc}");
    home.ok(&["terms", "--accept"]);
    let (code, doc) = home.json(&["execute", "--prompt", "hello"]);
    assert_eq!(code, 3, "{doc}");
    assert!(
        doc["error"]["message"].as_str().unwrap().contains("opt-in"),
        "{doc}"
    );
}

#[test]
fn every_dry_run_decision_is_on_the_audit_log() {
    let home = Home::opted_in();
    home.ok(&["execute", "--dry-run", "--prompt", "hello"]);
    let (_, audit) = home.json(&["audit"]);
    let row = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "job.dry-run")
        .expect("a job.dry-run row");
    let text = row["details"].to_string();
    assert!(
        text.contains("default-approval") && text.contains("default-limits"),
        "{text}"
    );
}

#[test]
fn the_nodes_model_and_auto_approve_rules_hold_whatever_approval_plugin_is_active() {
    let home = Home::opted_in();
    let allow_all = crate::support::fixture("allow_approval");
    home.ok(&["policy", "set", "approval", allow_all.to_str().unwrap()]);

    let (code, doc) = home.dry_run(&["--prompt", "hi", "--approve-all"]);
    assert_eq!(code, 0, "{doc:#}");
    let approval = role(&doc, "approval");
    assert_eq!(
        doc["decision"], "ask",
        "--approve-all does not count: {doc:#}"
    );
    assert!(
        approval["reason"]
            .as_str()
            .unwrap()
            .contains("compliance.allowAutoApprove is false"),
        "{approval}"
    );

    home.set(&["compliance.allowAutoApprove=true"]);
    let (_, doc) = home.dry_run(&["--prompt", "hi", "--approve-all"]);
    assert_eq!(doc["decision"], "allow", "{doc:#}");
    let (code, doc) = home.dry_run(&[
        "--prompt",
        "hi",
        "--approve-all",
        "--model",
        "claude-made-up-9",
    ]);
    assert_eq!(code, 3, "{doc:#}");
    let approval = role(&doc, "approval");
    assert_eq!(approval["outcome"], "deny");
    let reason = approval["reason"].as_str().unwrap();
    assert!(reason.starts_with("node rule: "), "{reason}");
    assert!(reason.contains("compliance.allowedModels"), "{reason}");
}

#[test]
fn a_candidate_plugin_is_replayed_on_the_decisions_this_node_recorded() {
    let home = Home::opted_in();
    home.set(&["compliance.requireApproval=false"]);
    for model in ["claude-haiku-4-5", "claude-sonnet-4-5"] {
        let (code, doc) = home.dry_run(&["--prompt", "hi", "--model", model]);
        assert_eq!(doc["decision"], "allow", "{doc:#}");
        assert_eq!(code, 0);
    }

    // Limits that grant what was asked answer as the default did.
    let allow_limits = crate::support::fixture("allow_limits");
    let (code, same) = home.json(&["policy", "test", allow_limits.to_str().unwrap(), "--replay"]);
    assert_eq!(code, 0, "{same:#}");
    assert_eq!(same["replayed"], 2, "{same:#}");
    assert_eq!(same["differences"], serde_json::json!([]));

    // An approval that asks about every job not pre-approved differs on both.
    let asking = crate::support::fixture("allow_approval");
    let run = home.run(&["policy", "test", asking.to_str().unwrap(), "--replay"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout.matches("DIFF job").count(), 2, "{}", run.stdout);
    assert!(run.stdout.contains("recorded:  allow"), "{}", run.stdout);
    assert!(
        run.stdout.contains("candidate: ask (run job"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("2 recorded decisions replayed, 2 differ"),
        "{}",
        run.stdout
    );
    // The candidate's clock is each decision's own time, not the replay's.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = home.run(&["policy", "test", asking.to_str().unwrap(), "--replay"]);
    assert_eq!(again.stdout, run.stdout);

    let later = home.run(&[
        "policy",
        "test",
        asking.to_str().unwrap(),
        "--replay",
        "--since",
        "2999-01-01",
    ]);
    assert_eq!(later.code, 0, "{later:?}");
    assert!(
        later.stdout.contains("0 recorded decisions replayed"),
        "{}",
        later.stdout
    );
    let neither = home.run(&["policy", "test", asking.to_str().unwrap()]);
    assert_eq!(neither.code, 2, "--cases or --replay: {neither:?}");
}
