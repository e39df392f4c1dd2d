//! The labels a job container carries beyond the runner's own: which data
//! folder and which host process it belongs to (so a later invocation can
//! tell that process died), and which policy code admitted the job (for
//! `docker inspect`).

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use crate::runner::labels::{HOME_LABEL, HOST_PID_LABEL, HOST_START_LABEL, JOB_ID_LABEL, label};
use crate::store::HostProcess;

use super::{Context, process};

/// Names this data folder in labels without spelling out its path.
pub(super) fn home_id(ctx: &Context) -> String {
    let root = ctx.home.root();
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    hex::encode(&Sha256::digest(root.as_os_str().as_encoded_bytes())[..8])
}

/// Labels for a job run by this process.
pub(super) fn for_job(
    ctx: &Context,
    job_id: &str,
    policies: &[(String, String)],
) -> BTreeMap<String, String> {
    let host = process::current();
    let mut labels = BTreeMap::from([
        (JOB_ID_LABEL.to_owned(), job_id.to_owned()),
        (HOME_LABEL.to_owned(), home_id(ctx)),
        (HOST_PID_LABEL.to_owned(), host.pid.to_string()),
        (HOST_START_LABEL.to_owned(), host.start.to_string()),
    ]);
    for (role, digest) in policies {
        labels.insert(label(&format!("policy.{role}")), digest.clone());
    }
    labels
}

/// The host process named by a container's labels, if they name one.
pub(super) fn host_of(labels: &HashMap<String, String>) -> Option<HostProcess> {
    Some(HostProcess {
        pid: labels.get(HOST_PID_LABEL)?.parse().ok()?,
        start: labels.get(HOST_START_LABEL)?.parse().ok()?,
    })
}

/// The job a container runs.
pub(super) fn job_of(labels: &HashMap<String, String>) -> Option<&String> {
    labels.get(JOB_ID_LABEL)
}
