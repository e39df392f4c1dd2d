//! Running one admitted job to its end: the per-job gateway folder and
//! socket, the hardened container, output to the caller and to the job's
//! log file, and settling usage and the audit log however the run ends.
//!
//! The container gets no credential and no network. The owner's API key
//! stays in this process, inside the gateway, which is the container's only
//! way out.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::gateway::{self, ApiKey, Gateway, GatewayEvent, JobGrant, Meter, Metered, Upstream};
use crate::runner::{Docker, JobContainer, JobEnd as ContainerEnd, Stream};
use crate::store::{JobEnd, MeteredUsage, Store};

use super::{Context, OpsError, labels};

/// The user jobs run as when this host runs as root: not root, and not any
/// user this host is likely to have.
const JOB_USER_WHEN_ROOT: (u32, u32) = (65532, 65532);

/// Where the gateway socket sits inside the job folder (and so, through the
/// bind mount, inside the container).
const SOCKET_NAME: &str = "gateway.sock";

/// An admitted job, ready to run.
pub(super) struct RunPlan<'a> {
    pub job_id: &'a str,
    pub model: &'a str,
    pub max_tokens: u32,
    pub prompt: &'a str,
    pub granted_tokens: u32,
    pub timeout: Duration,
    /// The plugin digest of each role that admitted the job, for labels.
    pub policies: &'a [(String, String)],
}

/// How a job's run went.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub job_id: String,
    /// finished, failed, timed_out, cancelled (or aborted, if another
    /// process reconciled it first).
    pub state: String,
    pub exit_code: Option<i64>,
    pub container_id: Option<String>,
    pub requests: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub granted_tokens: u32,
    pub elapsed_ms: u64,
    pub log: PathBuf,
    /// The worker's last line on stderr when it did not finish, which says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A job's folder on the host: it holds the gateway socket and is the only
/// thing mounted into the container. Removed when the run ends.
struct JobFolder {
    path: PathBuf,
}

impl JobFolder {
    /// Creates `jobs/<id>` (0700) and decides whom the container runs as: a
    /// fixed unprivileged user, owning the folder, when this host is root;
    /// otherwise this host's own user, which already owns it. Either way
    /// nobody else on the host can reach the socket.
    fn create(ctx: &Context, job_id: &str) -> Result<(JobFolder, (u32, u32)), OpsError> {
        let path = job_folder(ctx, job_id);
        let write_err = |source| OpsError::Write {
            path: job_folder(ctx, job_id),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(write_err)?;
        let folder = JobFolder { path };
        let meta = fs::metadata(&folder.path).map_err(write_err)?;
        let user = if meta.uid() == 0 {
            std::os::unix::fs::chown(
                &folder.path,
                Some(JOB_USER_WHEN_ROOT.0),
                Some(JOB_USER_WHEN_ROOT.1),
            )
            .map_err(write_err)?;
            JOB_USER_WHEN_ROOT
        } else {
            (meta.uid(), meta.gid())
        };
        Ok((folder, user))
    }
}

impl Drop for JobFolder {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a job folder");
        }
    }
}

pub(super) fn job_folder(ctx: &Context, job_id: &str) -> PathBuf {
    ctx.home.root().join("jobs").join(job_id)
}

pub(super) fn log_path(ctx: &Context, job_id: &str) -> PathBuf {
    ctx.home.root().join("logs").join(format!("{job_id}.log"))
}

/// Writes the gateway's running totals to the database as they arrive, on a
/// connection of its own, and its refusals and upstream errors to the audit
/// log. A failed write is logged, not fatal: the job's end settles again.
struct StoreMeter {
    job_id: String,
    store: Mutex<Store>,
}

impl StoreMeter {
    fn with_store<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Store) -> Result<T, crate::store::StoreError>,
    ) {
        let mut store = match self.store.lock() {
            Ok(store) => store,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(e) = f(&mut store) {
            tracing::warn!(job_id = %self.job_id, error = %e, "could not record {what}");
        }
    }
}

impl Meter for StoreMeter {
    fn usage(&self, totals: Metered) {
        self.with_store("metered usage", |store| {
            store.record_metered(&self.job_id, metered(totals))
        });
    }

    fn event(&self, event: GatewayEvent) {
        let (kind, details) = match &event {
            GatewayEvent::Refused { reason, status } => (
                "gateway.refused",
                json!({ "reason": reason, "status": status }),
            ),
            GatewayEvent::UpstreamError { status, error_type } => (
                "gateway.upstream_error",
                json!({ "status": status, "error_type": error_type }),
            ),
            GatewayEvent::Retried {
                status,
                attempt,
                wait,
            } => (
                "gateway.retried",
                json!({ "status": status, "attempt": attempt, "wait_ms": wait.as_millis() as u64 }),
            ),
        };
        self.with_store("a gateway event", |store| {
            store.append_audit(kind, &self.job_id, &details).map(drop)
        });
    }
}

fn metered(totals: Metered) -> MeteredUsage {
    MeteredUsage {
        requests: totals.requests,
        input_tokens: totals.input_tokens,
        output_tokens: totals.output_tokens,
    }
}

/// The job's output, to the caller as it arrives and to its log file.
struct Output<'w> {
    log: File,
    log_path: PathBuf,
    watch: &'w mut dyn FnMut(Stream, &[u8]),
    /// The start of the worker's current last stderr line, for the report.
    stderr_tail: Vec<u8>,
}

impl Output<'_> {
    fn chunk(&mut self, stream: Stream, bytes: &[u8]) {
        if let Err(e) = self.log.write_all(bytes) {
            tracing::warn!(path = %self.log_path.display(), error = %e, "could not write a job's log");
        }
        if matches!(stream, Stream::Stderr) {
            self.stderr_tail.extend_from_slice(bytes);
            let keep_from = self.stderr_tail.len().saturating_sub(4096);
            self.stderr_tail.drain(..keep_from);
        }
        (self.watch)(stream, bytes);
    }

    fn last_stderr_line(&self) -> Option<String> {
        String::from_utf8_lossy(&self.stderr_tail)
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .map(|line| line.trim().to_owned())
    }
}

fn open_log(path: &Path) -> Result<File, OpsError> {
    let write_err = |source| OpsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(write_err)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(write_err)
}

/// Runs the job in its container behind its gateway, then ends it in the
/// store whatever happened. An error before the container starts still ends
/// the job (as failed), so its reservation is released.
pub(super) fn run(
    ctx: &mut Context,
    runtime: &tokio::runtime::Runtime,
    docker: &Docker,
    plan: &RunPlan<'_>,
    key: ApiKey,
    cancel: CancellationToken,
    watch: &mut dyn FnMut(Stream, &[u8]),
) -> Result<JobReport, OpsError> {
    let started = Instant::now();
    let log_path = log_path(ctx, plan.job_id);
    let outcome = runtime.block_on(run_container(
        ctx, docker, plan, key, cancel, &log_path, watch,
    ));
    let (detail, container_id) = match outcome {
        Ok((end, exit_code, detail, container_id, totals)) => {
            ctx.store.record_metered(plan.job_id, metered(totals))?;
            let reason = detail.as_deref().filter(|_| end != JobEnd::Finished);
            ctx.store.end_job(plan.job_id, end, exit_code, reason)?;
            (detail, container_id)
        }
        Err(e) => {
            let reason = e.to_string();
            if ctx
                .store
                .end_job(plan.job_id, JobEnd::Failed, None, Some(&reason))?
                .is_some()
            {
                return Err(e);
            }
            // Another process (opt-out, `clean --force`) ended the job and
            // removed its container under us: that, not the engine error it
            // caused here, is what happened to the job.
            tracing::debug!(job_id = plan.job_id, error = %reason, "job ended elsewhere");
            (None, None)
        }
    };
    // Another process (opt-out, or a reconcile) may have ended it first; the
    // stored row is the truth either way.
    let row = ctx
        .store
        .job(plan.job_id)?
        .ok_or_else(|| crate::store::StoreError::JobNotFound {
            job_id: plan.job_id.to_owned(),
        })?;
    Ok(JobReport {
        job_id: row.id.clone(),
        state: row.state.clone(),
        exit_code: row.exit_code,
        container_id,
        requests: row.requests,
        input_tokens: row.input_tokens.unwrap_or(0),
        output_tokens: row.output_tokens.unwrap_or(0),
        granted_tokens: row.granted_tokens,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        log: log_path,
        detail: row.end_reason.or(detail),
    })
}

type Ran = (JobEnd, Option<i64>, Option<String>, Option<String>, Metered);

async fn run_container(
    ctx: &mut Context,
    docker: &Docker,
    plan: &RunPlan<'_>,
    key: ApiKey,
    cancel: CancellationToken,
    log_path: &Path,
    watch: &mut dyn FnMut(Stream, &[u8]),
) -> Result<Ran, OpsError> {
    let (folder, user) = JobFolder::create(ctx, plan.job_id)?;
    let socket_owner = (user == JOB_USER_WHEN_ROOT).then_some(user);
    let meter = Arc::new(StoreMeter {
        job_id: plan.job_id.to_owned(),
        store: Mutex::new(Store::open(&ctx.home.database_path())?),
    });
    let grant = JobGrant {
        job_id: plan.job_id.to_owned(),
        allowed_models: vec![plan.model.to_owned()],
        max_tokens: plan.granted_tokens,
        max_requests: ctx.settings.limits.requests_per_job,
    };
    let upstream = Upstream {
        base_url: ctx.settings.api.base_url.clone(),
        key,
        retry: gateway::RetryPolicy {
            max_retries: ctx.settings.api.max_retries,
            ..gateway::RetryPolicy::default()
        },
    };
    let gateway = Gateway::start(
        &folder.path.join(SOCKET_NAME),
        socket_owner,
        grant,
        upstream,
        meter,
    )
    .await?;

    let spec = JobContainer {
        name: format!("cmm-job-{}", plan.job_id),
        image: ctx.settings.docker.image.clone(),
        user: format!("{}:{}", user.0, user.1),
        memory_bytes: ctx.settings.docker.memory.0,
        cpu_shares: ctx.settings.docker.cpu_shares,
        nano_cpus: None,
        pids_limit: ctx.settings.docker.pids_limit,
        tmpfs_bytes: ctx.settings.docker.tmpfs_size.0,
        gateway_dir: folder.path.clone(),
        labels: labels::for_job(ctx, plan.job_id, plan.policies),
    };
    let stdin = serde_json::to_vec(&json!({
        "model": plan.model,
        "max_tokens": plan.max_tokens.min(plan.granted_tokens),
        "prompt": plan.prompt,
        "stream": true,
    }))
    .expect("a JSON object of strings and numbers always encodes");
    let mut output = Output {
        log: open_log(log_path)?,
        log_path: log_path.to_path_buf(),
        watch,
        stderr_tail: Vec::new(),
    };
    let hardening = serde_json::to_value(spec.hardening())
        .expect("a struct of strings, numbers and bools always encodes");
    let store = &mut ctx.store;
    let mut start_error = None;
    let run = docker
        .run_job(
            &spec,
            stdin,
            plan.timeout,
            cancel,
            |stream, bytes| output.chunk(stream, bytes),
            |container_id| {
                if let Err(e) = store.mark_running(plan.job_id, container_id, &hardening) {
                    start_error = Some(e);
                }
            },
        )
        .await;
    let totals = gateway.shutdown().await;
    drop(folder);
    let run = run?;
    if let Some(e) = start_error {
        tracing::warn!(job_id = plan.job_id, error = %e, "could not record the container start");
    }
    let (end, exit_code) = match run.end {
        ContainerEnd::Exited { code: 0 } => (JobEnd::Finished, Some(0)),
        ContainerEnd::Exited { code } => (JobEnd::Failed, Some(code)),
        ContainerEnd::TimedOut => (JobEnd::TimedOut, None),
        ContainerEnd::Cancelled => (JobEnd::Cancelled, None),
    };
    let detail = match end {
        JobEnd::TimedOut => Some(format!(
            "timed out after {} s and was killed",
            plan.timeout.as_secs()
        )),
        JobEnd::Cancelled => Some("interrupted; the container was killed".to_owned()),
        JobEnd::Finished => None,
        _ => output.last_stderr_line(),
    };
    Ok((end, exit_code, detail, Some(run.container_id), totals))
}
