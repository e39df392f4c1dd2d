//! Cleaning up after a host process that died mid-job (SIGKILL, a crash, a
//! power cut). Its job is still "running" in the database and its container
//! may still run, holding a concurrency slot and perhaps spending tokens.
//! Every invocation that touches jobs calls this first: containers of this
//! data folder whose host process is gone are killed and removed, and their
//! jobs end as aborted, keeping the tokens the gateway had already metered.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::runner::Docker;
use crate::runner::labels::HOME_LABEL;
use crate::store::JobEnd;

use super::{Context, OpsError, labels, process};

const REASON: &str = "its host process died before the job ended";

/// What reconciling found and did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Reconciled {
    /// Jobs ended as aborted.
    pub aborted_jobs: Vec<String>,
    /// Containers killed and removed.
    pub removed_containers: Vec<String>,
}

/// Ends the jobs of dead host processes and, when Docker is at hand, kills
/// and removes their containers. Without Docker only the database side is
/// done; `clean` removes the containers later.
pub(super) async fn run(
    ctx: &mut Context,
    docker: Option<&Docker>,
) -> Result<Reconciled, OpsError> {
    let mut done = Reconciled::default();
    let mut orphaned_jobs = BTreeSet::new();
    if let Some(docker) = docker {
        let home = labels::home_id(ctx);
        let ours = docker.owned_containers(&[(HOME_LABEL, &home)]).await?;
        for container in ours {
            let dead = labels::host_of(&container.labels).is_none_or(|h| !process::is_alive(h));
            if !dead {
                continue;
            }
            docker.kill_and_remove(&container.id).await?;
            done.removed_containers.push(container.id.clone());
            if let Some(job) = labels::job_of(&container.labels) {
                orphaned_jobs.insert(job.clone());
            }
        }
    }
    done.aborted_jobs = jobs(ctx, &orphaned_jobs)?;
    if !done.aborted_jobs.is_empty() || !done.removed_containers.is_empty() {
        tracing::info!(
            jobs = done.aborted_jobs.len(),
            containers = done.removed_containers.len(),
            "reconciled after a host process that died"
        );
    }
    Ok(done)
}

/// The database side: ends, as aborted, every live job whose host process
/// is gone or whose container was found orphaned, and returns their ids.
pub(super) fn jobs(
    ctx: &mut Context,
    orphaned: &BTreeSet<String>,
) -> Result<Vec<String>, OpsError> {
    let mut aborted = Vec::new();
    for job in ctx.store.live_jobs()? {
        // A job without a recorded host predates host tracking; only a
        // container found orphaned can show it is.
        let host_dead = job.host.is_some_and(|h| !process::is_alive(h));
        if !(host_dead || orphaned.contains(&job.id)) {
            continue;
        }
        if ctx
            .store
            .end_job(&job.id, JobEnd::Aborted, None, Some(REASON))?
            .is_some()
        {
            aborted.push(job.id.clone());
        }
        remove_folder(ctx, &job.id);
    }
    Ok(aborted)
}

/// A dead job's gateway folder; nothing serves its socket any more.
fn remove_folder(ctx: &Context, job_id: &str) {
    let folder = super::job::folder::path(ctx, job_id);
    match std::fs::remove_dir_all(&folder) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %folder.display(), error = %e, "could not remove a job folder")
        }
    }
}
