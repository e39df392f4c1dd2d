//! `result [JOB] [--diff] [--apply [--force]]`: what a command job changed
//! in its workspace (the newest such job's by default), the unified diff,
//! and, only when asked, copying the changes into the owner's folder. An
//! apply refuses, writing nothing, when the folder changed since the job
//! took its copy, unless forced; it is audited either way it goes.

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::Serialize;
use serde_json::json;

use crate::store::{JobRow, StoreError};
use crate::workspace::{self, Applied, WorkspaceError};

use super::job::results::{self, WORKSPACE_DIR, WorkspaceSummary};
use super::{Context, OpsError};

/// How many recent jobs are searched for the newest result.
const RECENT_JOBS: usize = 50;

#[derive(Debug, Clone, Default)]
pub struct ResultOptions {
    /// Default: the newest job that left a result.
    pub job: Option<String>,
    pub diff: bool,
    pub apply: bool,
    /// Apply over changes the owner made since the job took its copy.
    pub force: bool,
}

/// What `result` found and did.
#[derive(Debug, Serialize)]
pub struct Shown {
    pub job: JobRow,
    pub workspace: WorkspaceSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
}

pub fn run(ctx: &mut Context, opts: &ResultOptions) -> Result<Shown, OpsError> {
    let (job, stored, root) = find(ctx, opts.job.as_deref())?;
    let workspace = WorkspaceSummary::from_stored(&stored, root.clone());
    let diff = if opts.diff {
        Some(results::diff(&root)?)
    } else {
        None
    };
    let applied = if opts.apply {
        let applied = apply(&stored.folder, &root, &stored.changes, opts.force);
        let details = match &applied {
            Ok(done) => json!({ "folder": stored.folder, "applied": done, "forced": opts.force }),
            Err(e) => json!({ "folder": stored.folder, "refused": e.to_string() }),
        };
        ctx.store
            .append_audit("job.result-applied", &job.id, &details)?;
        Some(applied?)
    } else {
        None
    };
    Ok(Shown {
        job,
        workspace,
        diff,
        applied,
    })
}

fn find(
    ctx: &Context,
    job_id: Option<&str>,
) -> Result<(JobRow, results::Stored, std::path::PathBuf), OpsError> {
    if let Some(id) = job_id {
        let job = ctx
            .store
            .job(id)?
            .ok_or_else(|| StoreError::JobNotFound { job_id: id.into() })?;
        let (stored, root) = results::load(ctx, id)?.ok_or_else(|| OpsError::InvalidInput {
            what: format!(
                "job {id} left no workspace result: it ran without --workspace, or was \
                 stopped before its container could send the workspace back"
            ),
        })?;
        return Ok((job, stored, root));
    }
    for job in ctx.store.jobs(RECENT_JOBS)? {
        if let Some((stored, root)) = results::load(ctx, &job.id)? {
            return Ok((job, stored, root));
        }
    }
    Err(OpsError::InvalidInput {
        what: "no job has left a workspace result yet; run one with \
               `claude-max-market execute --workspace DIR ...`"
            .into(),
    })
}

fn apply(
    folder: &str,
    root: &std::path::Path,
    changes: &[workspace::Change],
    force: bool,
) -> Result<Applied, OpsError> {
    let open = |path: &std::path::Path| {
        Dir::open_ambient_dir(path, ambient_authority()).map_err(|source| {
            OpsError::Workspace(WorkspaceError::Open {
                path: path.to_path_buf(),
                source,
            })
        })
    };
    let target = open(std::path::Path::new(folder))?;
    let result = open(&root.join(WORKSPACE_DIR))?;
    Ok(workspace::apply(&target, &result, changes, force)?)
}
