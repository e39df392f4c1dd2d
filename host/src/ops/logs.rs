//! `logs`: a job's stored output (stdout and stderr, as they arrived), the
//! newest job's by default, optionally only its last lines, and with
//! `--follow` streamed until the job ends.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::time::Duration;

use serde::Serialize;

use crate::store::{JobRow, StoreError};

use super::job::log::log_path;
use super::{Context, OpsError, reconcile};

/// How often `--follow` looks for new output and for the job's end.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    /// Default: the newest job.
    pub job: Option<String>,
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Keep streaming while the job runs.
    pub follow: bool,
}

/// The job whose log was shown, as it stood when showing ended.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    pub job: JobRow,
    pub bytes: u64,
}

/// Writes the log to `sink` and returns the job.
pub fn run(
    ctx: &mut Context,
    opts: &LogsOptions,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<Shown, OpsError> {
    reconcile::jobs(ctx, &Default::default())?;
    let job = match &opts.job {
        Some(id) => ctx
            .store
            .job(id)?
            .ok_or_else(|| StoreError::JobNotFound { job_id: id.clone() })?,
        None => ctx
            .store
            .jobs(1)?
            .pop()
            .ok_or_else(|| OpsError::InvalidInput {
                what: "no jobs yet; run one with `claude-max-market execute`".into(),
            })?,
    };
    let path = log_path(ctx, &job.id);
    let read_err = |source| OpsError::Read {
        path: path.clone(),
        source,
    };
    let write_err = |source| OpsError::Write {
        path: "standard output".into(),
        source,
    };
    let mut file = match File::open(&path) {
        Ok(file) => Some(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(read_err(e)),
    };
    let mut shown = 0;
    if let Some(file) = file.as_mut() {
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(read_err)?;
        let start = opts.tail.map_or(0, |n| tail_start(&text, n));
        sink(&text[start..]).map_err(write_err)?;
        shown = text.len() as u64;
    }
    let mut job = job;
    while opts.follow && job.is_live() {
        std::thread::sleep(FOLLOW_POLL);
        // The file appears when the container starts.
        if file.is_none() {
            file = File::open(&path).ok();
        }
        if let Some(file) = file.as_mut() {
            shown += copy_new(file, shown, sink).map_err(read_err)?;
        }
        reconcile::jobs(ctx, &Default::default())?;
        job = ctx.store.job(&job.id)?.unwrap_or(job);
    }
    if opts.follow
        && let Some(file) = file.as_mut()
    {
        shown += copy_new(file, shown, sink).map_err(read_err)?;
    }
    Ok(Shown { job, bytes: shown })
}

/// Copies what was appended to `file` after `offset`.
fn copy_new(
    file: &mut File,
    offset: u64,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    file.seek(SeekFrom::Start(offset))?;
    let mut new = Vec::new();
    file.read_to_end(&mut new)?;
    if !new.is_empty() {
        sink(&new)?;
    }
    Ok(new.len() as u64)
}

/// Where the last `lines` lines of `text` start. A final line without a
/// newline still counts as a line.
fn tail_start(text: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return text.len();
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    body.iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(lines - 1)
        .map_or(0, |(at, _)| at + 1)
}

#[cfg(test)]
mod tests {
    use super::tail_start;

    #[test]
    fn tail_counts_lines_from_the_end() {
        let text = b"one\ntwo\nthree\n";
        assert_eq!(&text[tail_start(text, 1)..], b"three\n");
        assert_eq!(&text[tail_start(text, 2)..], b"two\nthree\n");
        assert_eq!(&text[tail_start(text, 9)..], text);
        assert_eq!(&text[tail_start(text, 0)..], b"");
        let open = b"one\ntwo";
        assert_eq!(&open[tail_start(open, 1)..], b"two");
    }
}
