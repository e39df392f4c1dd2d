//! `execute`: describe a job, run it through the four-role pipeline, and
//! either report the decision (`--dry-run`) or admit it.
//!
//! Admission is one IMMEDIATE transaction in the store: the usage snapshot,
//! the pipeline's decision, the reservation and the audit row, so parallel
//! invocations can never together exceed a limit.

use std::path::PathBuf;

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::policy::{
    ConfiguredLimits, CredentialKind, DecisionInput, Fact, Job, JobSource, MarketContext, Outcome,
    PipelineDecision, Usage,
};
use crate::store::{Admission, DecisionRecord, NewJob, UsageSnapshot, Verdict};

use super::limits::today;
use super::{Context, OpsError, facts, policy, process};

/// Where the prompt comes from.
#[derive(Debug, Clone)]
pub enum PromptSource {
    Text(String),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    pub prompt: PromptSource,
    /// Defaults to `api.defaultModel`.
    pub model: Option<String>,
    /// Defaults to `limits.maxTokensPerTask`.
    pub max_tokens: Option<u32>,
    /// Ask approval to skip the interactive prompt.
    pub approve_all: bool,
}

/// The job as the policies saw it (the prompt itself is never stored).
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: String,
    pub model: String,
    pub max_tokens: u32,
    pub prompt_bytes: u64,
    pub prompt_sha256: String,
    pub image: String,
}

/// What `execute --dry-run` reports.
#[derive(Debug, Serialize)]
pub struct DryRun {
    pub job: JobSummary,
    pub usage: UsageSnapshot,
    #[serde(flatten)]
    pub pipeline: PipelineDecision,
}

/// An admitted job: usage is reserved and the admission is on the audit log.
#[derive(Debug, Serialize)]
pub struct Admitted {
    pub job: JobSummary,
    pub granted_tokens: u32,
    pub timeout_secs: u32,
    pub usage_before: UsageSnapshot,
}

/// Runs the pipeline without admitting anything; the decision is audited.
pub fn dry_run(ctx: &mut Context, opts: &ExecuteOptions) -> Result<DryRun, OpsError> {
    let (job, new_job) = describe(ctx, opts)?;
    let engine = ctx.engine()?;
    let mut pipeline = policy::pipeline(ctx, &engine)?;
    let facts = facts::gather(ctx)?;
    let usage = ctx.store.usage_snapshot(today())?;
    let decision = pipeline.decide(&decision_input(&job, &usage, limits_of(ctx), facts));
    ctx.store
        .record_verdict(&new_job, "job.dry-run", &verdict(&decision))?;
    Ok(DryRun {
        job: summary(&job),
        usage,
        pipeline: decision,
    })
}

/// Admits the job if consent is in place and the pipeline allows it. A deny
/// or an unanswered ask is an `OpsError::Denied` with the roles' reasons.
pub fn admit(ctx: &mut Context, opts: &ExecuteOptions) -> Result<Admitted, OpsError> {
    require_consent(ctx)?;
    let (job, new_job) = describe(ctx, opts)?;
    let engine = ctx.engine()?;
    let mut pipeline = policy::pipeline(ctx, &engine)?;
    let facts = facts::gather(ctx)?;
    let limits = limits_of(ctx);
    let mut decision = None;
    // The pipeline runs inside the store's IMMEDIATE transaction, on the
    // usage snapshot taken under the same lock.
    let (verdict, admission) = ctx.store.admit(&new_job, today(), |snapshot| {
        let d = pipeline.decide(&decision_input(&job, snapshot, limits, facts));
        let v = verdict(&d);
        decision = Some(d);
        v
    })?;
    match admission {
        Admission::Admitted { snapshot, .. } => Ok(Admitted {
            job: summary(&job),
            granted_tokens: verdict.granted_tokens,
            timeout_secs: verdict.timeout_secs,
            usage_before: snapshot,
        }),
        Admission::Refused { .. } => Err(OpsError::Denied {
            reason: decision.as_ref().map_or_else(String::new, reasons),
        }),
    }
}

fn require_consent(ctx: &Context) -> Result<(), OpsError> {
    let consent = ctx.store.consent_state()?;
    super::terms::require_current(&consent)?;
    if !(consent.opted_in && consent.claude_jobs) {
        return Err(OpsError::NotOptedIn);
    }
    Ok(())
}

/// Builds the WIT job from the options, reading the prompt only to size and
/// hash it.
fn describe(ctx: &Context, opts: &ExecuteOptions) -> Result<(Job, NewJob), OpsError> {
    let prompt = read_prompt(&opts.prompt)?;
    let job = Job {
        id: new_job_id(),
        requester: "local".into(),
        model: opts
            .model
            .clone()
            .unwrap_or_else(|| ctx.settings.api.default_model.clone()),
        max_tokens: opts
            .max_tokens
            .unwrap_or(ctx.settings.limits.max_tokens_per_task),
        prompt_bytes: prompt.len() as u64,
        prompt_sha256: hex::encode(Sha256::digest(&prompt)),
        image: ctx.settings.docker.image.clone(),
        source: JobSource::Local,
        credential: CredentialKind::ApiKey,
        pre_approved: opts.approve_all,
        labels: Vec::new(),
    };
    let new_job = NewJob {
        id: job.id.clone(),
        model: job.model.clone(),
        max_tokens: job.max_tokens,
        prompt_bytes: job.prompt_bytes,
        prompt_sha256: job.prompt_sha256.clone(),
        source: "local".into(),
        requester: job.requester.clone(),
        host: Some(process::current()),
    };
    Ok((job, new_job))
}

fn read_prompt(source: &PromptSource) -> Result<Vec<u8>, OpsError> {
    let prompt = match source {
        PromptSource::Text(text) => text.clone().into_bytes(),
        PromptSource::File(path) => std::fs::read(path).map_err(|source| OpsError::Read {
            path: path.clone(),
            source,
        })?,
    };
    if prompt.is_empty() {
        return Err(OpsError::InvalidInput {
            what: "the prompt is empty; pass --prompt TEXT or --file PATH with some content".into(),
        });
    }
    Ok(prompt)
}

fn new_job_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the roles are told about a local job, given usage as of the decision.
fn decision_input(
    job: &Job,
    usage: &UsageSnapshot,
    limits: ConfiguredLimits,
    facts: Vec<Fact>,
) -> DecisionInput {
    DecisionInput {
        job: job.clone(),
        usage: usage_of(usage, limits),
        market: local_market(),
        facts,
    }
}

fn limits_of(ctx: &Context) -> ConfiguredLimits {
    let l = &ctx.settings.limits;
    ConfiguredLimits {
        daily_tasks: l.daily_tasks,
        daily_tokens: l.daily_tokens,
        max_tokens_per_task: l.max_tokens_per_task,
        concurrent_jobs: l.concurrent_jobs,
        timeout_secs: l.timeout_secs,
    }
}

fn usage_of(snapshot: &UsageSnapshot, limits: ConfiguredLimits) -> Usage {
    Usage {
        tasks_today: snapshot.tasks_today,
        tokens_today: snapshot.tokens_today,
        running_jobs: snapshot.running_jobs,
        limits,
    }
}

/// A local job has no counterpart: pricing quotes what it would cost on the
/// market, at neutral reputation and no load.
fn local_market() -> MarketContext {
    MarketContext {
        slots: 0,
        load: 0.0,
        reputation: 0.5,
        offered_price: None,
        asked_price: None,
    }
}

fn summary(job: &Job) -> JobSummary {
    JobSummary {
        id: job.id.clone(),
        model: job.model.clone(),
        max_tokens: job.max_tokens,
        prompt_bytes: job.prompt_bytes,
        prompt_sha256: job.prompt_sha256.clone(),
        image: job.image.clone(),
    }
}

/// The pipeline's decision in the store's terms. An `ask` is not an admission:
/// only the CLI's interactive prompt can turn it into one.
fn verdict(decision: &PipelineDecision) -> Verdict {
    let grant = decision.grant();
    Verdict {
        outcome: decision.decision,
        granted_tokens: grant.map_or(0, |g| g.max_tokens),
        timeout_secs: grant.map_or(0, |g| g.timeout_secs),
        decisions: decision
            .roles
            .iter()
            .map(|r| DecisionRecord {
                role: r.role.as_str().into(),
                plugin: r.plugin.name.clone(),
                digest: r.plugin.digest.clone(),
                origin: r.plugin.origin.as_str().into(),
                outcome: r.outcome,
                reason: r.reason.clone(),
                error_class: r.error_class.map(|c| c.to_string()),
                elapsed_us: r.elapsed_us,
            })
            .collect(),
    }
}

/// The reasons of every role that did not allow, for the error message.
fn reasons(decision: &PipelineDecision) -> String {
    decision
        .roles
        .iter()
        .filter(|r| r.outcome != Outcome::Allow)
        .map(|r| {
            format!(
                "{}: {}",
                r.role,
                r.reason.as_deref().unwrap_or("no reason given")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
