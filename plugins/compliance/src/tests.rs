//! Unit tests for the compliance rules, run natively with `cargo test`.

use super::*;

fn fact(name: &str, status: FactStatus, value: &str) -> Fact {
    Fact {
        name: name.into(),
        value: value.into(),
        status,
    }
}

fn job(source: JobSource, credential: CredentialKind) -> JobRecord {
    use claude_max_market::policy::types::Budget;
    cmm_policy_sdk::job! { source: source, credential: credential }
}

fn rules(pairs: &[(&str, &str)]) -> Rules {
    Rules::from_pairs(&cmm_policy_sdk::testing::pairs(pairs)).expect("valid settings")
}

fn defaults() -> Rules {
    rules(&[])
}

fn local_job() -> JobRecord {
    job(JobSource::Local, CredentialKind::Subscription)
}

#[test]
fn every_fact_gets_one_finding_and_failures_say_what_to_do() {
    let facts = [
        fact("consent-recorded", FactStatus::Failed, ""),
        fact("terms-current", FactStatus::Failed, "accepted 3f2a"),
        fact("audit-chain", FactStatus::Failed, "row 17"),
        fact("docker-rootless", FactStatus::Ok, "rootless"),
    ];
    let findings = judge_facts(&facts, 90);
    assert_eq!(findings.len(), 4);
    assert!(findings[0].message.ends_with("opt-in --claude-jobs`"));
    assert!(
        findings[1]
            .message
            .contains("(accepted 3f2a); run `claude-max-market terms --accept`")
    );
    assert!(findings[2].message.contains("audit --verify"));
    assert!(findings[3].passed && findings[3].severity == Severity::Warning);
}

#[test]
fn unchecked_and_unknown_facts_are_informational() {
    let facts = [
        fact("consent-recorded", FactStatus::Unknown, "no database"),
        fact("gpu-present", FactStatus::Failed, "none"),
    ];
    let findings = judge_facts(&facts, 90);
    assert!(findings.iter().all(|f| f.severity == Severity::Info));
    assert!(findings[0].passed && findings[0].message.contains("could not be checked"));
    assert!(!findings[1].passed && findings[1].id == "gpu-present");
    assert!(matches!(
        judge_job(&local_job(), &defaults(), &findings),
        Verdict::Allow
    ));
}

#[test]
fn key_age_is_judged_against_the_rotation_setting() {
    let judge = |status, value| key_age(&fact("key-age", status, value), 90);
    assert_eq!(judge(FactStatus::Unknown, "").message, "no node key yet");
    assert!(judge(FactStatus::Ok, "90").passed);
    let old = judge(FactStatus::Ok, "91");
    assert!(!old.passed && old.severity == Severity::Warning);
    assert!(old.message.contains("security.keyRotationDays (90)"));
    assert_eq!(judge(FactStatus::Ok, "soon").severity, Severity::Info);
}

#[test]
fn a_failed_critical_finding_blocks_jobs_and_a_warning_does_not() {
    let warning = judge_facts(&[fact("docker-rootless", FactStatus::Failed, "")], 90);
    assert!(matches!(
        judge_job(&local_job(), &defaults(), &warning),
        Verdict::Allow
    ));
    let critical = judge_facts(&[fact("audit-chain", FactStatus::Failed, "")], 90);
    let Verdict::Deny(reason) = judge_job(&local_job(), &defaults(), &critical) else {
        panic!("expected deny");
    };
    assert!(reason.starts_with("compliance check 'audit-chain' failed"));
}

#[test]
fn market_jobs_may_not_use_a_subscription() {
    let market = job(JobSource::Market, CredentialKind::Subscription);
    assert!(
        matches!(judge_job(&market, &defaults(), &[]), Verdict::Deny(r) if r.starts_with("subscription"))
    );
    let paid = job(JobSource::Market, CredentialKind::ApiKey);
    assert!(matches!(judge_job(&paid, &defaults(), &[]), Verdict::Allow));
}

#[test]
fn settings_must_parse_and_every_problem_is_named() {
    assert_eq!(defaults().rotation_days, DEFAULT_KEY_ROTATION_DAYS);
    assert_eq!(defaults().allowed_images, ["claude-max-market-job"]);
    let problems = Rules::from_pairs(&cmm_policy_sdk::testing::pairs(&[
        ("security.keyRotationDays", "abc"),
        ("compliance.allowEgress", "yes"),
    ]))
    .unwrap_err();
    assert_eq!(
        problems,
        [
            "compliance.allowEgress: expected true or false, got 'yes'",
            "security.keyRotationDays: expected a whole number, got 'abc'"
        ]
    );
}

#[test]
fn market_jobs_run_only_listed_images() {
    let mut market = job(JobSource::Market, CredentialKind::ApiKey);
    assert!(matches!(
        judge_job(&market, &defaults(), &[]),
        Verdict::Allow
    ));
    market.image.reference = "python-agent:3".into();
    let Verdict::Deny(reason) = judge_job(&market, &defaults(), &[]) else {
        panic!("an unlisted image runs a market job");
    };
    assert!(reason.contains("python-agent:3"), "{reason}");
    assert!(reason.contains("compliance.allowedImages=claude-max-market-job,python-agent"));
    let by_repository = rules(&[("compliance.allowedImages", "python-agent")]);
    assert!(matches!(
        judge_job(&market, &by_repository, &[]),
        Verdict::Allow
    ));
    let other_tag = rules(&[("compliance.allowedImages", "python-agent:2")]);
    assert!(matches!(
        judge_job(&market, &other_tag, &[]),
        Verdict::Deny(_)
    ));
    let by_id = rules(&[("compliance.allowedImages", &market.image.digest.clone())]);
    assert!(matches!(judge_job(&market, &by_id, &[]), Verdict::Allow));
    market.image.digest.clear();
    assert!(matches!(judge_job(&market, &by_id, &[]), Verdict::Deny(_)));
}

#[test]
fn local_jobs_run_any_image_unless_restricted() {
    let mut local = job(JobSource::Local, CredentialKind::ApiKey);
    local.image.reference = "registry.example:5000/team/agent:1".into();
    assert!(matches!(
        judge_job(&local, &defaults(), &[]),
        Verdict::Allow
    ));
    let restricted = rules(&[("compliance.restrictLocalImages", "true")]);
    assert!(matches!(
        judge_job(&local, &restricted, &[]),
        Verdict::Deny(_)
    ));
    let listed = rules(&[
        ("compliance.restrictLocalImages", "true"),
        (
            "compliance.allowedImages",
            "registry.example:5000/team/agent",
        ),
    ]);
    assert!(matches!(judge_job(&local, &listed, &[]), Verdict::Allow));
}

#[test]
fn egress_needs_the_owner_to_allow_it() {
    let mut local = job(JobSource::Local, CredentialKind::ApiKey);
    local.egress = true;
    assert!(
        matches!(judge_job(&local, &defaults(), &[]), Verdict::Deny(r) if r.contains("compliance.allowEgress=true"))
    );
    let allowed = rules(&[("compliance.allowEgress", "true")]);
    assert!(matches!(judge_job(&local, &allowed, &[]), Verdict::Allow));
}

#[test]
fn critical_failures_decide_jobs_exactly_as_all_findings_do() {
    let statuses = [FactStatus::Ok, FactStatus::Failed, FactStatus::Unknown];
    let names = [
        "consent-recorded",
        "audit-chain",
        "docker-rootless",
        "key-age",
        "gpu-present",
    ];
    for (i, name) in names.iter().enumerate() {
        for status in statuses {
            let facts = [
                fact("terms-current", FactStatus::Ok, "accepted"),
                fact(name, status, "400"),
                fact(names[(i + 1) % names.len()], FactStatus::Failed, "400"),
            ];
            let all = judge_job(&local_job(), &defaults(), &judge_facts(&facts, 90));
            let some = judge_job(&local_job(), &defaults(), &critical_failures(&facts));
            assert_eq!(format!("{all:?}"), format!("{some:?}"), "{facts:?}");
        }
    }
}
