//! Copying the job's workspace in: the read-only copy the host put in the
//! gateway folder becomes the writable `/workspace` before the command
//! starts. Folders, files (their permission bits, never setuid, setgid or
//! sticky) and symlinks (copied as links, never followed) are all a
//! workspace may hold; the host checked that before the job was admitted,
//! so anything else here is an error, not something to skip.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

/// Copies the contents of `from` into the existing folder `to`; an error
/// names the path it happened on.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let at = |path: &Path| {
        let path = path.display().to_string();
        move |e: io::Error| io::Error::new(e.kind(), format!("{path}: {e}"))
    };
    let mut entries: Vec<_> = fs::read_dir(from)
        .and_then(|dir| dir.collect::<io::Result<_>>())
        .map_err(at(from))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(at(&source))?;
        if kind.is_symlink() {
            let link = fs::read_link(&source).map_err(at(&source))?;
            symlink(link, &target).map_err(at(&target))?;
        } else if kind.is_dir() {
            fs::create_dir(&target).map_err(at(&target))?;
            copy_tree(&source, &target)?;
            keep_mode(&source, &target).map_err(at(&target))?;
        } else if kind.is_file() {
            fs::copy(&source, &target).map_err(at(&target))?;
            keep_mode(&source, &target).map_err(at(&target))?;
        } else {
            return Err(io::Error::other(format!(
                "{} is neither a file, a folder nor a symlink",
                source.display()
            )));
        }
    }
    Ok(())
}

/// The source's permission bits on the target, without setuid, setgid or
/// sticky.
fn keep_mode(source: &Path, target: &Path) -> io::Result<()> {
    let mode = fs::metadata(source)?.permissions().mode() & 0o777;
    fs::set_permissions(target, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_folders_and_links_are_copied_without_setuid() {
        let base = std::env::temp_dir().join(format!("relay-copy-{}", std::process::id()));
        let (from, to) = (base.join("from"), base.join("to"));
        fs::create_dir_all(from.join("sub")).unwrap();
        fs::create_dir_all(&to).unwrap();
        fs::write(from.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(from.join("sub/run.sh"), fs::Permissions::from_mode(0o4755)).unwrap();
        symlink("sub/run.sh", from.join("link")).unwrap();
        copy_tree(&from, &to).unwrap();
        let mode = fs::metadata(to.join("sub/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert_eq!(
            fs::read_link(to.join("link")).unwrap(),
            Path::new("sub/run.sh")
        );
        fs::remove_dir_all(&base).unwrap();
    }
}
