//! `execute`: turns what the owner asked for into a job request (the image
//! resolved to its id, the workspace copied and checked), runs the
//! four-role pipeline on it, admits it and runs it in its container; or,
//! with `--dry-run`, only reports the decision.
//!
//! Everything that can fail without spending anything (no API key, no
//! Docker, no image, a workspace that may not go in) is checked before
//! admission reserves usage.

use std::path::PathBuf;

use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, claude_code};
use crate::policy::PipelineDecision;
use crate::runner::{BuildEvent, Docker};
use crate::store::{Budget, NewJob, UsageSnapshot};
use crate::workspace;

use super::context::runtime;
use super::docker_image::pinned_digest;
use super::job::admit::{self, AdmittedJob, Confirm};
use super::job::folder::JobFolder;
use super::job::request::{
    self, CommandWork, JobRequest, Requester, ResolvedImage, Work, new_job_id, prompt_budget,
};
use super::job::{JobEvent, JobReport};
use super::{Context, OpsError, reconcile};

/// A one-prompt job's `max_tokens` when the owner names none.
pub const DEFAULT_PROMPT_MAX_TOKENS: u32 = 8192;

/// Where a prompt comes from.
#[derive(Debug, Clone)]
pub enum PromptSource {
    Text(String),
    File(PathBuf),
}

/// What the job runs.
#[derive(Debug, Clone)]
pub enum Program {
    /// The built-in worker answers the prompt.
    Prompt(PromptSource),
    /// `COMMAND` in `image`.
    Command { image: String, argv: Vec<String> },
    /// An agent given a prompt, in its image (default: the one
    /// `docker:build --agent` builds).
    Agent {
        agent: Agent,
        image: Option<String>,
        prompt: PromptSource,
    },
}

#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    pub program: Program,
    /// Defaults to `api.defaultModel`.
    pub model: Option<String>,
    /// A one-prompt job's `max_tokens`.
    pub max_tokens: Option<u32>,
    /// Defaults to what one prompt needs, or `limits.maxTokensPerTask`.
    pub budget_tokens: Option<u64>,
    /// Defaults to 1 for a prompt, `limits.requestsPerJob` otherwise.
    pub max_requests: Option<u32>,
    /// Defaults to `limits.timeoutSecs`.
    pub timeout_secs: Option<u32>,
    /// The owner's folder, copied in as `/workspace`.
    pub workspace: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Ask for server-side tools that reach the internet.
    pub egress: bool,
    /// Ask approval to skip the interactive prompt.
    pub approve_all: bool,
}

/// What `execute --dry-run` reports.
#[derive(Debug, Serialize)]
pub struct DryRun {
    pub job: NewJob,
    pub usage: UsageSnapshot,
    #[serde(flatten)]
    pub pipeline: PipelineDecision,
}

/// Runs the pipeline without admitting anything; the decision is audited.
/// Without Docker the image is judged by its reference alone.
pub fn dry_run(ctx: &mut Context, opts: &ExecuteOptions) -> Result<DryRun, OpsError> {
    let runtime = runtime()?;
    let docker = runtime.block_on(Docker::connect()).ok();
    let id = new_job_id();
    let folder = JobFolder::create(ctx, &id)?;
    let request = describe(ctx, &runtime, (docker.as_ref(), false), opts, id, &folder)?;
    let (usage, pipeline) = admit::dry_run(ctx, &request)?;
    Ok(DryRun {
        job: request.record(),
        usage,
        pipeline,
    })
}

/// Describes and admits a job without running it (what a library caller
/// that runs jobs its own way wants). Without Docker the image is judged
/// by its reference alone; an approval that asks is a denial.
pub fn admit(ctx: &mut Context, opts: &ExecuteOptions) -> Result<AdmittedJob, OpsError> {
    require_consent(ctx)?;
    let runtime = runtime()?;
    let docker = runtime.block_on(Docker::connect()).ok();
    let id = new_job_id();
    let folder = JobFolder::create(ctx, &id)?;
    let request = describe(ctx, &runtime, (docker.as_ref(), false), opts, id, &folder)?;
    admit::admit(ctx, request, folder, &mut |_| None).map_err(|e| match e {
        OpsError::NoOneToAsk { reason, .. } => OpsError::Denied { reason },
        other => other,
    })
}

/// Describes, admits and runs a job to its end: the whole of `execute`.
/// `confirm` answers approval's ask; `observe` sees the job as it runs.
pub fn run(
    ctx: &mut Context,
    opts: &ExecuteOptions,
    confirm: Confirm<'_>,
    observe: &mut dyn FnMut(JobEvent<'_>),
) -> Result<JobReport, OpsError> {
    require_consent(ctx)?;
    let (key, _) = ctx.api_key()?;
    let runtime = runtime()?;
    let docker = runtime.block_on(Docker::connect())?;
    runtime.block_on(reconcile::run(ctx, Some(&docker)))?;
    if matches!(opts.program, Program::Prompt(_)) {
        build_missing_job_image(ctx, &runtime, &docker, observe)?;
    }
    let id = new_job_id();
    let folder = JobFolder::create(ctx, &id)?;
    let request = describe(ctx, &runtime, (Some(&docker), true), opts, id, &folder)?;
    let admitted = admit::admit(ctx, request, folder, confirm)?;
    let cancel = CancellationToken::new();
    let _signals = runtime.block_on(cancel_on_signals(cancel.clone()));
    super::job::run::run(ctx, &runtime, &docker, admitted, key, cancel, observe)
}

/// A node's first prompt job builds the job image when `docker.image` is
/// missing: it is made from what this binary carries, exactly as
/// `docker:build` would, so nothing is pulled. An image pinned by digest is
/// never built (a local build cannot reproduce it), nor is any other image
/// a job names: those stay the owner's to provide.
fn build_missing_job_image(
    ctx: &mut Context,
    runtime: &tokio::runtime::Runtime,
    docker: &Docker,
    observe: &mut dyn FnMut(JobEvent<'_>),
) -> Result<(), OpsError> {
    let tag = ctx.settings.docker.image.clone();
    if pinned_digest(&tag).is_some() || runtime.block_on(docker.image(&tag))?.is_some() {
        return Ok(());
    }
    observe(JobEvent::BuildingImage { tag: &tag });
    super::docker_image::build_on(ctx, runtime, docker, tag, false, &mut |event| {
        if let BuildEvent::Step(step) = event {
            observe(JobEvent::BuildStep(&step));
        }
    })?;
    Ok(())
}

/// The job request for `opts`: the image resolved (required to be there
/// when `strict`), the prompt read, the workspace copied into `folder`.
pub(super) fn describe(
    ctx: &Context,
    runtime: &tokio::runtime::Runtime,
    (docker, strict): (Option<&Docker>, bool),
    opts: &ExecuteOptions,
    id: String,
    folder: &JobFolder,
) -> Result<JobRequest, OpsError> {
    let model = opts
        .model
        .clone()
        .unwrap_or_else(|| ctx.settings.api.default_model.clone());
    let reference = match &opts.program {
        Program::Prompt(_) => ctx.settings.docker.image.clone(),
        Program::Command { image, .. } => image.clone(),
        Program::Agent { agent, image, .. } => image.clone().unwrap_or(agent.image().to_owned()),
    };
    let image = match (docker, strict) {
        (Some(docker), true) => runtime.block_on(request::resolve_image(docker, &reference))?,
        // A dry run judges an image it cannot resolve by its reference.
        (Some(docker), false) => ResolvedImage {
            id: runtime
                .block_on(docker.image(&reference))
                .ok()
                .flatten()
                .map(|info| info.id)
                .unwrap_or_default(),
            reference,
        },
        (None, _) => ResolvedImage {
            reference,
            id: String::new(),
        },
    };
    let limits = &ctx.settings.limits;
    let timeout_secs = opts.timeout_secs.unwrap_or(limits.timeout_secs);
    let (work, budget) = match &opts.program {
        Program::Prompt(source) => {
            if opts.workspace.is_some() || !opts.env.is_empty() {
                return Err(OpsError::InvalidInput {
                    what: "--workspace and --env are for commands: add `-- COMMAND` (with \
                           --image) or --agent claude-code"
                        .into(),
                });
            }
            let text = prompt_text(source)?;
            let max_tokens = opts.max_tokens.unwrap_or(DEFAULT_PROMPT_MAX_TOKENS);
            let default = prompt_budget(ctx, &text, max_tokens);
            let budget = Budget {
                tokens: opts.budget_tokens.unwrap_or(default.tokens),
                requests: opts.max_requests.unwrap_or(default.requests),
                timeout_secs,
            };
            (Work::Prompt { text, max_tokens }, budget)
        }
        Program::Command { argv, .. } => {
            let budget = command_budget(ctx, opts, timeout_secs);
            let command = CommandWork {
                argv: argv.clone(),
                env: opts.env.clone(),
                stdin: None,
                agent: String::new(),
                workspace: copy_workspace(ctx, opts, folder)?,
            };
            (Work::Command(command), budget)
        }
        Program::Agent { agent, prompt, .. } => {
            let budget = command_budget(ctx, opts, timeout_secs);
            let command = agent_work(ctx, *agent, &model, budget, opts, prompt, folder)?;
            (Work::Command(command), budget)
        }
    };
    Ok(JobRequest {
        id,
        requester: Requester::Local,
        model,
        image,
        budget,
        work,
        egress: opts.egress,
        pre_approved: opts.approve_all,
    })
}

fn command_budget(ctx: &Context, opts: &ExecuteOptions, timeout_secs: u32) -> Budget {
    let limits = &ctx.settings.limits;
    Budget {
        tokens: opts.budget_tokens.unwrap_or(limits.max_tokens_per_task),
        requests: opts.max_requests.unwrap_or(limits.requests_per_job),
        timeout_secs,
    }
}

fn agent_work(
    ctx: &Context,
    agent: Agent,
    model: &str,
    budget: Budget,
    opts: &ExecuteOptions,
    prompt: &PromptSource,
    folder: &JobFolder,
) -> Result<CommandWork, OpsError> {
    let (argv, mut env) = match agent {
        Agent::ClaudeCode => (
            claude_code::command(model),
            claude_code::environment(model, budget.tokens),
        ),
    };
    env.extend(opts.env.iter().cloned());
    Ok(CommandWork {
        argv,
        env,
        stdin: Some(prompt_text(prompt)?),
        agent: agent.name().to_owned(),
        workspace: copy_workspace(ctx, opts, folder)?,
    })
}

/// The checked copy of `--workspace`, in the job folder.
fn copy_workspace(
    ctx: &Context,
    opts: &ExecuteOptions,
    folder: &JobFolder,
) -> Result<Option<workspace::Snapshot>, OpsError> {
    let Some(source) = &opts.workspace else {
        return Ok(None);
    };
    let dest = folder.workspace_in()?;
    Ok(Some(workspace::snapshot(
        source,
        &dest,
        ctx.workspace_limits(),
        folder.owner(),
    )?))
}

/// Ctrl-C or SIGTERM stops the job: the container is stopped and removed
/// and the job is recorded as cancelled, rather than this process dying and
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

/// The prompt as text: the Messages API takes UTF-8.
pub(super) fn prompt_text(source: &PromptSource) -> Result<String, OpsError> {
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
    String::from_utf8(prompt).map_err(|_| OpsError::InvalidInput {
        what: "the prompt is not UTF-8 text; the Messages API takes text".into(),
    })
}

pub(super) fn require_consent(ctx: &Context) -> Result<(), OpsError> {
    let consent = ctx.store.consent_state()?;
    super::terms::require_current(&consent)?;
    if !(consent.opted_in && consent.claude_jobs) {
        return Err(OpsError::NotOptedIn);
    }
    Ok(())
}
