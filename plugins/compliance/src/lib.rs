//! The default compliance policy: judges the facts the host gathered about
//! this node, and refuses jobs while a critical one fails.
//!
//! Each fact the policy knows becomes one finding, whose message says what to
//! do when it fails. A fact the host could not check becomes an informational
//! finding that passes: it is reported, but does not stop jobs. Facts this
//! policy does not know are passed through as informational findings, so a
//! newer host can add facts without breaking an older plugin. A market job
//! paid with a Claude subscription is refused outright, whatever the facts;
//! so is a market job whose image is not on `compliance.allowedImages` (and a
//! local one too with `compliance.restrictLocalImages`), and a job asking for
//! server-side tools that reach the internet while `compliance.allowEgress`
//! is off.

cmm_policy_sdk::bindings!("compliance-policy");

use cmm_policy_sdk::{Cached, Reader, Settings};

use claude_max_market::policy::settings;
use claude_max_market::policy::types::{CredentialKind, Fact, FactStatus, Image, Job, JobSource};
use exports::claude_max_market::policy::compliance::{
    Finding, Guest as Compliance, Severity, Verdict,
};
use exports::claude_max_market::policy::config_check::Guest as ConfigCheck;

const DEFAULT_KEY_ROTATION_DAYS: u64 = 90;
/// The built-in job image's repository: the one image every node has.
const DEFAULT_ALLOWED_IMAGES: &str = "claude-max-market-job";

/// The settings this policy reads, with the documented defaults filled in.
#[derive(Debug, PartialEq)]
struct Rules {
    rotation_days: u64,
    /// Image ids (`sha256:…`) or repositories, optionally with a tag.
    allowed_images: Vec<String>,
    restrict_local_images: bool,
    allow_egress: bool,
}

impl Settings for Rules {
    fn read(r: &mut Reader<'_>) -> Rules {
        Rules {
            restrict_local_images: r.flag("compliance.restrictLocalImages", false),
            allow_egress: r.flag("compliance.allowEgress", false),
            rotation_days: r.count("security.keyRotationDays", DEFAULT_KEY_ROTATION_DAYS),
            // Empty is a list: no image is allowed.
            allowed_images: r.items("compliance.allowedImages", DEFAULT_ALLOWED_IMAGES),
        }
    }
}

impl Rules {
    /// Whether the job's image is on the allow-list: by id, by repository,
    /// or by repository and tag.
    fn allows_image(&self, image: &Image) -> bool {
        let (repository, tag) = split_reference(&image.reference);
        self.allowed_images.iter().any(|entry| {
            if entry.starts_with("sha256:") {
                return !image.digest.is_empty() && *entry == image.digest;
            }
            match split_reference(entry) {
                (name, None) => name == repository,
                (name, Some(want)) => name == repository && tag == Some(want),
            }
        })
    }
}

/// A reference's repository and tag; a pinned digest is not a tag.
fn split_reference(reference: &str) -> (&str, Option<&str>) {
    let name_tag = reference.split('@').next().unwrap_or(reference);
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    }
}

/// How to judge one known fact: what it is about, how much a failure
/// matters, and what the owner should do when it fails.
struct Rule {
    fact: &'static str,
    severity: Severity,
    subject: &'static str,
    fix: &'static str,
}

/// Every fact judged by its status alone. `key-age` is missing because it is
/// judged against a setting; see `key_age`.
const RULES: [Rule; 11] = [
    Rule {
        fact: "consent-recorded",
        severity: Severity::Critical,
        subject: "consent to run Claude jobs",
        fix: "run `claude-max-market opt-in --claude-jobs`",
    },
    Rule {
        fact: "terms-current",
        severity: Severity::Critical,
        subject: "acceptance of the current terms",
        fix: "run `claude-max-market terms --accept`",
    },
    Rule {
        fact: "no-credentials-in-config",
        severity: Severity::Critical,
        subject: "no credentials in the configuration",
        fix: "move the credential out of config.toml (an API key belongs in the file \
              named by security.apiKeyFile), then rotate it",
    },
    Rule {
        fact: "no-credentials-in-logs",
        severity: Severity::Critical,
        subject: "no credentials in the job logs",
        fix: "rotate the leaked credential now, then delete the job log that holds it",
    },
    Rule {
        fact: "no-credentials-in-audit",
        severity: Severity::Critical,
        subject: "no credentials in the audit log",
        fix: "rotate the leaked credential now (do not delete the audit rows: that \
              would break the audit chain)",
    },
    Rule {
        fact: "no-credentials-in-database",
        severity: Severity::Critical,
        subject: "no credentials in the state database",
        fix: "rotate the leaked credential now; `claude-max-market audit` shows where it \
              was recorded",
    },
    Rule {
        fact: "audit-chain",
        severity: Severity::Critical,
        subject: "integrity of the audit log",
        fix: "run `claude-max-market audit --verify` to find the altered row",
    },
    Rule {
        fact: "subscription-for-others",
        severity: Severity::Critical,
        subject: "subscription credentials kept for the owner's own use",
        fix: "pay for market jobs with an API key; a Claude subscription is for the owner only",
    },
    Rule {
        fact: "docker-rootless",
        severity: Severity::Warning,
        subject: "Docker running rootless",
        fix: "switch to rootless Docker so a container escape does not reach root",
    },
    Rule {
        fact: "job-hardening",
        severity: Severity::Warning,
        subject: "hardening of the last job containers",
        fix: "report this: job containers are created hardened, so a weaker record means \
              the host or its database was changed",
    },
    Rule {
        fact: "policy-signatures",
        severity: Severity::Warning,
        subject: "signed policies",
        fix: "install policies from signed bundles, or `policy reset ROLE` to the built-in \
              default",
    },
];

fn finding(id: &str, severity: Severity, passed: bool, message: String) -> Finding {
    Finding {
        id: id.to_string(),
        severity,
        passed,
        message,
    }
}

/// What the host saw, as a suffix for a message; nothing when it said nothing.
fn seen(fact: &Fact) -> String {
    if fact.value.is_empty() {
        String::new()
    } else {
        format!(" ({})", fact.value)
    }
}

fn judge_by_rule(rule: &Rule, fact: &Fact) -> Finding {
    let (subject, seen) = (rule.subject, seen(fact));
    let (passed, message) = match fact.status {
        FactStatus::Ok => (true, format!("{subject}: ok{seen}")),
        FactStatus::Failed => (false, format!("{subject}: failed{seen}; {}", rule.fix)),
        FactStatus::Unknown => return could_not_check(&fact.name, subject, &seen),
    };
    finding(&fact.name, rule.severity, passed, message)
}

fn could_not_check(id: &str, subject: &str, seen: &str) -> Finding {
    finding(
        id,
        Severity::Info,
        true,
        format!("{subject}: could not be checked{seen}"),
    )
}

/// The node key's age, in whole days, against `security.keyRotationDays`.
/// The age is judged here rather than by the host's status, so the setting
/// this plugin was validated with is the one that counts.
fn key_age(fact: &Fact, rotation_days: u64) -> Finding {
    let id = fact.name.as_str();
    if fact.status == FactStatus::Unknown {
        return finding(id, Severity::Info, true, "no node key yet".into());
    }
    let Ok(days) = fact.value.trim().parse::<u64>() else {
        return could_not_check(id, "node key age", &seen(fact));
    };
    if days > rotation_days {
        let message = format!(
            "the node key is {days} days old, past security.keyRotationDays ({rotation_days}); \
             rotate the node key, or raise security.keyRotationDays"
        );
        return finding(id, Severity::Warning, false, message);
    }
    let message = format!("the node key is {days} days old (rotate after {rotation_days})");
    finding(id, Severity::Warning, true, message)
}

fn unknown_fact(fact: &Fact) -> Finding {
    let status = match fact.status {
        FactStatus::Ok => "ok",
        FactStatus::Failed => "failed",
        FactStatus::Unknown => "not checked",
    };
    let message = format!(
        "{}: {status}{} (not judged by this policy)",
        fact.name,
        seen(fact)
    );
    finding(
        &fact.name,
        Severity::Info,
        fact.status != FactStatus::Failed,
        message,
    )
}

fn judge_fact(fact: &Fact, rotation_days: u64) -> Finding {
    match RULES.iter().find(|rule| rule.fact == fact.name) {
        Some(rule) => judge_by_rule(rule, fact),
        None if fact.name == "key-age" => key_age(fact, rotation_days),
        None => unknown_fact(fact),
    }
}

/// One finding per fact, in the order the host gave them.
fn judge_facts(facts: &[Fact], rotation_days: u64) -> Vec<Finding> {
    facts
        .iter()
        .map(|fact| judge_fact(fact, rotation_days))
        .collect()
}

/// The decision for one job, given the findings for this node.
fn judge_job(job: &impl JobFacts, rules: &Rules, findings: &[Finding]) -> Verdict {
    let market = job.source() == JobSource::Market;
    if market && job.credential() == CredentialKind::Subscription {
        return Verdict::Deny(
            "subscription credentials are for the owner's own use; market jobs must be paid \
             with an API key"
                .into(),
        );
    }
    if job.egress() && !rules.allow_egress {
        return Verdict::Deny(
            "the job asks for server-side tools that reach the internet (web search, web \
             fetch, code execution, MCP servers) and compliance.allowEgress is off; run it \
             without them, or allow them with `claude-max-market config --set \
             compliance.allowEgress=true`"
                .into(),
        );
    }
    if let Some(image) = (market || rules.restrict_local_images)
        .then(|| job.image())
        .filter(|image| !rules.allows_image(image))
    {
        let listed = rules.allowed_images.join(",");
        let id = if image.digest.is_empty() {
            "id unknown"
        } else {
            &image.digest
        };
        return Verdict::Deny(format!(
            "image {} ({id}) is not on compliance.allowedImages ({listed}); add its repository \
             or id with `claude-max-market config --set compliance.allowedImages={listed},{}`",
            image.reference,
            split_reference(&image.reference).0
        ));
    }
    let blocking = findings
        .iter()
        .find(|f| !f.passed && f.severity == Severity::Critical);
    match blocking {
        Some(f) => Verdict::Deny(format!("compliance check '{}' failed: {}", f.id, f.message)),
        None => Verdict::Allow,
    }
}

/// Only the findings that can stop a job: failed facts under a critical
/// rule. `check-job` runs on every decision, so it does not build messages
/// for facts that pass.
fn critical_failures(facts: &[Fact]) -> Vec<Finding> {
    facts
        .iter()
        .filter(|fact| fact.status == FactStatus::Failed)
        .filter_map(|fact| {
            RULES
                .iter()
                .find(|rule| rule.fact == fact.name && rule.severity == Severity::Critical)
                .map(|rule| judge_by_rule(rule, fact))
        })
        .collect()
}

static CONFIGURED: Cached<Rules> = Cached::new();

/// Bad settings become a failed critical finding, so they stop jobs instead
/// of being guessed around.
fn configuration_finding(problems: &[String]) -> Finding {
    finding(
        "configuration",
        Severity::Critical,
        false,
        format!("bad configuration: {}", problems.join("; ")),
    )
}

/// Bad settings stop every job instead of being guessed around.
fn configuration_denial(problems: &[String]) -> Verdict {
    let f = configuration_finding(problems);
    Verdict::Deny(format!("compliance check '{}' failed: {}", f.id, f.message))
}

struct CompliancePolicy;

impl ConfigCheck for CompliancePolicy {
    fn validate_config(config: Vec<(String, String)>) -> Result<(), Vec<String>> {
        Rules::validate(&config)
    }
}

impl Compliance for CompliancePolicy {
    fn findings(facts: Vec<Fact>) -> Vec<Finding> {
        match CONFIGURED.get(settings::get) {
            Ok(rules) => judge_facts(&facts, rules.rotation_days),
            Err(problems) => vec![configuration_finding(problems)],
        }
    }

    fn check_job(job: &Job, facts: Vec<Fact>) -> Verdict {
        match CONFIGURED.get(settings::get) {
            Ok(rules) => judge_job(job, rules, &critical_failures(&facts)),
            Err(problems) => configuration_denial(problems),
        }
    }
}

export!(CompliancePolicy);

#[cfg(test)]
mod tests;
