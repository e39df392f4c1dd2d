//! `opt-out`: withdraw consent. No job is admitted afterwards, and this
//! node's running jobs are stopped at once: each is ended as cancelled with
//! the reason on the audit log, then its container is killed. Usage history
//! and the audit log stay, so the user can still review them.

use serde::Serialize;

use crate::runner::Docker;
use crate::runner::labels::{HOME_LABEL, JOB_ID_LABEL};
use crate::store::{ConsentEvent, ConsentState, JobEnd};

use super::context::runtime;
use super::{Context, OpsError, labels};

const REASON: &str = "the owner opted out";

#[derive(Debug, Serialize)]
pub struct OptedOut {
    pub consent: ConsentState,
    /// Jobs that were running and are now stopped.
    pub stopped_jobs: Vec<String>,
    /// Why a stopped job's container could not be killed, when Docker was
    /// unreachable; `clean --force` finishes the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers_left: Option<String>,
}

/// Records the opt-out and stops running jobs. `confirmed` must be true:
/// the CLI gets it from `--yes` or an interactive prompt.
pub fn run(ctx: &mut Context, confirmed: bool) -> Result<OptedOut, OpsError> {
    if !confirmed {
        return Err(OpsError::NeedsConfirmation { what: "opting out" });
    }
    ctx.store.record_consent(&ConsentEvent::OptOut)?;
    let mut stopped_jobs = Vec::new();
    for job in ctx.store.live_jobs()? {
        if ctx
            .store
            .end_job(&job.id, JobEnd::Cancelled, None, Some(REASON))?
            .is_some()
        {
            stopped_jobs.push(job.id);
        }
    }
    let containers_left = if stopped_jobs.is_empty() {
        None
    } else {
        kill_containers(ctx, &stopped_jobs)
            .err()
            .map(|e| e.to_string())
    };
    Ok(OptedOut {
        consent: ctx.store.consent_state()?,
        stopped_jobs,
        containers_left,
    })
}

fn kill_containers(ctx: &Context, jobs: &[String]) -> Result<(), OpsError> {
    let home = labels::home_id(ctx);
    runtime()?.block_on(async {
        let docker = Docker::connect().await?;
        for job in jobs {
            let filters = [(HOME_LABEL, home.as_str()), (JOB_ID_LABEL, job.as_str())];
            for container in docker.owned_containers(&filters).await? {
                docker.kill_and_remove(&container.id).await?;
            }
        }
        Ok(())
    })
}
