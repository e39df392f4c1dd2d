//! Unit tests for the compliance rules, run natively with `cargo test`.

use super::*;

fn fact(name: &str, status: FactStatus, value: &str) -> Fact {
    Fact {
        name: name.into(),
        value: value.into(),
        status,
    }
}

fn job(source: JobSource, credential: CredentialKind) -> Job {
    Job {
        id: "j1".into(),
        requester: "local".into(),
        model: "claude-sonnet-4-5".into(),
        max_tokens: 1000,
        prompt_bytes: 100,
        prompt_sha256: String::new(),
        image: "claude-runner".into(),
        source,
        credential,
        pre_approved: false,
        labels: Vec::new(),
    }
}

fn local_job() -> Job {
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
    assert!(matches!(judge_job(&local_job(), &findings), Verdict::Allow));
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
    assert!(matches!(judge_job(&local_job(), &warning), Verdict::Allow));
    let critical = judge_facts(&[fact("audit-chain", FactStatus::Failed, "")], 90);
    let Verdict::Deny(reason) = judge_job(&local_job(), &critical) else {
        panic!("expected deny");
    };
    assert!(reason.starts_with("compliance check 'audit-chain' failed"));
}

#[test]
fn market_jobs_may_not_use_a_subscription() {
    let market = job(JobSource::Market, CredentialKind::Subscription);
    assert!(matches!(judge_job(&market, &[]), Verdict::Deny(r) if r.starts_with("subscription")));
    let paid = job(JobSource::Market, CredentialKind::ApiKey);
    assert!(matches!(judge_job(&paid, &[]), Verdict::Allow));
}

#[test]
fn rotation_setting_must_be_a_whole_number() {
    assert_eq!(rotation_days(|_| None), Ok(DEFAULT_KEY_ROTATION_DAYS));
    assert_eq!(
        rotation_days(|_| Some("abc".into())),
        Err(vec![
            "security.keyRotationDays: expected a whole number, got 'abc'".to_string()
        ])
    );
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
            let all = judge_job(&local_job(), &judge_facts(&facts, 90));
            let some = judge_job(&local_job(), &critical_failures(&facts));
            assert_eq!(format!("{all:?}"), format!("{some:?}"), "{facts:?}");
        }
    }
}
