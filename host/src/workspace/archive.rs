//! Unpacking the workspace a job sends back: a tar stream written by the
//! relay inside the container, which the job itself could have replaced.
//! So it is read as hostile input: only plain relative paths, only folders,
//! regular files and symlinks that stay inside, nothing under a symlinked
//! folder, no more bytes or entries than the workspace could have held.
//! What is refused is skipped and named, not an error: the rest of the
//! job's work is still worth keeping.

use std::io::Read;

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt};
use tar::EntryType;

use super::manifest::{Entry, Manifest, copy_hashed};
use super::{Limits, WorkspaceError, clean_relative, link_stays_inside};

/// What was unpacked, and what was left out and why.
#[derive(Debug, Default)]
pub struct Received {
    pub manifest: Manifest,
    pub skipped: Vec<String>,
}

/// Unpacks `archive` into `dest` (an empty folder).
pub fn unpack(archive: impl Read, dest: &Dir, limits: Limits) -> Result<Received, WorkspaceError> {
    let mut archive = tar::Archive::new(archive);
    let mut received = Received::default();
    let entries = archive.entries().map_err(returned)?;
    for entry in entries {
        let mut entry = entry.map_err(returned)?;
        let raw_path = entry.path().map_err(returned)?.into_owned();
        let Some(path) = clean_relative(&raw_path) else {
            received
                .skipped
                .push(format!("{}: not a plain relative path", raw_path.display()));
            continue;
        };
        if received.manifest.len() >= limits.max_files as usize {
            return Err(returned(format!(
                "more than {} entries, more than the workspace could hold",
                limits.max_files
            )));
        }
        if received.manifest.get(&path).is_some() || received.manifest.under_link(&path) {
            received
                .skipped
                .push(format!("{path}: listed twice or under a symlink"));
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match entry.header().entry_type() {
            EntryType::Directory => {
                make_parents(dest, &path, &mut received.manifest)?;
                dest.create_dir_all(&path).map_err(write(&path))?;
                dest.set_permissions(&path, Permissions::from_mode(mode | 0o700))
                    .map_err(write(&path))?;
                received.manifest.insert(path, Entry::Dir { mode });
            }
            EntryType::Regular | EntryType::Continuous => {
                make_parents(dest, &path, &mut received.manifest)?;
                let budget = limits.max_bytes.saturating_sub(received.manifest.bytes());
                let entry = write_file(dest, &path, mode, &mut entry, budget, limits)?;
                received.manifest.insert(path, entry);
            }
            EntryType::Symlink => {
                let target = entry.link_name().map_err(returned)?;
                let target = target.as_deref().and_then(|t| t.to_str()).unwrap_or("");
                if target.is_empty()
                    || !link_stays_inside(&path, target, |p| received.manifest.link_at(p))
                {
                    received
                        .skipped
                        .push(format!("{path}: a symlink that leaves the workspace"));
                    continue;
                }
                make_parents(dest, &path, &mut received.manifest)?;
                dest.symlink_contents(target, &path).map_err(write(&path))?;
                let target = target.to_owned();
                received.manifest.insert(path, Entry::Symlink { target });
            }
            other => received.skipped.push(format!(
                "{path}: a {other:?} entry, not a file, folder or symlink"
            )),
        }
    }
    Ok(received)
}

/// Folders an archive lists only implicitly (a file `a/b` without `a/`).
fn make_parents(dest: &Dir, path: &str, manifest: &mut Manifest) -> Result<(), WorkspaceError> {
    for (at, _) in path.match_indices('/') {
        let parent = &path[..at];
        if manifest.get(parent).is_none() {
            dest.create_dir_all(parent).map_err(write(parent))?;
            manifest.insert(parent.to_owned(), Entry::Dir { mode: 0o755 });
        }
    }
    Ok(())
}

fn write_file(
    dest: &Dir,
    path: &str,
    mode: u32,
    content: &mut impl Read,
    budget: u64,
    limits: Limits,
) -> Result<Entry, WorkspaceError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    let mut file = dest.open_with(path, &options).map_err(write(path))?;
    let (size, sha256) = copy_hashed(content, &mut file, budget).map_err(|e| match e {
        Some(source) => WorkspaceError::Write {
            path: path.to_owned(),
            source,
        },
        None => returned(format!(
            "more than {} bytes, more than the workspace could hold",
            limits.max_bytes
        )),
    })?;
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(write(path))?;
    Ok(Entry::File { mode, size, sha256 })
}

fn returned(reason: impl ToString) -> WorkspaceError {
    WorkspaceError::Returned {
        reason: reason.to_string(),
    }
}

fn write(path: &str) -> impl FnOnce(std::io::Error) -> WorkspaceError + '_ {
    move |source| WorkspaceError::Write {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    const LIMITS: Limits = Limits {
        max_bytes: 1024,
        max_files: 10,
    };

    /// A tar with raw header fields, so tests can write what a hostile job would.
    fn archive(entries: &[(&str, EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            let name = header.as_gnu_mut().unwrap();
            name.name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            if !link.is_empty() {
                header.set_link_name(link).unwrap();
            }
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn unpack_into(bytes: &[u8]) -> (tempfile::TempDir, Result<Received, WorkspaceError>) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        let result = unpack(bytes, &dir, LIMITS);
        (tmp, result)
    }

    #[test]
    fn files_folders_and_inner_links_are_unpacked_and_hashed() {
        let tar = archive(&[
            ("src/", EntryType::Directory, b"", ""),
            ("src/main.py", EntryType::Regular, b"print(1)\n", ""),
            ("docs/readme", EntryType::Regular, b"hi", ""),
            ("latest", EntryType::Symlink, b"", "src/main.py"),
        ]);
        let (tmp, received) = unpack_into(&tar);
        let received = received.unwrap();
        assert!(received.skipped.is_empty(), "{:?}", received.skipped);
        let paths: Vec<_> = received.manifest.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["docs", "docs/readme", "latest", "src", "src/main.py"]
        );
        assert_eq!(
            std::fs::read(tmp.path().join("src/main.py")).unwrap(),
            b"print(1)\n"
        );
    }

    #[test]
    fn hostile_entries_are_skipped_and_named() {
        let tar = archive(&[
            ("../escape", EntryType::Regular, b"x", ""),
            ("/abs", EntryType::Regular, b"x", ""),
            ("out", EntryType::Symlink, b"", "../../etc"),
            ("up", EntryType::Symlink, b"", "."),
            ("up/inner", EntryType::Regular, b"x", ""),
            ("dev", EntryType::Char, b"", ""),
            ("ok", EntryType::Regular, b"fine", ""),
        ]);
        let (tmp, received) = unpack_into(&tar);
        let received = received.unwrap();
        assert_eq!(received.skipped.len(), 5, "{:?}", received.skipped);
        assert!(!tmp.path().join("out").exists());
        assert!(
            tmp.path()
                .parent()
                .unwrap()
                .join("escape")
                .metadata()
                .is_err()
        );
        let paths: Vec<_> = received.manifest.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["ok", "up"]);
    }

    #[test]
    fn more_than_the_workspace_could_hold_is_an_error() {
        let big = vec![b'x'; 1025];
        let tar = archive(&[("big", EntryType::Regular, &big, "")]);
        let (_tmp, received) = unpack_into(&tar);
        assert!(matches!(received, Err(WorkspaceError::Returned { .. })));
        let names: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
        let many: Vec<_> = names
            .iter()
            .map(|n| (n.as_str(), EntryType::Regular, &b""[..], ""))
            .collect();
        let (_tmp, received) = unpack_into(&archive(&many));
        assert!(matches!(received, Err(WorkspaceError::Returned { .. })));
    }
}
