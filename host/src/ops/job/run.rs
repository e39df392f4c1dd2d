//! Running one admitted job to its end: the job's gateway, the hardened
//! container (the worker, or a command under the relay), its output to the
//! caller and to the job's log file, the workspace it sends back, and
//! settling usage and the audit log however the run ends.
//!
//! The container gets no credential and no network. The owner's API key
//! stays in this process, inside the gateway, which is the container's only
//! way out.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::gateway::{self, ApiKey, Gateway, JobGrant, Metered, Upstream};
use crate::metrics;
use crate::runner::program::{CONTROL_SOCKET, WORKSPACE_IN};
use crate::runner::{
    CommandSpec, Docker, JobContainer, JobEnd as ContainerEnd, Program, Stream, WorkspaceMount,
};
use crate::store::{Budget, JobEnd, Store};
use crate::workspace::{Channel, Limits, Returned};

use super::super::{Context, OpsError, labels};
use super::admit::AdmittedJob;
use super::folder::JobFolder;
use super::log::{JobLog, log_path};
use super::meter::{StoreMeter, usage};
use super::request::{JobRequest, Work};
use super::results::{self, WorkspaceSummary};

/// How long the relay's report may take to arrive once the container ended.
const REPORT_WAIT: Duration = Duration::from_secs(10);

/// What a running job tells whoever watches it.
pub enum JobEvent<'a> {
    /// The built-in job image is missing, and is being built from what the
    /// binary carries before the job is described.
    BuildingImage { tag: &'a str },
    /// A step of that build.
    BuildStep(&'a str),
    /// The job was admitted with this grant; its container starts next.
    Admitted { job_id: &'a str, grant: Budget },
    /// The container started.
    Started { container_id: &'a str },
    /// Output, as it arrives.
    Output(Stream, &'a [u8]),
    /// The gateway's totals changed.
    Usage(Metered),
}

/// How a job's run went.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub job_id: String,
    /// finished, failed, timed_out, cancelled, out_of_budget (or aborted, if
    /// another process reconciled it first).
    pub state: String,
    /// The command's (or worker's) exit code.
    pub exit_code: Option<i64>,
    pub container_id: Option<String>,
    pub image: String,
    pub command: Vec<String>,
    pub agent: String,
    pub requests: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// What limits granted.
    pub granted: Budget,
    pub elapsed_ms: u64,
    pub log: PathBuf,
    /// Why the job did not finish, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A command job's workspace: what changed and where the result is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceSummary>,
}

/// Runs the job in its container behind its gateway, then ends it in the
/// store whatever happened. An error before the container starts still ends
/// the job (as failed), so its reservation is released.
pub(crate) fn run(
    ctx: &mut Context,
    runtime: &tokio::runtime::Runtime,
    docker: &Docker,
    job: AdmittedJob,
    key: ApiKey,
    cancel: CancellationToken,
    observe: &mut dyn FnMut(JobEvent<'_>),
) -> Result<JobReport, OpsError> {
    let started = Instant::now();
    let (request, folder, grant, policies) = job.into_parts();
    observe(JobEvent::Admitted {
        job_id: &request.id,
        grant,
    });
    let log_path = log_path(ctx, &request.id);
    let outcome = runtime.block_on(run_container(
        ctx, docker, &request, &folder, grant, &policies, key, cancel, observe,
    ));
    let mut workspace = None;
    let detail = match outcome {
        Ok(ran) => {
            ctx.store.record_metered(&request.id, usage(ran.totals))?;
            let (end, code, detail) = ran.outcome(&grant, ctx);
            workspace = keep_workspace(ctx, &request, &folder, ran.returned);
            let reason = detail.as_deref().filter(|_| end != JobEnd::Finished);
            ctx.store.end_job(&request.id, end, code, reason)?;
            detail.map(|d| (d, ran.container_id))
        }
        Err(e) => {
            let reason = e.to_string();
            if ctx
                .store
                .end_job(&request.id, JobEnd::Failed, None, Some(&reason))?
                .is_some()
            {
                metrics::global().job_ended(JobEnd::Failed.as_str());
                return Err(e);
            }
            // Another process (opt-out, `clean --force`) ended the job and
            // removed its container under us: that, not the engine error it
            // caused here, is what happened to the job.
            tracing::debug!(job_id = %request.id, error = %reason, "job ended elsewhere");
            None
        }
    };
    drop(folder);
    let report = report(ctx, &request, started, log_path, detail, workspace)?;
    metrics::global().job_ended(&report.state);
    Ok(report)
}

/// The report, from the stored row: another process (opt-out, or a
/// reconcile) may have ended the job first, and the row is the truth.
fn report(
    ctx: &Context,
    request: &JobRequest,
    started: Instant,
    log: PathBuf,
    detail: Option<(String, Option<String>)>,
    workspace: Option<WorkspaceSummary>,
) -> Result<JobReport, OpsError> {
    let row = ctx
        .store
        .job(&request.id)?
        .ok_or_else(|| crate::store::StoreError::JobNotFound {
            job_id: request.id.clone(),
        })?;
    let (detail, container_id) = match detail {
        Some((detail, container)) => (Some(detail), container),
        None => (None, row.container_id.clone()),
    };
    Ok(JobReport {
        job_id: row.id.clone(),
        state: row.state.clone(),
        exit_code: row.exit_code,
        container_id,
        image: row.image.clone(),
        command: row.command.clone(),
        agent: row.agent.clone(),
        requests: row.requests,
        input_tokens: row.input_tokens.unwrap_or(0),
        output_tokens: row.output_tokens.unwrap_or(0),
        granted: Budget {
            tokens: row.granted_tokens,
            requests: row.granted_requests,
            timeout_secs: row.timeout_secs,
        },
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        log,
        detail: row.end_reason.or(detail),
        workspace,
    })
}

/// Saves what a command job's workspace became, when it came back. A
/// failure here loses the result, not the job's record, so it is logged.
fn keep_workspace(
    ctx: &Context,
    request: &JobRequest,
    folder: &JobFolder,
    returned: Option<Returned>,
) -> Option<WorkspaceSummary> {
    let Work::Command(command) = &request.work else {
        return None;
    };
    let snapshot = command.workspace.as_ref()?;
    let source = snapshot.source.display().to_string();
    let root = results::path(ctx, &request.id);
    let Some(received) = returned.and_then(|r| r.workspace) else {
        return Some(WorkspaceSummary {
            folder: source,
            result: root,
            returned: false,
            added: Vec::new(),
            changed: Vec::new(),
            removed: Vec::new(),
            skipped: Vec::new(),
        });
    };
    let saved = Dir::open_ambient_dir(folder.path().join(WORKSPACE_IN), ambient_authority())
        .map_err(|source| OpsError::Read {
            path: folder.path().join(WORKSPACE_IN),
            source,
        })
        .and_then(|base| {
            results::save(
                ctx,
                &request.id,
                &source,
                &snapshot.manifest,
                &base,
                received,
            )
        });
    match saved {
        Ok(summary) => Some(summary),
        Err(e) => {
            tracing::warn!(job_id = %request.id, error = %e, "could not keep the job's workspace");
            None
        }
    }
}

/// What running the container gave.
struct Ran {
    end: ContainerEnd,
    container_id: Option<String>,
    totals: Metered,
    returned: Option<Returned>,
    stderr: Option<String>,
    timeout: Duration,
    workspace: Option<WorkspaceMount>,
}

impl Ran {
    /// How the job ended, its exit code, and why when it did not finish.
    fn outcome(&self, grant: &Budget, ctx: &Context) -> (JobEnd, Option<i64>, Option<String>) {
        let report = self.returned.as_ref().map(|r| &r.report);
        let code = match self.end {
            ContainerEnd::Exited { code } => Some(code),
            _ => None,
        };
        if self.totals.exhausted > 0 {
            let detail = format!(
                "ran out of budget: the gateway refused {} request(s) once its {} tokens or {} \
                 requests were used up",
                self.totals.exhausted, grant.tokens, grant.requests
            );
            return (JobEnd::OutOfBudget, code, Some(detail));
        }
        match self.end {
            ContainerEnd::TimedOut => (
                JobEnd::TimedOut,
                None,
                Some(format!(
                    "timed out after {} s and was stopped",
                    self.timeout.as_secs()
                )),
            ),
            ContainerEnd::Cancelled => (
                JobEnd::Cancelled,
                None,
                Some("interrupted; the container was stopped".to_owned()),
            ),
            ContainerEnd::Exited { code } if report.is_some_and(|r| r.workspace_full) => {
                let limit = self.workspace.map_or(0, |w| w.max_bytes);
                let detail = format!(
                    "the workspace filled its cap ({limit} bytes or {} files; \
                     workspace.maxBytes and workspace.maxFiles) and the command was stopped",
                    ctx.settings.workspace.max_files
                );
                (JobEnd::Failed, Some(code), Some(detail))
            }
            ContainerEnd::Exited { code: 0 } => (JobEnd::Finished, Some(0), None),
            ContainerEnd::Exited { code } => {
                let relay_said = report
                    .and_then(|r| r.error.as_ref())
                    .map(|e| e.message.clone());
                let detail = relay_said
                    .or_else(|| self.stderr.clone())
                    .unwrap_or_else(|| format!("the command exited with status {code}"));
                (JobEnd::Failed, Some(code), Some(detail))
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_container(
    ctx: &mut Context,
    docker: &Docker,
    request: &JobRequest,
    folder: &JobFolder,
    grant: Budget,
    policies: &[(String, String)],
    key: ApiKey,
    cancel: CancellationToken,
    observe: &mut dyn FnMut(JobEvent<'_>),
) -> Result<Ran, OpsError> {
    let (meter, writer, mut watched) = StoreMeter::start(
        &request.id,
        grant.tokens,
        Store::open(&ctx.home.database_path())?,
    );
    let meter = Arc::new(meter);
    let gateway = start_gateway(ctx, request, folder, grant, key, Arc::clone(&meter)).await?;
    let (program, channel) = match &request.work {
        Work::Prompt { .. } => (Program::Worker, None),
        Work::Command(command) => {
            folder.prepare_command(command.stdin.as_deref())?;
            let workspace = command.workspace.as_ref().map(|_| WorkspaceMount {
                max_bytes: ctx.settings.workspace.max_bytes.0,
                max_files: ctx.settings.workspace.max_files,
                copy_in: true,
            });
            let dest = match workspace {
                Some(w) => Some((
                    results::create(ctx, &request.id)?,
                    Limits {
                        max_bytes: w.max_bytes,
                        max_files: w.max_files,
                    },
                )),
                None => None,
            };
            let channel =
                Channel::listen(&folder.path().join(CONTROL_SOCKET), folder.owner(), dest)?;
            let spec = CommandSpec {
                argv: command.argv.clone(),
                env: command.env.clone(),
                placeholder_key: format!("cmm-placeholder-{}", request.id),
                workspace,
                stdin_file: command.stdin.is_some(),
            };
            (Program::Command(spec), Some(channel))
        }
    };
    let workspace = match &program {
        Program::Command(c) => c.workspace,
        Program::Worker => None,
    };
    let spec = container(ctx, request, folder, policies, program);
    let timeout = Duration::from_secs(u64::from(grant.timeout_secs));
    let stdin = worker_stdin(request, &grant);
    let mut log = JobLog::open(&log_path(ctx, &request.id))?;
    let hardening = serde_json::to_value(spec.hardening())
        .expect("a struct of strings, numbers and bools always encodes");
    let observe = RefCell::new(observe);
    let store = &mut ctx.store;
    let mut start_error = None;
    // Dropped when this function returns, however the run ended.
    let mut _running = None;
    let run = docker.run_job(
        &spec,
        stdin,
        timeout,
        cancel,
        |stream, bytes| {
            log.chunk(stream, bytes);
            (observe.borrow_mut())(JobEvent::Output(stream, bytes));
        },
        |container_id| {
            if let Err(e) = store.mark_running(&request.id, container_id, &hardening) {
                start_error = Some(e);
            }
            _running = Some(metrics::global().job_started(&request.id, grant.tokens));
            (observe.borrow_mut())(JobEvent::Started { container_id });
        },
    );
    let progress = async {
        while watched.changed().await.is_ok() {
            let totals = *watched.borrow_and_update();
            (observe.borrow_mut())(JobEvent::Usage(totals));
        }
    };
    let run = tokio::select! {
        run = run => run,
        () = progress => unreachable!("the meter outlives the run"),
    };
    let totals = gateway.shutdown().await;
    meter.close();
    writer.finish();
    let returned = match channel {
        Some(channel) => match channel.finish(REPORT_WAIT).await {
            Some(Ok(returned)) => Some(returned),
            Some(Err(e)) => {
                tracing::warn!(job_id = %request.id, error = %e, "the job's workspace did not come back");
                None
            }
            None => None,
        },
        None => None,
    };
    let run = run?;
    if let Some(e) = start_error {
        tracing::warn!(job_id = %request.id, error = %e, "could not record the container start");
    }
    Ok(Ran {
        end: run.end,
        container_id: Some(run.container_id),
        totals,
        returned,
        stderr: log.last_stderr_line(),
        timeout,
        workspace,
    })
}

async fn start_gateway(
    ctx: &Context,
    request: &JobRequest,
    folder: &JobFolder,
    grant: Budget,
    key: ApiKey,
    meter: Arc<StoreMeter>,
) -> Result<Gateway, OpsError> {
    let job_grant = JobGrant {
        job_id: request.id.clone(),
        allowed_models: vec![request.model.clone()],
        budget_tokens: grant.tokens,
        max_requests: grant.requests,
        // Admission allowed what the job asked for, egress included.
        egress: request.egress,
        allowed_betas: ctx.settings.gateway.allowed_betas.clone(),
    };
    let upstream = Upstream {
        base_url: ctx.settings.api.base_url.clone(),
        key,
        retry: gateway::RetryPolicy {
            max_retries: ctx.settings.api.max_retries,
            ..gateway::RetryPolicy::default()
        },
    };
    Ok(Gateway::start(
        &folder.path().join("gateway.sock"),
        folder.owner(),
        job_grant,
        upstream,
        meter,
    )
    .await?)
}

fn container(
    ctx: &Context,
    request: &JobRequest,
    folder: &JobFolder,
    policies: &[(String, String)],
    program: Program,
) -> JobContainer {
    let (uid, gid) = folder.user();
    let image = if request.image.id.is_empty() {
        request.image.reference.clone()
    } else {
        request.image.id.clone()
    };
    JobContainer {
        name: format!("cmm-job-{}", request.id),
        image,
        user: format!("{uid}:{gid}"),
        memory_bytes: ctx.settings.docker.memory.0,
        cpu_shares: ctx.settings.docker.cpu_shares,
        // Whole CPUs and fractions as Docker counts them: a billionth each.
        nano_cpus: match ctx.settings.docker.cpu_millis {
            0 => None,
            millis => Some(u64::from(millis) * 1_000_000),
        },
        pids_limit: ctx.settings.docker.pids_limit,
        tmpfs_bytes: ctx.settings.docker.tmpfs_size.0,
        gateway_dir: folder.path().to_path_buf(),
        labels: labels::for_job(ctx, &request.id, policies),
        program,
    }
}

/// The built-in worker's job spec on stdin; nothing for a command.
fn worker_stdin(request: &JobRequest, grant: &Budget) -> Vec<u8> {
    match &request.work {
        Work::Prompt { text, max_tokens } => serde_json::to_vec(&json!({
            "model": request.model,
            "max_tokens": u64::from(*max_tokens).min(grant.tokens),
            "prompt": text,
            "stream": true,
        }))
        .expect("a JSON object of strings and numbers always encodes"),
        Work::Command(_) => Vec::new(),
    }
}
