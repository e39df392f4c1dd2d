//! A job's log file, `logs/<id>.log`: its stdout and stderr as they arrived
//! (what `logs` shows and `logs --follow` streams), plus the last line of
//! its stderr, which usually says why a job that failed did.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::runner::Stream;

use super::super::{Context, OpsError};

/// How much of the end of stderr is kept to find its last line.
const STDERR_TAIL_BYTES: usize = 4096;

pub(crate) struct JobLog {
    file: File,
    path: PathBuf,
    stderr_tail: Vec<u8>,
}

impl JobLog {
    /// Opens (appending) the log at `path`, creating its folder (0700) and
    /// the file (0600): a job's output is the owner's alone.
    pub fn open(path: &Path) -> Result<JobLog, OpsError> {
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
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        Ok(JobLog {
            file,
            path: path.to_path_buf(),
            stderr_tail: Vec::new(),
        })
    }

    /// Appends a chunk of output. A failed write is logged, not fatal: the
    /// job goes on and its output still reaches the caller.
    pub fn chunk(&mut self, stream: Stream, bytes: &[u8]) {
        if let Err(e) = self.file.write_all(bytes) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not write a job's log");
        }
        if matches!(stream, Stream::Stderr) {
            self.stderr_tail.extend_from_slice(bytes);
            let keep_from = self.stderr_tail.len().saturating_sub(STDERR_TAIL_BYTES);
            self.stderr_tail.drain(..keep_from);
        }
    }

    /// The last non-empty line the job wrote to stderr.
    pub fn last_stderr_line(&self) -> Option<String> {
        String::from_utf8_lossy(&self.stderr_tail)
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .map(|line| line.trim().to_owned())
    }
}

/// `logs/<id>.log` in the data folder.
pub(crate) fn log_path(ctx: &Context, job_id: &str) -> PathBuf {
    ctx.home.root().join("logs").join(format!("{job_id}.log"))
}
