//! `compliance-check`: the host's facts judged by the compliance plugin,
//! and findings that flip when the node is tampered with.

use serde_json::Value;

use crate::support::Home;

fn finding<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no finding {id} in {doc:#}"))
}

#[test]
fn a_consenting_node_passes_and_says_so() {
    let home = Home::opted_in();
    let (code, doc) = home.json(&["compliance-check"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["critical_failures"], 0);
    for id in [
        "consent-recorded",
        "terms-current",
        "no-credentials-in-config",
        "no-credentials-in-audit",
        "no-credentials-in-database",
        "no-credentials-in-logs",
        "audit-chain",
        "subscription-for-others",
    ] {
        assert_eq!(finding(&doc, id)["passed"], true, "{id}: {doc:#}");
    }
    for id in [
        "key-age",
        "policy-signatures",
        "job-hardening",
        "docker-rootless",
    ] {
        finding(&doc, id);
    }
    assert!(doc["score"].as_u64().unwrap() >= 70, "{doc:#}");
    let text = home.ok(&["compliance-check"]);
    assert!(text.stdout.contains("score "), "{}", text.stdout);
}

#[test]
fn without_consent_critical_findings_fail_with_what_to_do() {
    let home = Home::new();
    let run = home.run(&["compliance-check"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("opt-in --claude-jobs"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("terms --accept"), "{}", run.stdout);
}

#[test]
fn a_key_planted_in_the_config_fails_the_check() {
    let home = Home::opted_in();
    let config = home.path().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap_or_default();
    text.push_str("\n# pasted by mistake: sk-ant-api03-PLANTEDxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n");
    std::fs::write(&config, text).unwrap();
    let (code, doc) = home.json(&["compliance-check"]);
    assert_eq!(code, 1, "{doc:#}");
    let planted = finding(&doc, "no-credentials-in-config");
    assert_eq!(planted["passed"], false);
    assert_eq!(planted["severity"], "critical");
    assert!(
        planted["message"].as_str().unwrap().contains("rotate"),
        "{planted}"
    );
}

#[test]
fn an_edited_audit_row_fails_the_chain_finding() {
    let home = Home::opted_in();
    home.set(&["limits.dailyTasks=3"]);
    home.forge_audit_row(2);
    let (code, doc) = home.json(&["compliance-check"]);
    assert_eq!(code, 1, "{doc:#}");
    let chain = finding(&doc, "audit-chain");
    assert_eq!(chain["passed"], false);
    assert!(
        chain["message"].as_str().unwrap().contains("row 2"),
        "{chain}"
    );
}

#[test]
fn an_unsigned_local_policy_is_a_warning_not_a_failure() {
    let home = Home::opted_in();
    home.ok(&[
        "policy",
        "set",
        "limits",
        crate::support::fixture("allow_limits").to_str().unwrap(),
    ]);
    let (code, doc) = home.json(&["compliance-check"]);
    assert_eq!(code, 0, "{doc:#}");
    let signatures = finding(&doc, "policy-signatures");
    assert_eq!(
        (signatures["passed"].clone(), signatures["severity"].clone()),
        (false.into(), "warning".into())
    );
}

/// Terms accepted in an earlier wording (as if the text changed since):
/// status and compliance-check both say to accept the current version.
#[test]
fn terms_accepted_in_an_older_version_must_be_accepted_again() {
    let home = Home::opted_in();
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    db.execute(
        "UPDATE consent_events SET terms_version = '0000000000000000' WHERE terms_version IS NOT NULL",
        [],
    )
    .unwrap();
    drop(db);
    let (_, status) = home.json(&["status"]);
    assert_eq!(status["terms_current"], false, "{status:#}");
    assert!(home.ok(&["status"]).stdout.contains("terms --accept"));
    let (code, doc) = home.json(&["compliance-check"]);
    assert_eq!(code, 1, "{doc:#}");
    let terms = finding(&doc, "terms-current");
    assert_eq!(terms["passed"], false);
    assert!(
        terms["message"]
            .as_str()
            .unwrap()
            .contains("terms --accept"),
        "{terms}"
    );
}
