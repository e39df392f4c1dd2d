//! `policy test SUBJECT --replay [--since DATE]`: what a candidate plugin
//! or bundle would have decided on this node's recorded decisions, before
//! it is activated ("what would this bundle have said about last week's
//! jobs"). Every admission and dry run records what the roles were asked;
//! each is asked again of the candidate's roles, under the node's current
//! settings and rules, and every answer that differs is reported.
//!
//! A decision depends only on its arguments and the host's imports: WASI
//! randomness is fixed by the plugin's digest, its clocks are frozen and the
//! `clock` import answers the decision's recorded time, so the recorded
//! plugin, replayed, answers as it did (barring a change of settings since).

use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::policy::{
    DecisionInput, Isolation, Outcome, Pipeline, PluginMeta, PluginOrigin, Role, Slot,
};
use crate::wit::WIT_PACKAGE;

use super::policy_test::load_subject;
use super::{Context, OpsError};

/// The audit rows that carry a decision and what it was asked.
const DECISION_KINDS: [&str; 4] = ["job.admitted", "job.refused", "job.asked", "job.dry-run"];

/// One role's answer, as recorded or as the candidate gives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A recorded answer the candidate does not give.
#[derive(Debug, Serialize)]
pub struct Difference {
    pub job_id: String,
    /// When it was decided (the audit row's time).
    pub at: String,
    pub role: Role,
    pub recorded: Answer,
    pub candidate: Answer,
}

#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub subject: String,
    /// Recorded decisions asked again.
    pub replayed: usize,
    /// Recorded decisions that could not be: made before inputs were
    /// recorded, or under another WIT package.
    pub skipped: usize,
    pub differences: Vec<Difference>,
}

pub fn replay(
    ctx: &Context,
    subject: &Path,
    since: Option<OffsetDateTime>,
) -> Result<ReplayReport, OpsError> {
    let engine = ctx.engine_with(Isolation::Fresh)?;
    let candidate = load_subject(ctx, &engine, subject)?;
    let roles: Vec<Role> = candidate.plugins.iter().map(|p| p.role()).collect();
    let slots = Role::ALL
        .into_iter()
        .map(|role| {
            match candidate.plugins.iter().find(|p| p.role() == role) {
                Some(plugin) => Slot::ready(plugin.clone()),
                // Not the candidate's: never compared, so never asked for real.
                None => Slot::missing(role, unused(), "not replayed".into()),
            }
        })
        .collect();
    let mut pipeline = Pipeline::new(engine.clone(), slots, ctx.settings.flatten())
        .with_node_rules(super::policy::node_rules(&ctx.settings.compliance));
    let mut report = ReplayReport {
        subject: subject.display().to_string(),
        replayed: 0,
        skipped: 0,
        differences: Vec::new(),
    };
    for entry in ctx.store.audit_entries(since)? {
        if !DECISION_KINDS.contains(&entry.kind.as_str()) {
            continue;
        }
        let Some(input) = recorded_input(&entry.details) else {
            report.skipped += 1;
            continue;
        };
        let decision = pipeline.decide(input);
        report.replayed += 1;
        for role in &roles {
            let Some(recorded) = recorded_answer(&entry.details, *role) else {
                continue;
            };
            let Some(now) = decision.roles.iter().find(|r| r.role == *role) else {
                continue;
            };
            let candidate = Answer {
                outcome: now.outcome,
                reason: now.reason.clone(),
            };
            if candidate != recorded {
                report.differences.push(Difference {
                    job_id: entry.subject.clone(),
                    at: entry.ts.clone(),
                    role: *role,
                    recorded,
                    candidate,
                });
            }
        }
    }
    Ok(report)
}

fn unused() -> PluginMeta {
    PluginMeta {
        name: "unused".into(),
        digest: String::new(),
        origin: PluginOrigin::Default,
        bundle: None,
    }
}

/// The input a decision row recorded, if it was recorded under this WIT.
fn recorded_input(details: &Value) -> Option<DecisionInput> {
    let replay = details.pointer("/verdict/replay")?;
    if replay.get("wit")?.as_str()? != WIT_PACKAGE {
        return None;
    }
    serde_json::from_value(replay.get("input")?.clone()).ok()
}

fn recorded_answer(details: &Value, role: Role) -> Option<Answer> {
    let decision = details
        .pointer("/verdict/decisions")?
        .as_array()?
        .iter()
        .find(|d| d.get("role").and_then(Value::as_str) == Some(role.as_str()))?;
    Some(Answer {
        outcome: serde_json::from_value(decision.get("outcome")?.clone()).ok()?,
        reason: decision
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}
