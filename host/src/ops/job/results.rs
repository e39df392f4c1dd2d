//! What a command job left behind, kept under `results/<id>/`: the final
//! workspace (`workspace/`), what changed against the copy the job got
//! (`changes.json`) and a unified diff of it (`diff.patch`). `execute`
//! writes them when the job ends; `result` reads them back, and applies the
//! changes to the owner's folder only when asked.

use std::path::PathBuf;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};

use crate::workspace::{self, Change, ChangeKind, Manifest, Received};

use super::super::{Context, OpsError};

const CHANGES: &str = "changes.json";
const DIFF: &str = "diff.patch";
pub(crate) const WORKSPACE_DIR: &str = "workspace";

/// What `changes.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub job_id: String,
    /// The owner's folder the job's copy came from.
    pub folder: String,
    pub changes: Vec<Change>,
    /// Entries of the returned archive that were refused, and why.
    pub skipped: Vec<String>,
}

/// A command job's workspace as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceSummary {
    pub folder: String,
    /// Where the final workspace, `changes.json` and `diff.patch` are.
    pub result: PathBuf,
    /// Whether the container sent its workspace back; when not (it was
    /// killed before it could), there is nothing to apply.
    pub returned: bool,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub skipped: Vec<String>,
}

impl WorkspaceSummary {
    pub fn from_stored(stored: &Stored, result: PathBuf) -> WorkspaceSummary {
        let of = |kind: ChangeKind| {
            stored
                .changes
                .iter()
                .filter(|c| c.kind == kind)
                .map(|c| c.path.clone())
                .collect()
        };
        WorkspaceSummary {
            folder: stored.folder.clone(),
            result,
            returned: true,
            added: of(ChangeKind::Added),
            changed: of(ChangeKind::Changed),
            removed: of(ChangeKind::Removed),
            skipped: stored.skipped.clone(),
        }
    }
}

/// `results/<id>/` in the data folder.
pub(crate) fn path(ctx: &Context, job_id: &str) -> PathBuf {
    ctx.home.root().join("results").join(job_id)
}

/// Creates `results/<id>/workspace/`, empty, for the returned archive.
pub(crate) fn create(ctx: &Context, job_id: &str) -> Result<Dir, OpsError> {
    let dir = path(ctx, job_id).join(WORKSPACE_DIR);
    let write_err = |source| OpsError::Write {
        path: dir.clone(),
        source,
    };
    ctx.home.subdir("results")?;
    std::fs::create_dir_all(&dir).map_err(write_err)?;
    Dir::open_ambient_dir(&dir, ambient_authority()).map_err(write_err)
}

/// Compares what came back with the copy the job got (`base`, still in the
/// job folder) and writes `changes.json` and `diff.patch`.
pub(crate) fn save(
    ctx: &Context,
    job_id: &str,
    folder: &str,
    before: &Manifest,
    base: &Dir,
    received: Received,
) -> Result<WorkspaceSummary, OpsError> {
    let root = path(ctx, job_id);
    let write_err = |path: PathBuf| move |source| OpsError::Write { path, source };
    let after = Dir::open_ambient_dir(root.join(WORKSPACE_DIR), ambient_authority())
        .map_err(write_err(root.join(WORKSPACE_DIR)))?;
    let changes = workspace::compare(before, &received.manifest);
    let diff = workspace::unified_diff(&changes, base, &after);
    let stored = Stored {
        job_id: job_id.to_owned(),
        folder: folder.to_owned(),
        changes,
        skipped: received.skipped,
    };
    let json = serde_json::to_vec_pretty(&stored).expect("changes are plain data");
    std::fs::write(root.join(CHANGES), json).map_err(write_err(root.join(CHANGES)))?;
    std::fs::write(root.join(DIFF), diff).map_err(write_err(root.join(DIFF)))?;
    Ok(WorkspaceSummary::from_stored(&stored, root))
}

/// What `changes.json` of job `job_id` says, if the job left one.
pub(crate) fn load(ctx: &Context, job_id: &str) -> Result<Option<(Stored, PathBuf)>, OpsError> {
    let root = path(ctx, job_id);
    let file = root.join(CHANGES);
    let text = match std::fs::read(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(OpsError::Read { path: file, source }),
    };
    let stored = serde_json::from_slice(&text).map_err(|e| OpsError::InvalidInput {
        what: format!(
            "{} is damaged ({e}); the job's result cannot be read",
            file.display()
        ),
    })?;
    Ok(Some((stored, root)))
}

/// The unified diff a job left, if any.
pub(crate) fn diff(root: &std::path::Path) -> Result<String, OpsError> {
    std::fs::read_to_string(root.join(DIFF)).map_err(|source| OpsError::Read {
        path: root.join(DIFF),
        source,
    })
}
