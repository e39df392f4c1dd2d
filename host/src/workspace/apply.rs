//! Copying a job's changes into the owner's folder, which happens only when
//! the owner asks (`result --apply`). Before writing anything, every path a
//! change touches is compared with what the job started from: a file the
//! owner edited meanwhile is a conflict, and conflicts stop the whole apply
//! unless forced. Files are written to a temporary name and renamed into
//! place, so a reader never sees half a file.

use std::io::Write;

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt};
use serde::Serialize;

use super::changes::{Change, ChangeKind};
use super::manifest::{Entry, hash};
use super::{WorkspaceError, link_stays_inside};

/// A path the owner changed since the job took its copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub path: String,
    /// What the job started from, what is there now (`None`: nothing).
    pub expected: Option<Entry>,
    pub found: Option<Entry>,
}

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub written: usize,
    pub removed: usize,
    /// Paths already as the job left them.
    pub unchanged: usize,
}

/// Applies `changes` to `target`, taking new content from `result`.
/// Refuses, writing nothing, when a touched path is neither what the job
/// started from nor what it produced, unless `force`.
pub fn apply(
    target: &Dir,
    result: &Dir,
    changes: &[Change],
    force: bool,
) -> Result<Applied, WorkspaceError> {
    let mut applied = Applied::default();
    let mut conflicts = Vec::new();
    let mut todo = Vec::new();
    for change in changes {
        let found = current(target, &change.path)?;
        if found == change.after
            || (found.as_ref().is_some_and(Entry::is_dir)
                && change.after.as_ref().is_some_and(Entry::is_dir))
        {
            applied.unchanged += 1;
        } else if found == change.before || force {
            todo.push(change);
        } else {
            conflicts.push(Conflict {
                path: change.path.clone(),
                expected: change.before.clone(),
                found,
            });
        }
    }
    if !conflicts.is_empty() {
        return Err(WorkspaceError::Conflicts { conflicts });
    }
    // Removals deepest first, so a folder is empty by the time its turn comes.
    for change in todo.iter().rev().filter(|c| c.kind == ChangeKind::Removed) {
        remove(target, &change.path)?;
        applied.removed += 1;
    }
    for change in todo.iter().filter(|c| c.kind != ChangeKind::Removed) {
        let Some(after) = &change.after else { continue };
        remove(target, &change.path)?;
        write(target, result, &change.path, after)?;
        applied.written += 1;
    }
    Ok(applied)
}

/// What is at `path` in `dir` now, read without following a final symlink.
fn current(dir: &Dir, path: &str) -> Result<Option<Entry>, WorkspaceError> {
    let read_err = |source| WorkspaceError::Write {
        path: path.to_owned(),
        source,
    };
    let meta = match dir.symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    Ok(Some(if meta.is_dir() {
        Entry::Dir { mode }
    } else if meta.is_symlink() {
        let target = dir.read_link_contents(path).map_err(read_err)?;
        Entry::Symlink {
            target: target.to_string_lossy().into_owned(),
        }
    } else {
        let (size, sha256) = hash(&mut dir.open(path).map_err(read_err)?).map_err(read_err)?;
        Entry::File { mode, size, sha256 }
    }))
}

fn remove(dir: &Dir, path: &str) -> Result<(), WorkspaceError> {
    let result = match dir.symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => dir.remove_dir(path),
        Ok(_) => dir.remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|source| WorkspaceError::Write {
        path: path.to_owned(),
        source,
    })
}

fn write(target: &Dir, result: &Dir, path: &str, entry: &Entry) -> Result<(), WorkspaceError> {
    let write_err = |source| WorkspaceError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some((parent, _)) = path.rsplit_once('/') {
        target.create_dir_all(parent).map_err(write_err)?;
    }
    match entry {
        Entry::Dir { mode } => {
            target.create_dir_all(path).map_err(write_err)?;
            target
                .set_permissions(path, Permissions::from_mode(*mode))
                .map_err(write_err)
        }
        // Checked when received; checked again, since this writes to the
        // owner's own folder.
        Entry::Symlink { target: to } if link_stays_inside(path, to, |_| None) => {
            target.symlink_contents(to, path).map_err(write_err)
        }
        Entry::Symlink { .. } => Ok(()),
        Entry::File { mode, .. } => {
            let content = result.read(path).map_err(write_err)?;
            let temporary = format!("{path}.cmm-apply");
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true).mode(0o600);
            let mut file = target.open_with(&temporary, &options).map_err(write_err)?;
            file.write_all(&content).map_err(write_err)?;
            file.set_permissions(Permissions::from_mode(*mode))
                .map_err(write_err)?;
            file.sync_all().map_err(write_err)?;
            target.rename(&temporary, target, path).map_err(write_err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Limits, compare, snapshot};
    use super::*;
    use cap_std::ambient_authority;

    fn open(path: &std::path::Path) -> Dir {
        Dir::open_ambient_dir(path, ambient_authority()).unwrap()
    }

    /// The owner's folder, the copy the job got, and the job's result with
    /// one file edited, one added and one removed.
    fn scene() -> (
        tempfile::TempDir,
        tempfile::TempDir,
        tempfile::TempDir,
        Vec<Change>,
    ) {
        let owner = tempfile::tempdir().unwrap();
        std::fs::write(owner.path().join("edit.txt"), "old\n").unwrap();
        std::fs::write(owner.path().join("gone.txt"), "bye\n").unwrap();
        let copy = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_bytes: 1 << 20,
            max_files: 100,
        };
        let base = snapshot(owner.path(), &open(copy.path()), limits, None).unwrap();
        let result = tempfile::tempdir().unwrap();
        std::fs::create_dir(result.path().join("new")).unwrap();
        std::fs::write(result.path().join("new/file.txt"), "hello\n").unwrap();
        std::fs::write(result.path().join("edit.txt"), "new\n").unwrap();
        let after = snapshot(
            result.path(),
            &open(tempfile::tempdir().unwrap().path()),
            limits,
            None,
        )
        .unwrap();
        let changes = compare(&base.manifest, &after.manifest);
        (owner, copy, result, changes)
    }

    #[test]
    fn changes_land_in_the_owner_folder() {
        let (owner, _copy, result, changes) = scene();
        let applied = apply(&open(owner.path()), &open(result.path()), &changes, false).unwrap();
        assert_eq!((applied.written, applied.removed), (3, 1));
        let read = |p: &str| std::fs::read_to_string(owner.path().join(p)).unwrap();
        assert_eq!(read("edit.txt"), "new\n");
        assert_eq!(read("new/file.txt"), "hello\n");
        assert!(!owner.path().join("gone.txt").exists());
        let again = apply(&open(owner.path()), &open(result.path()), &changes, false).unwrap();
        assert_eq!((again.written, again.unchanged), (0, 4));
    }

    #[test]
    fn an_owner_edit_meanwhile_stops_the_apply_unless_forced() {
        let (owner, _copy, result, changes) = scene();
        std::fs::write(owner.path().join("edit.txt"), "mine\n").unwrap();
        let err = apply(&open(owner.path()), &open(result.path()), &changes, false).unwrap_err();
        assert!(
            matches!(&err, WorkspaceError::Conflicts { conflicts } if conflicts[0].path == "edit.txt"),
            "{err}"
        );
        assert!(
            owner.path().join("gone.txt").exists(),
            "nothing was written"
        );
        apply(&open(owner.path()), &open(result.path()), &changes, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(owner.path().join("edit.txt")).unwrap(),
            "new\n"
        );
    }
}
