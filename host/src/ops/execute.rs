//! `execute`: describe a job, run it through the four-role pipeline, admit
//! it and run it in its container (or, with `--dry-run`, only report the
//! decision).
//!
//! Admission is one IMMEDIATE transaction in the store: the usage snapshot,
//! the pipeline's decision, the reservation and the audit row, so parallel
//! invocations can never together exceed a limit. Everything that can fail
//! without spending anything (no API key, no Docker, no image) is checked
//! before admission reserves usage.

use std::path::PathBuf;
use std::time::Duration;

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::policy::{
    ConfiguredLimits, CredentialKind, DecisionInput, Fact, Grant, Job, JobSource, MarketContext,
    Outcome, PipelineDecision, RoleDecision, Usage,
};
use crate::runner::{Docker, RunnerError, Stream};
use crate::store::{Admission, DecisionRecord, NewJob, UsageSnapshot, Verdict};

use super::context::runtime;
use super::job_run::{self, JobReport, RunPlan};
use super::limits::today;
use super::{Context, OpsError, facts, policy, process, reconcile};

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
    /// A wall-clock limit below the one limits grants.
    pub timeout_secs: Option<u32>,
}

/// What the owner is shown when approval asks.
#[derive(Debug, Clone, Serialize)]
pub struct AskDetails {
    pub job_id: String,
    pub model: String,
    pub max_tokens: u32,
    /// The first few hundred characters of the prompt.
    pub prompt_start: String,
    /// Whether the prompt goes on past `prompt_start`.
    pub prompt_truncated: bool,
    pub reason: String,
}

/// The owner's answer to an ask: `None` when nobody is there to answer.
pub type Confirm<'a> = &'a mut dyn FnMut(&AskDetails) -> Option<bool>;

/// Characters of the prompt shown when asking.
const PROMPT_PREVIEW_CHARS: usize = 300;

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
    /// The digest of the plugin each role ran, by role.
    pub policies: Vec<(String, String)>,
}

/// Runs the pipeline without admitting anything; the decision is audited.
pub fn dry_run(ctx: &mut Context, opts: &ExecuteOptions) -> Result<DryRun, OpsError> {
    let (job, new_job) = describe(ctx, opts, &read_prompt(&opts.prompt)?);
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
    let (job, new_job) = describe(ctx, opts, &read_prompt(&opts.prompt)?);
    match admit_with(ctx, &job, &new_job, false)? {
        (Admission::Admitted { snapshot, .. }, decision) => {
            Ok(admitted(&job, snapshot, &decision.roles, decision.grant()))
        }
        (Admission::Refused { .. }, decision) => Err(OpsError::Denied {
            reason: reasons(&decision),
        }),
    }
}

/// Describes, admits and runs a job to its end: the whole of `execute`.
/// `confirm` answers approval's ask; `watch` sees the job's output as it
/// arrives.
pub fn run(
    ctx: &mut Context,
    opts: &ExecuteOptions,
    confirm: Confirm<'_>,
    watch: &mut dyn FnMut(Stream, &[u8]),
) -> Result<JobReport, OpsError> {
    require_consent(ctx)?;
    let prompt = prompt_text(&opts.prompt)?;
    let (job, new_job) = describe(ctx, opts, prompt.as_bytes());
    let (key, _) = ctx.api_key()?;
    let runtime = runtime()?;
    let docker = runtime.block_on(Docker::connect())?;
    let image = ctx.settings.docker.image.clone();
    if runtime.block_on(docker.image(&image))?.is_none() {
        return Err(RunnerError::ImageMissing { image }.into());
    }
    runtime.block_on(reconcile::run(ctx, Some(&docker)))?;

    let mut decided = admit_or_ask(ctx, &job, &new_job, &prompt, confirm)?;
    if let Some(limit) = opts.timeout_secs {
        decided.timeout_secs = decided.timeout_secs.min(limit);
    }
    let cancel = CancellationToken::new();
    let _signals = runtime.block_on(cancel_on_signals(cancel.clone()));
    let plan = RunPlan {
        job_id: &job.id,
        model: &job.model,
        max_tokens: job.max_tokens,
        prompt: &prompt,
        granted_tokens: decided.granted_tokens,
        timeout: Duration::from_secs(u64::from(decided.timeout_secs)),
        policies: &decided.policies,
    };
    job_run::run(ctx, &runtime, &docker, &plan, key, cancel, watch)
}

/// Admission, and when approval asks, the owner's answer and a second
/// admission that carries it (limits are decided again under the lock:
/// time passed while the owner read the question).
fn admit_or_ask(
    ctx: &mut Context,
    job: &Job,
    new_job: &NewJob,
    prompt: &str,
    confirm: Confirm<'_>,
) -> Result<Admitted, OpsError> {
    let (admission, decision) = admit_with(ctx, job, new_job, false)?;
    let reason = match admission {
        Admission::Admitted { snapshot, .. } => {
            return Ok(admitted(job, snapshot, &decision.roles, decision.grant()));
        }
        Admission::Refused {
            outcome: Outcome::Ask,
            ..
        } => reasons(&decision),
        Admission::Refused { .. } => {
            return Err(OpsError::Denied {
                reason: reasons(&decision),
            });
        }
    };
    let details = AskDetails {
        job_id: job.id.clone(),
        model: job.model.clone(),
        max_tokens: job.max_tokens,
        prompt_start: prompt.chars().take(PROMPT_PREVIEW_CHARS).collect(),
        prompt_truncated: prompt.chars().nth(PROMPT_PREVIEW_CHARS).is_some(),
        reason: reason.clone(),
    };
    match confirm(&details) {
        None => Err(OpsError::NoOneToAsk {
            job_id: job.id.clone(),
            reason,
        }),
        Some(false) => Err(OpsError::Denied {
            reason: "the owner declined at the prompt".into(),
        }),
        Some(true) => match admit_with(ctx, job, new_job, true)? {
            (Admission::Admitted { snapshot, .. }, decision) => {
                Ok(admitted(job, snapshot, &decision.roles, decision.grant()))
            }
            (Admission::Refused { .. }, decision) => Err(OpsError::Denied {
                reason: reasons(&decision),
            }),
        },
    }
}

/// Ctrl-C or SIGTERM stops the job: the container is killed and removed and
/// the job is recorded as cancelled, rather than this process dying and
/// leaving both behind.
async fn cancel_on_signals(cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        cancel.cancel();
    })
}

pub(super) fn admitted(
    job: &Job,
    snapshot: UsageSnapshot,
    roles: &[RoleDecision],
    grant: Option<Grant>,
) -> Admitted {
    Admitted {
        job: summary(job),
        granted_tokens: grant.map_or(0, |g| g.max_tokens),
        timeout_secs: grant.map_or(0, |g| g.timeout_secs),
        usage_before: snapshot,
        policies: roles
            .iter()
            .map(|r| (r.role.as_str().to_owned(), r.plugin.digest.clone()))
            .collect(),
    }
}

/// The prompt as text: the Messages API takes UTF-8.
pub(super) fn prompt_text(source: &PromptSource) -> Result<String, OpsError> {
    String::from_utf8(read_prompt(source)?).map_err(|_| OpsError::InvalidInput {
        what: "the prompt is not UTF-8 text; the Messages API takes text".into(),
    })
}

/// Runs the pipeline inside the admission transaction. `owner_approved`
/// turns approval's ask into an allow: the owner said yes at the prompt.
fn admit_with(
    ctx: &mut Context,
    job: &Job,
    new_job: &NewJob,
    owner_approved: bool,
) -> Result<(Admission, PipelineDecision), OpsError> {
    let engine = ctx.engine()?;
    let mut pipeline = policy::pipeline(ctx, &engine)?;
    let facts = facts::gather(ctx)?;
    let limits = limits_of(ctx);
    let mut decision = None;
    // The pipeline runs inside the store's IMMEDIATE transaction, on the
    // usage snapshot taken under the same lock.
    let (_, admission) = ctx.store.admit(new_job, today(), |snapshot| {
        let mut d = pipeline.decide(&decision_input(job, snapshot, limits, facts));
        if owner_approved {
            approve_at_prompt(&mut d);
        }
        let v = verdict(&d);
        decision = Some(d);
        v
    })?;
    let decision = decision.expect("admission runs the pipeline unless it fails");
    Ok((admission, decision))
}

/// The owner answered approval's ask with yes: approval's part becomes an
/// allow that says so. Denials by any role stand.
fn approve_at_prompt(decision: &mut PipelineDecision) {
    for role in &mut decision.roles {
        if role.outcome == Outcome::Ask {
            role.outcome = Outcome::Allow;
            role.reason = Some(format!(
                "approved by the owner at the prompt ({})",
                role.reason.as_deref().unwrap_or("approval asked")
            ));
        }
    }
    if decision.roles.iter().all(|r| r.outcome == Outcome::Allow) {
        decision.decision = Outcome::Allow;
    }
}

pub(super) fn require_consent(ctx: &Context) -> Result<(), OpsError> {
    let consent = ctx.store.consent_state()?;
    super::terms::require_current(&consent)?;
    if !(consent.opted_in && consent.claude_jobs) {
        return Err(OpsError::NotOptedIn);
    }
    Ok(())
}

/// Builds the WIT job from the options; the prompt is only sized and hashed.
fn describe(ctx: &Context, opts: &ExecuteOptions, prompt: &[u8]) -> (Job, NewJob) {
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
        prompt_sha256: hex::encode(Sha256::digest(prompt)),
        image: ctx.settings.docker.image.clone(),
        source: JobSource::Local,
        credential: CredentialKind::ApiKey,
        pre_approved: opts.approve_all,
        labels: Vec::new(),
    };
    let new_job = record_of(&job);
    (job, new_job)
}

/// The store's record of `job`, run by this process.
pub(super) fn record_of(job: &Job) -> NewJob {
    NewJob {
        id: job.id.clone(),
        model: job.model.clone(),
        max_tokens: job.max_tokens,
        prompt_bytes: job.prompt_bytes,
        prompt_sha256: job.prompt_sha256.clone(),
        source: match job.source {
            JobSource::Local => "local",
            JobSource::Market => "market",
        }
        .into(),
        requester: job.requester.clone(),
        host: Some(process::current()),
    }
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

pub(super) fn new_job_id() -> String {
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

pub(super) fn limits_of(ctx: &Context) -> ConfiguredLimits {
    let l = &ctx.settings.limits;
    ConfiguredLimits {
        daily_tasks: l.daily_tasks,
        daily_tokens: l.daily_tokens,
        max_tokens_per_task: l.max_tokens_per_task,
        concurrent_jobs: l.concurrent_jobs,
        timeout_secs: l.timeout_secs,
    }
}

pub(super) fn usage_of(snapshot: &UsageSnapshot, limits: ConfiguredLimits) -> Usage {
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

pub(super) fn summary(job: &Job) -> JobSummary {
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
pub(super) fn verdict(decision: &PipelineDecision) -> Verdict {
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
                bundle: r.plugin.bundle.clone(),
                outcome: r.outcome,
                reason: r.reason.clone(),
                error_class: r.error_class.map(|c| c.to_string()),
                elapsed_us: r.elapsed_us,
            })
            .collect(),
    }
}

/// The reasons of every role that did not allow, for the error message.
pub(super) fn reasons(decision: &PipelineDecision) -> String {
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
