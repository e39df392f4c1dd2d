//! Adversarial plugins: each must end in a deny with the right error class,
//! quickly, while the other roles keep deciding and the next call works.

use crate::support::{Home, fixture, role};

/// Activates `name` for approval and returns the approval decision of a dry run.
fn approval_with(home: &Home, name: &str) -> serde_json::Value {
    let path = fixture(name);
    home.ok(&["policy", "set", "approval", path.to_str().unwrap()]);
    let (code, doc) = home.dry_run(&["--prompt", "hello"]);
    assert_eq!(code, 3, "{doc:#}");
    assert_eq!(doc["decision"], "deny");
    // The other roles still ran, on their own plugins.
    assert_eq!(role(&doc, "limits")["outcome"], "allow", "{doc:#}");
    assert!(
        role(&doc, "pricing")["quote"]["price"].as_u64().is_some(),
        "{doc:#}"
    );
    role(&doc, "approval").clone()
}

fn assert_failed(decision: &serde_json::Value, class: &str) {
    assert_eq!(decision["outcome"], "deny", "{decision:#}");
    assert_eq!(decision["error_class"], class, "{decision:#}");
    let reason = decision["reason"].as_str().unwrap();
    assert!(
        reason.contains("approval plugin"),
        "the message names the role: {reason}"
    );
    // Loose bound: the limits are tens of milliseconds, a second means they failed.
    assert!(
        decision["elapsed_us"].as_u64().unwrap() < 1_000_000,
        "{decision:#}"
    );
}

/// After a bad plugin, going back to the default must decide normally.
fn assert_recovers(home: &Home) {
    home.ok(&["policy", "reset", "approval"]);
    let (_, doc) = home.dry_run(&["--prompt", "hello"]);
    assert_eq!(doc["decision"], "allow", "{doc:#}");
}

fn permissive_home() -> Home {
    let home = Home::opted_in();
    home.set(&["compliance.requireApproval=false"]);
    home
}

#[test]
fn endless_loop_times_out() {
    let home = permissive_home();
    // Plenty of fuel, so the wall-clock deadline is what stops it.
    home.set(&["policy.fuel=10000000000", "policy.timeoutMs=40"]);
    assert_failed(&approval_with(&home, "spin"), "timeout");
    assert_recovers(&home);
}

#[test]
fn endless_loop_runs_out_of_fuel() {
    let home = permissive_home();
    home.set(&["policy.fuel=100000", "policy.timeoutMs=5000"]);
    assert_failed(&approval_with(&home, "spin"), "out-of-fuel");
    assert_recovers(&home);
}

#[test]
fn memory_bomb_hits_the_cap() {
    let home = permissive_home();
    assert_failed(&approval_with(&home, "membomb"), "memory");
    assert_recovers(&home);
}

#[test]
fn trap_is_a_deny() {
    let home = permissive_home();
    assert_failed(&approval_with(&home, "trap"), "trap");
    assert_recovers(&home);
}

#[test]
fn oversized_answer_is_refused() {
    let home = permissive_home();
    assert_failed(&approval_with(&home, "oversized"), "invalid-output");
    assert_recovers(&home);
}

#[test]
fn files_and_environment_are_out_of_reach() {
    let home = permissive_home();
    let decision = approval_with(&home, "snoop");
    // The plugin reports what it could see; a policy deny, not a failure.
    assert!(decision["error_class"].is_null(), "{decision:#}");
    let reason = decision["reason"].as_str().unwrap();
    let (seen, hash) = reason.split_once(";hash=").expect("a hash");
    assert_eq!(seen, "file=err;dir=err;env=none;vars=0;args=0");

    // WASI's random bytes come from the plugin's digest: another node, another
    // process, another instance hashes the same.
    let other = permissive_home();
    let again = approval_with(&other, "snoop");
    assert_eq!(again["reason"].as_str().unwrap(), reason, "hash {hash}");
}

#[test]
fn reused_instances_recover_after_a_trap() {
    let home = permissive_home();
    home.set(&["policy.isolation=reuse"]);
    assert_failed(&approval_with(&home, "trap"), "trap");
    assert_recovers(&home);
}

#[test]
fn a_plugin_that_refuses_its_config_is_never_activated() {
    let home = permissive_home();
    let run = home.run(&[
        "policy",
        "set",
        "approval",
        fixture("badconfig").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("refuses the configuration"),
        "{}",
        run.stderr
    );
    let (_, shown) = home.json(&["policy", "show", "approval"]);
    assert_eq!(shown["plugin"]["origin"], "default");
}

#[test]
fn a_plugin_for_another_role_is_refused() {
    let home = permissive_home();
    let run = home.run(&[
        "policy",
        "set",
        "approval",
        fixture("allow_limits").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("is not a plugin for the approval role"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("approval-policy"), "{}", run.stderr);

    // The same component is a fine limits plugin.
    home.ok(&[
        "policy",
        "set",
        "limits",
        fixture("allow_limits").to_str().unwrap(),
    ]);
    let (_, doc) = home.dry_run(&["--prompt", "hi", "--max-tokens", "100000"]);
    assert_eq!(role(&doc, "limits")["grant"]["timeout_secs"], 60, "{doc:#}");
    assert_eq!(role(&doc, "limits")["plugin"]["origin"], "file");
}

#[test]
fn a_missing_plugin_file_denies_its_role_only() {
    let home = permissive_home();
    let (_, set) = home.json(&[
        "policy",
        "set",
        "limits",
        fixture("allow_limits").to_str().unwrap(),
    ]);
    let digest = set["plugin"]["digest"].as_str().unwrap();
    std::fs::remove_file(home.path().join("policies").join(format!("{digest}.wasm"))).unwrap();

    let (code, doc) = home.dry_run(&["--prompt", "hi"]);
    assert_eq!(code, 3);
    let limits = role(&doc, "limits");
    assert_eq!(limits["error_class"], "missing", "{doc:#}");
    assert!(
        limits["reason"]
            .as_str()
            .unwrap()
            .contains("policy reset limits"),
        "{limits}"
    );
    assert_eq!(role(&doc, "approval")["outcome"], "allow");
    let (_, status) = home.json(&["status"]);
    let listed = status["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "limits")
        .unwrap()
        .clone();
    assert_eq!(listed["state"], "missing");
}

#[test]
fn garbage_is_not_a_plugin() {
    let home = Home::new();
    let junk = home.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm not really").unwrap();
    let run = home.run(&["policy", "set", "pricing", junk.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("could not compile pricing plugin 'junk'"),
        "{}",
        run.stderr
    );
    assert_eq!(
        home.run(&["policy", "set", "pricer", junk.to_str().unwrap()])
            .code,
        2
    );
}

#[test]
fn a_plugin_built_for_an_older_contract_is_refused_naming_both_versions() {
    let home = permissive_home();
    let path = fixture("old_wit");
    let run = home.run(&["policy", "set", "approval", path.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    for named in [
        "claude-max-market:policy@0.1.0",
        claude_max_market::wit::WIT_PACKAGE,
        "rebuild it",
    ] {
        assert!(run.stderr.contains(named), "{named} not in: {}", run.stderr);
    }
    let (_, doc) = home.dry_run(&["--prompt", "hello"]);
    assert_eq!(
        doc["decision"], "allow",
        "the default stays active: {doc:#}"
    );
}

#[test]
fn a_flood_of_findings_is_refused_and_names_the_cap() {
    let home = permissive_home();
    let path = fixture("flood");
    home.ok(&["policy", "set", "compliance", path.to_str().unwrap()]);
    let run = home.run(&["compliance-check"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("2000 findings, over the cap of 256"),
        "{}",
        run.stderr
    );
}

/// Installs `fixture` for approval from a signed bundle whose role table
/// holds `limits` (bundle.toml lines), and returns the approval decision.
fn approval_from_bundle(home: &Home, fixture_name: &str, limits: &str) -> serde_json::Value {
    let desk = tempfile::tempdir().unwrap();
    let toml = desk.path().join("bundle.toml");
    std::fs::write(
        &toml,
        format!(
            "name = \"spinner\"\nrevision = 1\n[roles.approval]\ncomponent = \"{}\"\n{limits}\n",
            fixture(fixture_name).display()
        ),
    )
    .unwrap();
    home.install_signed_bundle(&toml);
    let (_, doc) = home.dry_run(&["--prompt", "hello"]);
    role(&doc, "approval").clone()
}

#[test]
fn a_limit_that_is_hit_is_named_where_it_was_set() {
    // No fuel line: the node's cap is what applies, and what to raise.
    let home = permissive_home();
    home.set(&["policy.fuel=100000", "policy.timeoutMs=5000"]);
    let node = approval_from_bundle(&home, "spin", "");
    assert_failed(&node, "out-of-fuel");
    let reason = node["reason"].as_str().unwrap();
    assert!(reason.contains("(100000 units)"), "{reason}");
    assert!(reason.contains("raise policy.fuel"), "{reason}");

    // The bundle asks for less than the node allows: that is what to raise.
    let home = permissive_home();
    home.set(&["policy.timeoutMs=5000"]);
    let asked = approval_from_bundle(&home, "spin", "fuel = 50000");
    assert_failed(&asked, "out-of-fuel");
    let reason = asked["reason"].as_str().unwrap();
    assert!(reason.contains("(50000 units)"), "{reason}");
    assert!(
        reason.contains("the `fuel` its bundle asks for"),
        "{reason}"
    );
    assert!(
        reason.contains("20000000 units"),
        "the node's cap: {reason}"
    );
}

/// Pricing may have no opinion: the decision stands on the other roles,
/// pricing's part says so, and `policy test` can expect it.
#[test]
fn pricing_may_answer_no_opinion() {
    let home = permissive_home();
    let path = fixture("no_opinion_pricing");
    home.ok(&["policy", "set", "pricing", path.to_str().unwrap()]);
    let (code, doc) = home.dry_run(&["--prompt", "hello"]);
    assert_eq!(code, 0, "{doc:#}");
    let pricing = role(&doc, "pricing");
    assert_eq!(pricing["outcome"], "allow", "{doc:#}");
    assert!(pricing.get("quote").is_none(), "{doc:#}");
    assert!(
        pricing["reason"].as_str().unwrap().contains("no opinion"),
        "{doc:#}"
    );

    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nname = \"no price\"\n[case.expect]\ndecision = \"allow\"\nno_opinion = true\n\n\
         [[case]]\nname = \"a price\"\n[case.expect]\ndecision = \"allow\"\nprice = 5\n",
    )
    .unwrap();
    let run = home.run(&[
        "policy",
        "test",
        path.to_str().unwrap(),
        "--cases",
        cases.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("ok   no price"), "{}", run.stdout);
    assert!(
        run.stdout.contains("expected price 5, got none"),
        "{}",
        run.stdout
    );
}
