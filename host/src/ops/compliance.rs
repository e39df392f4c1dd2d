//! `compliance-check`: the host gathers every fact it can about this node
//! (the full set, including the scans too slow for each job), the active
//! compliance plugin judges them, and the report scores the result. The
//! host never judges a fact itself.

use serde::Serialize;

use crate::policy::{ComplianceFinding, Fact, FactStatus, PluginMeta, Role, Severity};
use crate::runner::Docker;

use super::context::runtime;
use super::{Context, OpsError, facts, policy};

/// A fact as reported, with its status as a word.
#[derive(Debug, Clone, Serialize)]
pub struct FactView {
    pub name: String,
    pub value: String,
    /// "ok", "failed" or "unknown".
    pub status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComplianceReport {
    /// The plugin that judged.
    pub plugin: PluginMeta,
    pub findings: Vec<ComplianceFinding>,
    /// 0 to 100: the weighted share of findings that passed.
    pub score: u32,
    /// Failed critical findings; any stops every job.
    pub critical_failures: usize,
    pub facts: Vec<FactView>,
}

/// Weights for the score: a critical finding counts most, information not
/// at all (it cannot fail in a way that matters).
fn weight(severity: Severity) -> u32 {
    match severity {
        Severity::Critical => 10,
        Severity::Warning => 3,
        Severity::Info => 0,
    }
}

pub fn check(ctx: &Context) -> Result<ComplianceReport, OpsError> {
    let engine_version = runtime()?.block_on(async {
        let docker = Docker::connect().await?;
        docker.version().await
    });
    let facts = facts::gather_full(ctx, engine_version.as_ref().map_err(|e| e.to_string()))?;
    let engine = ctx.engine()?;
    let mut pipeline = policy::pipeline(ctx, &engine)?;
    let plugin = pipeline
        .slots()
        .iter()
        .find(|s| s.role() == Role::Compliance)
        .map(|s| s.meta().clone())
        .expect("a pipeline has a slot per role");
    let findings = pipeline.findings(&facts).map_err(OpsError::PluginRefused)?;
    let (total, passed) = findings.iter().fold((0, 0), |(t, p), f| {
        let w = weight(f.severity);
        (t + w, if f.passed { p + w } else { p })
    });
    Ok(ComplianceReport {
        plugin,
        score: (passed * 100).checked_div(total).unwrap_or(100),
        critical_failures: findings
            .iter()
            .filter(|f| !f.passed && f.severity == Severity::Critical)
            .count(),
        findings,
        facts: facts.iter().map(view).collect(),
    })
}

fn view(fact: &Fact) -> FactView {
    FactView {
        name: fact.name.clone(),
        value: fact.value.clone(),
        status: match fact.status {
            FactStatus::Ok => "ok",
            FactStatus::Failed => "failed",
            FactStatus::Unknown => "unknown",
        },
    }
}
