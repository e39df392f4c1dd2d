//! `clean`: removes what this tool left behind, and only that. Containers
//! are found by the labels this tool puts on them and by this data folder's
//! id, so other containers (and other data folders' jobs) are never touched.
//! Running jobs are stopped only with `force`.

use serde::Serialize;

use crate::runner::Docker;
use crate::runner::labels::HOME_LABEL;
use crate::store::JobEnd;

use super::context::runtime;
use super::reconcile::{self, Reconciled};
use super::{Context, OpsError, job, labels};

#[derive(Debug, Clone, Serialize)]
pub struct CleanedContainer {
    pub id: String,
    pub name: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cleaned {
    /// Jobs of dead host processes, ended as aborted.
    pub reconciled: Reconciled,
    pub removed_containers: Vec<CleanedContainer>,
    /// Running containers left alone (no `force`).
    pub left_running: Vec<CleanedContainer>,
    /// Job folders no live job uses any more.
    pub removed_folders: Vec<String>,
}

pub fn run(ctx: &mut Context, force: bool) -> Result<Cleaned, OpsError> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let docker = Docker::connect().await?;
        let reconciled = reconcile::run(ctx, Some(&docker)).await?;
        let home = labels::home_id(ctx);
        let mut removed_containers = Vec::new();
        let mut left_running = Vec::new();
        for c in docker.owned_containers(&[(HOME_LABEL, &home)]).await? {
            let entry = CleanedContainer {
                job_id: labels::job_of(&c.labels).cloned(),
                id: c.id,
                name: c.name,
                state: c.state,
            };
            let running = matches!(entry.state.as_str(), "running" | "restarting" | "paused");
            if running && !force {
                left_running.push(entry);
                continue;
            }
            if let (true, Some(job)) = (running, &entry.job_id) {
                // Ended first, so the process running it records the stop
                // as asked for rather than as a failure.
                ctx.store.end_job(
                    job,
                    JobEnd::Cancelled,
                    None,
                    Some("stopped by `clean --force`"),
                )?;
            }
            docker.kill_and_remove(&entry.id).await?;
            removed_containers.push(entry);
        }
        let removed_folders = stale_folders(ctx)?;
        Ok(Cleaned {
            reconciled,
            removed_containers,
            left_running,
            removed_folders,
        })
    })
}

/// Removes job folders whose job is not live.
fn stale_folders(ctx: &Context) -> Result<Vec<String>, OpsError> {
    let jobs = ctx.home.root().join("jobs");
    let entries = match std::fs::read_dir(&jobs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(OpsError::Read { path: jobs, source }),
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let live = ctx.store.job(&name)?.is_some_and(|job| job.is_live());
        if live {
            continue;
        }
        let path = job::folder::path(ctx, &name);
        std::fs::remove_dir_all(&path).map_err(|source| OpsError::Write { path, source })?;
        removed.push(name);
    }
    Ok(removed)
}
