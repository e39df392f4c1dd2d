//! A build context: a `Dockerfile` plus the files it copies, from memory
//! (the job image the binary carries) or from this machine's own files (an
//! agent image assembled from host binaries, hundreds of MB). The tar is
//! written to a temporary file and streamed to the engine, so a large
//! context is never held in memory whole.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;

use bytes::Bytes;
use futures_util::Stream;

use super::error::RunnerError;

/// Bytes read from the tar file per chunk sent to the engine.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Bytes(Cow<'static, [u8]>),
    /// A file on this machine, read when the tar is written.
    Host(PathBuf),
    Symlink(String),
}

/// One entry of a build context.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Relative path inside the context, `/`-separated (e.g. `bin/agent`).
    path: String,
    content: Content,
    /// Unix permission bits, e.g. `0o755`.
    mode: u32,
}

/// A build context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildContext {
    entries: Vec<Entry>,
}

impl BuildContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file; `bytes` may be a `Vec<u8>` or a `&'static [u8]`
    /// (e.g. from `include_bytes!`).
    pub fn file(
        self,
        path: impl Into<String>,
        bytes: impl Into<Cow<'static, [u8]>>,
        mode: u32,
    ) -> Self {
        self.add(path, Content::Bytes(bytes.into()), mode)
    }

    /// Adds the file at `host` on this machine (read when the context is
    /// sent), following symlinks.
    pub fn host_file(self, path: impl Into<String>, host: impl Into<PathBuf>, mode: u32) -> Self {
        self.add(path, Content::Host(host.into()), mode)
    }

    /// Adds a symlink to `target`.
    pub fn symlink(self, path: impl Into<String>, target: impl Into<String>) -> Self {
        self.add(path, Content::Symlink(target.into()), 0o777)
    }

    fn add(mut self, path: impl Into<String>, content: Content, mode: u32) -> Self {
        self.entries.push(Entry {
            path: path.into(),
            content,
            mode,
        });
        self
    }

    /// The context as an uncompressed tar. Deterministic: entries are sorted
    /// by path and carry mtime 0, uid/gid 0 and no user/group names, so the
    /// same files give the same bytes (and the engine's build cache hits).
    pub fn write_tar(&self, out: impl Write) -> Result<(), RunnerError> {
        let mut entries: Vec<&Entry> = self.entries.iter().collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        for pair in entries.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(RunnerError::BuildContext {
                    path: pair[0].path.clone(),
                    reason: "the path was added twice".into(),
                });
            }
        }
        let mut builder = tar::Builder::new(out);
        for entry in entries {
            check_context_path(&entry.path)?;
            append(&mut builder, entry).map_err(|e| RunnerError::BuildContext {
                path: entry.path.clone(),
                reason: e.to_string(),
            })?;
        }
        builder
            .into_inner()
            .and_then(|mut out| out.flush())
            .map_err(|e| RunnerError::BuildContext {
                path: "<end of archive>".into(),
                reason: e.to_string(),
            })
    }

    /// The tar in memory, for small contexts and tests.
    pub fn to_tar(&self) -> Result<Vec<u8>, RunnerError> {
        let mut tar = Vec::new();
        self.write_tar(&mut tar)?;
        Ok(tar)
    }

    /// The tar in an unnamed temporary file, rewound.
    pub(crate) fn tar_file(&self) -> Result<File, RunnerError> {
        let io_error = |e: io::Error| RunnerError::BuildContext {
            path: "<temporary file>".into(),
            reason: e.to_string(),
        };
        let mut file = tempfile::tempfile().map_err(io_error)?;
        self.write_tar(io::BufWriter::new(&mut file))?;
        file.rewind().map_err(io_error)?;
        Ok(file)
    }
}

fn append(builder: &mut tar::Builder<impl Write>, entry: &Entry) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(entry.mode & 0o7777);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_username("")?;
    header.set_groupname("")?;
    match &entry.content {
        Content::Bytes(bytes) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(bytes.len() as u64);
            builder.append_data(&mut header, &entry.path, bytes.as_ref())
        }
        Content::Host(path) => {
            let file = File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(file.metadata()?.len());
            builder.append_data(&mut header, &entry.path, file)
        }
        Content::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, &entry.path, target)
        }
    }
}

/// The file's bytes as a stream of chunks, read on a blocking thread.
pub(crate) fn chunks(file: File) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let (send, receive) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        loop {
            let mut buffer = vec![0u8; CHUNK];
            let chunk = match file.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => {
                    buffer.truncate(n);
                    Ok(Bytes::from(buffer))
                }
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if send.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    futures_util::stream::unfold(receive, |mut receive| async move {
        receive.recv().await.map(|chunk| (chunk, receive))
    })
}

fn check_context_path(path: &str) -> Result<(), RunnerError> {
    let bad = |reason: &str| {
        Err(RunnerError::BuildContext {
            path: path.to_string(),
            reason: reason.to_string(),
        })
    };
    if path.is_empty() {
        return bad("the path is empty");
    }
    if path.starts_with('/') {
        return bad("the path must be relative to the context root");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("the path must not contain empty, `.` or `..` components");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_is_deterministic_and_order_independent() {
        let a = BuildContext::new()
            .file("Dockerfile", b"FROM scratch\n".as_slice(), 0o644)
            .file("bin/tool", vec![1, 2, 3], 0o755);
        let b = BuildContext::new()
            .file("bin/tool", vec![1, 2, 3], 0o755)
            .file("Dockerfile", b"FROM scratch\n".as_slice(), 0o644);
        let tar_a = a.to_tar().expect("tar");
        assert_eq!(tar_a, a.to_tar().expect("tar"));
        assert_eq!(tar_a, b.to_tar().expect("tar"));

        let mut archive = tar::Archive::new(tar_a.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let header = entry.header();
            assert_eq!(header.mtime().expect("mtime"), 0);
            assert_eq!(header.uid().expect("uid"), 0);
            assert_eq!(header.gid().expect("gid"), 0);
            seen.push((
                entry.path().expect("path").display().to_string(),
                header.mode().expect("mode"),
            ));
        }
        assert_eq!(
            seen,
            vec![
                ("Dockerfile".to_string(), 0o644),
                ("bin/tool".to_string(), 0o755)
            ]
        );
    }

    #[test]
    fn long_paths_survive() {
        let long = format!("{}/file", "d".repeat(150));
        let tar = BuildContext::new()
            .file(long.clone(), vec![7], 0o600)
            .to_tar()
            .expect("tar");
        let mut archive = tar::Archive::new(tar.as_slice());
        let entry = archive
            .entries()
            .expect("entries")
            .next()
            .expect("one")
            .expect("entry");
        assert_eq!(entry.path().expect("path").display().to_string(), long);
    }

    #[test]
    fn bad_context_paths_are_refused() {
        for bad in ["", "/abs", "../up", "a/../b", "a//b", "./a"] {
            let result = BuildContext::new().file(bad, vec![], 0o644).to_tar();
            assert!(
                matches!(result, Err(RunnerError::BuildContext { .. })),
                "{bad:?}"
            );
        }
        let dup = BuildContext::new()
            .file("a", vec![], 0o644)
            .file("a", vec![1], 0o644)
            .to_tar();
        assert!(matches!(dup, Err(RunnerError::BuildContext { .. })));
    }

    #[test]
    fn host_files_and_symlinks_go_in_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tool"), b"#!bin").unwrap();
        let tar = BuildContext::new()
            .host_file("usr/bin/tool", dir.path().join("tool"), 0o755)
            .symlink("bin/sh", "/usr/bin/tool")
            .to_tar()
            .unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let link = entry.link_name().unwrap().map(|l| l.display().to_string());
            let mut body = String::new();
            entry.read_to_string(&mut body).unwrap();
            seen.push((entry.path().unwrap().display().to_string(), link, body));
        }
        assert_eq!(
            seen,
            [
                ("bin/sh".into(), Some("/usr/bin/tool".into()), String::new()),
                ("usr/bin/tool".into(), None, "#!bin".into())
            ]
        );
        let missing = BuildContext::new().host_file("x", dir.path().join("none"), 0o644);
        assert!(matches!(
            missing.to_tar(),
            Err(RunnerError::BuildContext { .. })
        ));
    }
}
