//! The relay's channel back to the host. When a job's command ends, the
//! relay in the container connects to a Unix socket in the job folder and
//! sends one JSON line (its end report) followed by a tar of `/workspace`.
//! The host listens for exactly one connection; anything in the container
//! could be the one that connects, so the report is information (why a job
//! ended), never trusted for accounting, and the archive goes through
//! `archive::unpack` with all its checks.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use super::archive::{Received, unpack};
use super::{Limits, WorkspaceError};

/// A report line longer than this is not the relay's.
const MAX_REPORT_BYTES: u64 = 64 * 1024;

/// Why the relay could not run the command, as it reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayError {
    /// `not_found`, `not_executable`, `workspace_copy` or `spawn`.
    pub kind: String,
    pub message: String,
}

/// How the command ended, as the relay saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndReport {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The workspace ran out of space or inodes and the command was stopped.
    #[serde(default)]
    pub workspace_full: bool,
    pub error: Option<RelayError>,
}

/// What came back on the channel.
#[derive(Debug)]
pub struct Returned {
    pub report: EndReport,
    /// The unpacked workspace, when one was expected and sent.
    pub workspace: Option<Received>,
}

/// A listening channel for one job.
pub struct Channel {
    path: PathBuf,
    task: JoinHandle<Result<Returned, WorkspaceError>>,
}

impl Channel {
    /// Listens at `socket` (mode 0600, given to `owner` when set, so only
    /// the container's user and this host can connect). With `dest`, the
    /// archive after the report is unpacked there within `limits`.
    pub fn listen(
        socket: &Path,
        owner: Option<(u32, u32)>,
        dest: Option<(Dir, Limits)>,
    ) -> Result<Channel, WorkspaceError> {
        let bind_err = |source| WorkspaceError::Write {
            path: socket.display().to_string(),
            source,
        };
        let listener = UnixListener::bind(socket).map_err(bind_err)?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
            .map_err(bind_err)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(socket, Some(uid), Some(gid)).map_err(bind_err)?;
        }
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.map_err(returned)?;
            let stream = stream.into_std().map_err(returned)?;
            stream.set_nonblocking(false).map_err(returned)?;
            tokio::task::spawn_blocking(move || receive(stream, dest))
                .await
                .map_err(returned)?
        });
        Ok(Channel {
            path: socket.to_path_buf(),
            task,
        })
    }

    /// What the relay sent, waiting at most `wait` (the container has ended
    /// by the time this is called, so the relay has sent all it will).
    /// `None` when nothing usable came.
    pub async fn finish(self, wait: Duration) -> Option<Result<Returned, WorkspaceError>> {
        let Channel { path, mut task } = self;
        let outcome = tokio::time::timeout(wait, &mut task).await;
        let _ = std::fs::remove_file(&path);
        match outcome {
            Ok(Ok(result)) => Some(result),
            Ok(Err(join)) => Some(Err(returned(join))),
            Err(_) => {
                task.abort();
                None
            }
        }
    }
}

fn receive(
    stream: std::os::unix::net::UnixStream,
    dest: Option<(Dir, Limits)>,
) -> Result<Returned, WorkspaceError> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    (&mut reader)
        .take(MAX_REPORT_BYTES)
        .read_line(&mut line)
        .map_err(returned)?;
    let report: EndReport = serde_json::from_str(line.trim_end())
        .map_err(|e| returned(format!("the end report is not the relay's JSON: {e}")))?;
    let workspace = match dest {
        Some((dir, limits)) => Some(unpack(reader, &dir, limits)?),
        None => None,
    };
    Ok(Returned { report, workspace })
}

fn returned(reason: impl ToString) -> WorkspaceError {
    WorkspaceError::Returned {
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;
    use std::io::Write;

    #[tokio::test]
    async fn a_report_and_an_archive_arrive() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("control.sock");
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let dir = Dir::open_ambient_dir(&out, ambient_authority()).unwrap();
        let limits = Limits {
            max_bytes: 1024,
            max_files: 10,
        };
        let channel = Channel::listen(&socket, None, Some((dir, limits))).unwrap();
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        archive
            .append_data(&mut header, "f.txt", &b"hi\n"[..])
            .unwrap();
        let archive = archive.into_inner().unwrap();
        let sent = socket.clone();
        std::thread::spawn(move || {
            let mut s = std::os::unix::net::UnixStream::connect(sent).unwrap();
            s.write_all(
                b"{\"exit_code\":3,\"signal\":null,\"workspace_full\":false,\"error\":null}\n",
            )
            .unwrap();
            s.write_all(&archive).unwrap();
        })
        .join()
        .unwrap();
        let returned = channel
            .finish(Duration::from_secs(5))
            .await
            .expect("the relay's report")
            .unwrap();
        assert_eq!(returned.report.exit_code, Some(3));
        let workspace = returned.workspace.unwrap();
        assert!(workspace.manifest.get("f.txt").is_some());
        assert_eq!(std::fs::read(out.join("f.txt")).unwrap(), b"hi\n");
        assert!(!socket.exists(), "the socket is removed");
    }

    #[tokio::test]
    async fn silence_is_nothing_and_does_not_hang() {
        let tmp = tempfile::tempdir().unwrap();
        let channel = Channel::listen(&tmp.path().join("c.sock"), None, None).unwrap();
        assert!(channel.finish(Duration::from_millis(50)).await.is_none());
    }
}
