//! The copy of the owner's folder that a job gets. It is taken before the
//! policies decide, so they judge exactly what will run, and the owner's
//! folder is never mounted: the container cannot write to it, and the
//! owner may keep editing it while the job runs.
//!
//! The copy refuses, before anything starts, what a job must not get or
//! could use to reach outside: symlinks that leave the folder (followed
//! through other links), device files, FIFOs and sockets, names that are
//! not UTF-8, and more files or bytes than the limits.

use std::os::unix::fs::fchown;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt, OpenOptions, OpenOptionsExt, Permissions};
use cap_std::fs::{FileType, PermissionsExt};

use super::manifest::{Entry, Manifest, copy_hashed};
use super::{Limits, WorkspaceError, link_stays_inside};

/// A checked copy of a folder.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The owner's folder it was taken from.
    pub source: PathBuf,
    pub manifest: Manifest,
}

impl Snapshot {
    pub fn bytes(&self) -> u64 {
        self.manifest.bytes()
    }

    pub fn files(&self) -> u32 {
        u32::try_from(self.manifest.len()).unwrap_or(u32::MAX)
    }
}

/// Copies the folder at `source` into `dest`, giving every copied file and
/// folder to `owner` (the container's user) when one is given.
pub fn snapshot(
    source: &Path,
    dest: &Dir,
    limits: Limits,
    owner: Option<(u32, u32)>,
) -> Result<Snapshot, WorkspaceError> {
    let open_err = |source_err| WorkspaceError::Open {
        path: source.to_path_buf(),
        source: source_err,
    };
    let root = Dir::open_ambient_dir(source, ambient_authority()).map_err(open_err)?;
    let mut walk = Walk {
        limits,
        owner,
        manifest: Manifest::default(),
    };
    walk.copy_dir(&root, dest, "")?;
    for (path, entry) in walk.manifest.iter() {
        if let Entry::Symlink { target } = entry
            && !link_stays_inside(path, target, |p| walk.manifest.link_at(p))
        {
            return Err(WorkspaceError::LinkLeaves {
                path: path.clone(),
                target: target.clone(),
            });
        }
    }
    Ok(Snapshot {
        source: source.to_path_buf(),
        manifest: walk.manifest,
    })
}

struct Walk {
    limits: Limits,
    owner: Option<(u32, u32)>,
    manifest: Manifest,
}

impl Walk {
    fn copy_dir(&mut self, from: &Dir, to: &Dir, prefix: &str) -> Result<(), WorkspaceError> {
        let read_err = |source| WorkspaceError::Copy {
            path: display(prefix),
            source,
        };
        let mut names = Vec::new();
        for entry in from.entries().map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| WorkspaceError::NotUtf8 {
                path: format!("{prefix}{}", name.to_string_lossy()),
            })?;
            names.push((name.to_owned(), entry.file_type().map_err(read_err)?));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in names {
            let path = format!("{prefix}{name}");
            if self.manifest.len() >= self.limits.max_files as usize {
                return Err(WorkspaceError::TooManyFiles {
                    max: self.limits.max_files,
                });
            }
            self.copy_entry(from, to, &name, &path, kind)?;
        }
        Ok(())
    }

    fn copy_entry(
        &mut self,
        from: &Dir,
        to: &Dir,
        name: &str,
        path: &str,
        kind: FileType,
    ) -> Result<(), WorkspaceError> {
        let copy_err = |source| WorkspaceError::Copy {
            path: path.to_owned(),
            source,
        };
        if kind.is_dir() {
            let mode = from.symlink_metadata(name).map_err(copy_err)?;
            let mode = mode.permissions().mode() & 0o777;
            let mut builder = DirBuilder::new();
            builder.mode(0o700);
            to.create_dir_with(name, &builder).map_err(copy_err)?;
            let (sub_from, sub_to) = (
                from.open_dir(name).map_err(copy_err)?,
                to.open_dir(name).map_err(copy_err)?,
            );
            self.manifest.insert(path.to_owned(), Entry::Dir { mode });
            self.copy_dir(&sub_from, &sub_to, &format!("{path}/"))?;
            // Only now: a folder without write permission could not be filled.
            to.set_permissions(name, Permissions::from_mode(mode))
                .map_err(copy_err)?;
            return self.give(to, name, path);
        }
        if kind.is_symlink() {
            let target = from.read_link_contents(name).map_err(copy_err)?;
            let target = target.to_str().ok_or_else(|| WorkspaceError::NotUtf8 {
                path: path.to_owned(),
            })?;
            to.symlink_contents(target, name).map_err(copy_err)?;
            self.manifest.insert(
                path.to_owned(),
                Entry::Symlink {
                    target: target.to_owned(),
                },
            );
            return Ok(());
        }
        if !kind.is_file() {
            return Err(WorkspaceError::Special {
                path: path.to_owned(),
                kind: special_kind(kind),
            });
        }
        self.copy_file(from, to, name, path)
    }

    fn copy_file(
        &mut self,
        from: &Dir,
        to: &Dir,
        name: &str,
        path: &str,
    ) -> Result<(), WorkspaceError> {
        let copy_err = |source| WorkspaceError::Copy {
            path: path.to_owned(),
            source,
        };
        let mut input = from.open(name).map_err(copy_err)?;
        let mode = input.metadata().map_err(copy_err)?.permissions().mode() & 0o777;
        let mut options = OpenOptions::new();
        options.write(true).create_new(true).mode(0o600);
        let mut output = to.open_with(name, &options).map_err(copy_err)?;
        let budget = self.limits.max_bytes.saturating_sub(self.manifest.bytes());
        let (size, sha256) = copy_hashed(&mut input, &mut output, budget).map_err(|e| match e {
            Some(source) => copy_err(source),
            None => WorkspaceError::TooManyBytes {
                max: self.limits.max_bytes,
            },
        })?;
        output
            .set_permissions(Permissions::from_mode(mode))
            .map_err(copy_err)?;
        if let Some((uid, gid)) = self.owner {
            fchown(&output, Some(uid), Some(gid)).map_err(copy_err)?;
        }
        self.manifest
            .insert(path.to_owned(), Entry::File { mode, size, sha256 });
        Ok(())
    }

    /// Gives folder `name` in `parent` to the owner. Through a read handle:
    /// a `Dir` is opened for lookups only, which fchown refuses.
    fn give(&self, parent: &Dir, name: &str, path: &str) -> Result<(), WorkspaceError> {
        let Some((uid, gid)) = self.owner else {
            return Ok(());
        };
        parent
            .open(name)
            .and_then(|handle| fchown(&handle, Some(uid), Some(gid)))
            .map_err(|source| WorkspaceError::Copy {
                path: path.to_owned(),
                source,
            })
    }
}

/// Gives every folder and file `manifest` lists under `dir` to `owner`
/// (symlinks are nobody's to read through): a tree unpacked for a job run
/// by another user, as [`snapshot`] gives the copies it makes.
pub fn give_to(dir: &Dir, manifest: &Manifest, owner: (u32, u32)) -> Result<(), WorkspaceError> {
    let (uid, gid) = owner;
    for (path, entry) in manifest.iter() {
        if matches!(entry, Entry::Symlink { .. }) {
            continue;
        }
        // Through a read handle: a `Dir` is opened for lookups only, which
        // fchown refuses.
        dir.open(path)
            .and_then(|handle| fchown(&handle, Some(uid), Some(gid)))
            .map_err(|source| WorkspaceError::Copy {
                path: path.clone(),
                source,
            })?;
    }
    Ok(())
}

fn special_kind(kind: FileType) -> &'static str {
    use cap_std::fs::FileTypeExt;
    if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "device file"
    } else {
        "special file"
    }
}

fn display(prefix: &str) -> String {
    match prefix.strip_suffix('/') {
        Some(path) => path.to_owned(),
        None => "the folder".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const ROOMY: Limits = Limits {
        max_bytes: 1 << 20,
        max_files: 100,
    };

    fn dest() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        (tmp, dir)
    }

    fn tree() -> tempfile::TempDir {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("sub/a.txt"), "alpha\n").unwrap();
        std::fs::write(src.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            src.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/a.txt", src.path().join("link")).unwrap();
        src
    }

    #[test]
    fn a_folder_is_copied_with_modes_links_and_hashes() {
        let src = tree();
        let (out, dir) = dest();
        let snap = snapshot(src.path(), &dir, ROOMY, None).unwrap();
        let paths: Vec<_> = snap.manifest.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["link", "run.sh", "sub", "sub/a.txt"]);
        assert_eq!((snap.bytes(), snap.files()), (16, 4));
        assert_eq!(
            std::fs::read_to_string(out.path().join("sub/a.txt")).unwrap(),
            "alpha\n"
        );
        let mode = std::fs::metadata(out.path().join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "setuid is not copied");
        assert_eq!(
            std::fs::read_link(out.path().join("link")).unwrap(),
            Path::new("sub/a.txt")
        );
    }

    #[test]
    fn an_owner_gets_every_file_and_folder() {
        use std::os::unix::fs::MetadataExt;
        let src = tree();
        let (out, dir) = dest();
        let me = std::fs::metadata(out.path()).unwrap();
        snapshot(src.path(), &dir, ROOMY, Some((me.uid(), me.gid()))).unwrap();
        for path in ["sub", "sub/a.txt", "run.sh"] {
            assert_eq!(
                std::fs::metadata(out.path().join(path)).unwrap().uid(),
                me.uid()
            );
        }
    }

    #[test]
    fn a_link_out_of_the_folder_is_refused() {
        let src = tree();
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("sub/passwd")).unwrap();
        let (_out, dir) = dest();
        let err = snapshot(src.path(), &dir, ROOMY, None).unwrap_err();
        assert!(
            matches!(&err, WorkspaceError::LinkLeaves { path, .. } if path == "sub/passwd"),
            "{err}"
        );
    }

    #[test]
    fn fifos_and_oversized_folders_are_refused() {
        let src = tree();
        let fifo = src.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let (_out, dir) = dest();
        let err = snapshot(src.path(), &dir, ROOMY, None).unwrap_err();
        assert!(
            matches!(err, WorkspaceError::Special { kind: "FIFO", .. }),
            "{err}"
        );
        std::fs::remove_file(&fifo).unwrap();

        let small = Limits {
            max_bytes: 10,
            max_files: 100,
        };
        let (_out, dir) = dest();
        let err = snapshot(src.path(), &dir, small, None).unwrap_err();
        assert!(
            matches!(err, WorkspaceError::TooManyBytes { max: 10 }),
            "{err}"
        );

        let few = Limits {
            max_bytes: 1 << 20,
            max_files: 3,
        };
        let (_out, dir) = dest();
        let err = snapshot(src.path(), &dir, few, None).unwrap_err();
        assert!(
            matches!(err, WorkspaceError::TooManyFiles { max: 3 }),
            "{err}"
        );
    }
}
