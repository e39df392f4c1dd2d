//! {{name}}: judges the facts the host gathered about this node, and
//! refuses jobs while one that matters fails.
//!
//! Every failed fact becomes a finding. A failed `consent-recorded`, a
//! failed `no-credentials-*` or a failed fact named in `plugin.blocking` is
//! critical and stops jobs; any other failure is a warning. Facts that pass
//! or could not be checked are not reported.
//!
//! The plugin's own values (`[roles.compliance.config]` in `bundle.toml`)
//! arrive as `plugin.<key>`, the node's settings as `section.key`: as a list
//! to `validate_config` before the plugin is activated, and one key at a
//! time through `settings::get` while it decides. Change the rules in
//! `blocks`, then add a case for each to `cases.toml`.

wit_bindgen::generate!({ world: "{{world}}", path: "wit" });

use claude_max_market::policy::settings;
use claude_max_market::policy::types::{Fact, FactStatus, Job};
use exports::claude_max_market::policy::compliance::{
    Finding, Guest as Compliance, Severity, Verdict,
};
use exports::claude_max_market::policy::config_check::Guest as ConfigCheck;

/// More facts whose failure stops jobs, comma-separated, e.g.
/// "audit-chain,terms-current".
const BLOCKING: &str = "plugin.blocking";

/// `plugin.blocking` as a list of fact names; empty when it is unset. A name
/// that cannot be a fact's is refused, since it would never match and the
/// fact the owner meant would not block.
fn extra_blocking(raw: Option<&str>) -> Result<Vec<String>, String> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = raw.split(',').map(|name| name.trim().to_string()).collect();
    let is_fact_name = |name: &String| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !names.iter().all(is_fact_name) {
        return Err(format!(
            "{BLOCKING}: expected comma-separated fact names such as \
             'audit-chain,terms-current', got '{raw}'"
        ));
    }
    Ok(names)
}

/// Whether a failure of this fact stops jobs. Running without the owner's
/// consent, or with a credential where it could leak, always does.
fn blocks(fact: &Fact, extra: &[String]) -> bool {
    fact.name == "consent-recorded"
        || fact.name.starts_with("no-credentials")
        || extra.contains(&fact.name)
}

/// The finding for one failed fact.
fn finding(fact: &Fact, extra: &[String]) -> Finding {
    let (severity, effect) = if blocks(fact, extra) {
        (Severity::Critical, "jobs will not run until it passes")
    } else {
        (Severity::Warning, "jobs may still run")
    };
    let seen = if fact.value.is_empty() {
        String::new()
    } else {
        format!(" ({})", fact.value)
    };
    Finding {
        id: fact.name.clone(),
        severity,
        passed: false,
        message: format!("{} failed{seen}; {effect}", fact.name),
    }
}

fn judge_facts(facts: &[Fact], extra: &[String]) -> Vec<Finding> {
    facts
        .iter()
        .filter(|fact| fact.status == FactStatus::Failed)
        .map(|fact| finding(fact, extra))
        .collect()
}

fn judge_job(facts: &[Fact], extra: &[String]) -> Verdict {
    let failed: Vec<&str> = facts
        .iter()
        .filter(|fact| fact.status == FactStatus::Failed && blocks(fact, extra))
        .map(|fact| fact.name.as_str())
        .collect();
    if failed.is_empty() {
        Verdict::Allow
    } else {
        Verdict::Deny(format!(
            "jobs may not run while {} fails; see `claude-max-market compliance-check`",
            failed.join(", ")
        ))
    }
}

/// `plugin.blocking` as configured. The host only activates a plugin whose
/// configuration validated, so an error should not happen here.
fn current_extra() -> Result<Vec<String>, String> {
    extra_blocking(settings::get(BLOCKING).as_deref())
}

struct Policy;

impl ConfigCheck for Policy {
    fn validate_config(config: Vec<(String, String)>) -> Result<(), Vec<String>> {
        let raw = config
            .iter()
            .find(|(key, _)| key == BLOCKING)
            .map(|(_, value)| value.as_str());
        extra_blocking(raw)
            .map(|_| ())
            .map_err(|problem| vec![problem])
    }
}

impl Compliance for Policy {
    fn findings(facts: Vec<Fact>) -> Vec<Finding> {
        match current_extra() {
            Ok(extra) => judge_facts(&facts, &extra),
            // Reported as a failed critical finding, so it stops jobs
            // instead of being guessed around.
            Err(problem) => vec![Finding {
                id: "configuration".into(),
                severity: Severity::Critical,
                passed: false,
                message: problem,
            }],
        }
    }

    fn check_job(_job: Job, facts: Vec<Fact>) -> Verdict {
        match current_extra() {
            Ok(extra) => judge_job(&facts, &extra),
            Err(problem) => Verdict::Deny(problem),
        }
    }
}

export!(Policy);
