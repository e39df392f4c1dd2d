//! A job's folder on the host, `jobs/<id>`: the one thing mounted into its
//! container (read-only, at `/run/cmm`). It holds the gateway socket and,
//! for a command job, the relay, the relay's control socket, the copy of
//! the workspace and the command's stdin. It exists from before the
//! decision (the workspace copy is what the policies judge) and is removed
//! when the job is over, whatever happened.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::runner::program::{RELAY_NAME, STDIN_NAME, WORKSPACE_IN};
use crate::runner::relay::RELAY;

use super::super::{Context, OpsError};

/// The user jobs run as when this host runs as root: not root, and not any
/// user this host is likely to have.
const JOB_USER_WHEN_ROOT: (u32, u32) = (65532, 65532);

pub(crate) struct JobFolder {
    path: PathBuf,
    /// Whom the container runs as.
    user: (u32, u32),
}

impl JobFolder {
    /// Creates `jobs/<id>` (0700) and decides whom the container runs as: a
    /// fixed unprivileged user, owning the folder, when this host is root;
    /// otherwise this host's own user, which already owns it. Either way
    /// nobody else on the host can reach what is inside.
    pub fn create(ctx: &Context, job_id: &str) -> Result<JobFolder, OpsError> {
        let path = path(ctx, job_id);
        let write_err = |source| OpsError::Write {
            path: path.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(write_err)?;
        let meta = fs::metadata(&path).map_err(write_err)?;
        let user = if meta.uid() == 0 {
            std::os::unix::fs::chown(
                &path,
                Some(JOB_USER_WHEN_ROOT.0),
                Some(JOB_USER_WHEN_ROOT.1),
            )
            .map_err(write_err)?;
            JOB_USER_WHEN_ROOT
        } else {
            (meta.uid(), meta.gid())
        };
        Ok(JobFolder { path, user })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container's `uid:gid`.
    pub fn user(&self) -> (u32, u32) {
        self.user
    }

    /// The owner to give sockets and copied files, when this host is root
    /// and so must hand them to the container's user.
    pub fn owner(&self) -> Option<(u32, u32)> {
        (self.user == JOB_USER_WHEN_ROOT).then_some(self.user)
    }

    /// An empty `in/` for the workspace copy.
    pub fn workspace_in(&self) -> Result<Dir, OpsError> {
        let path = self.path.join(WORKSPACE_IN);
        let write_err = |source| OpsError::Write {
            path: path.clone(),
            source,
        };
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(write_err)?;
        if let Some((uid, gid)) = self.owner() {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(write_err)?;
        }
        Dir::open_ambient_dir(&path, ambient_authority()).map_err(write_err)
    }

    /// Puts the relay (read and executed by the container's user) and the
    /// command's stdin (read by it) into the folder.
    pub fn prepare_command(&self, stdin: Option<&str>) -> Result<(), OpsError> {
        self.write(RELAY_NAME, RELAY, 0o755)?;
        if let Some(text) = stdin {
            self.write(STDIN_NAME, text.as_bytes(), 0o600)?;
        }
        Ok(())
    }

    fn write(&self, name: &str, content: &[u8], mode: u32) -> Result<(), OpsError> {
        let path = self.path.join(name);
        let write_err = |source| OpsError::Write {
            path: path.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(write_err)?;
        file.write_all(content).map_err(write_err)?;
        if let Some((uid, gid)) = self.owner() {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(write_err)?;
        }
        Ok(())
    }
}

impl Drop for JobFolder {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a job folder");
        }
    }
}

/// `jobs/<id>` in the data folder.
pub(crate) fn path(ctx: &Context, job_id: &str) -> PathBuf {
    ctx.home.root().join("jobs").join(job_id)
}
