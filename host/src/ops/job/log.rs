//! A job's log file, `logs/<id>.log`: its stdout and stderr as they arrived
//! (what `logs` shows and `logs --follow` streams), plus the last line of
//! its stderr, which usually says why a job that failed did. When the other
//! stream speaks while a line is open, the open line is ended first: an
//! answer streamed without a final newline would otherwise run into the
//! worker's status line.

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
    /// The stream whose line is open (its last chunk did not end a line).
    open_line: Option<Stream>,
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
            open_line: None,
        })
    }

    /// Appends a chunk of output. A failed write is logged, not fatal: the
    /// job goes on and its output still reaches the caller.
    pub fn chunk(&mut self, stream: Stream, bytes: &[u8]) {
        let Some(&last) = bytes.last() else {
            return;
        };
        let other_line_open = self.open_line.is_some_and(|open| open != stream);
        let written = if other_line_open {
            self.file.write_all(b"\n")
        } else {
            Ok(())
        }
        .and_then(|()| self.file.write_all(bytes));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "could not write a job's log");
        }
        self.open_line = (last != b'\n').then_some(stream);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_line_is_ended_before_the_other_stream_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/job.log");
        let mut log = JobLog::open(&path).unwrap();
        log.chunk(Stream::Stdout, b"Hello, ");
        log.chunk(Stream::Stdout, b"world");
        log.chunk(Stream::Stderr, b"worker: done\n");
        log.chunk(Stream::Stdout, b"next\n");
        log.chunk(Stream::Stderr, b"");
        log.chunk(Stream::Stderr, b"tail");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "Hello, world\nworker: done\nnext\ntail"
        );
        assert_eq!(log.last_stderr_line().as_deref(), Some("tail"));
    }
}
