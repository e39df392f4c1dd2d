//! Packing a folder as the tar a workspace travels in between nodes: the
//! same shape the relay sends back from a container, so the receiver reads
//! it with `archive::unpack` and all its checks. Entries come in sorted
//! order with no owner or time, so the same folder packs to the same bytes.

use std::io::{self, Write};

use cap_std::fs::{Dir, PermissionsExt};
use tar::{EntryType, Header};

use super::WorkspaceError;

/// What a packed folder holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Packed {
    /// The bytes of its regular files.
    pub bytes: u64,
    /// Its files, folders and symlinks.
    pub files: u32,
}

/// Writes the folder `dir` as a tar to `out`: folders, regular files and
/// symlinks (as links, never followed). Anything else is refused.
pub fn pack(dir: &Dir, out: impl Write) -> Result<Packed, WorkspaceError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut packed = Packed::default();
    pack_dir(&mut builder, dir, "", &mut packed)?;
    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(|source| WorkspaceError::Copy {
            path: "the archive".into(),
            source,
        })?;
    Ok(packed)
}

fn pack_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Dir,
    prefix: &str,
    packed: &mut Packed,
) -> Result<(), WorkspaceError> {
    let copy_err = |path: &str| {
        let path = if path.is_empty() { "." } else { path }.to_owned();
        move |source| WorkspaceError::Copy { path, source }
    };
    let mut names = Vec::new();
    for entry in dir.entries().map_err(copy_err(prefix))? {
        let entry = entry.map_err(copy_err(prefix))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(WorkspaceError::NotUtf8 {
                path: format!("{prefix}{}", name.to_string_lossy()),
            });
        };
        names.push(name.to_owned());
    }
    names.sort();
    for name in names {
        let path = format!("{prefix}{name}");
        let meta = dir.symlink_metadata(&name).map_err(copy_err(&path))?;
        let kind = meta.file_type();
        let mode = meta.permissions().mode() & 0o777;
        packed.files = packed.files.saturating_add(1);
        let mut header = Header::new_gnu();
        header.set_mode(mode);
        header.set_mtime(0);
        if kind.is_dir() {
            header.set_entry_type(EntryType::Directory);
            header.set_size(0);
            builder
                .append_data(&mut header, format!("{path}/"), io::empty())
                .map_err(copy_err(&path))?;
            let sub = dir.open_dir(&name).map_err(copy_err(&path))?;
            pack_dir(builder, &sub, &format!("{path}/"), packed)?;
        } else if kind.is_file() {
            header.set_entry_type(EntryType::Regular);
            header.set_size(meta.len());
            packed.bytes += meta.len();
            let file = dir.open(&name).map_err(copy_err(&path))?;
            builder
                .append_data(&mut header, &path, file)
                .map_err(copy_err(&path))?;
        } else if kind.is_symlink() {
            let target = dir.read_link_contents(&name).map_err(copy_err(&path))?;
            header.set_entry_type(EntryType::Symlink);
            header.set_size(0);
            builder
                .append_link(&mut header, &path, target)
                .map_err(copy_err(&path))?;
        } else {
            return Err(WorkspaceError::Special {
                path,
                kind: "special file",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::{Entry, Limits, unpack};
    use cap_std::ambient_authority;

    #[test]
    fn a_packed_folder_unpacks_to_the_same_tree_and_packs_to_the_same_bytes() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("a/b")).unwrap();
        std::fs::write(src.path().join("a/b/file.txt"), "hello\n").unwrap();
        std::fs::write(src.path().join("top.bin"), vec![7u8; 70_000]).unwrap();
        std::os::unix::fs::symlink("a/b/file.txt", src.path().join("link")).unwrap();
        let dir = Dir::open_ambient_dir(src.path(), ambient_authority()).unwrap();
        let mut first = Vec::new();
        let packed = pack(&dir, &mut first).unwrap();
        assert_eq!(
            packed,
            Packed {
                bytes: 70_006,
                files: 5
            }
        );
        let mut second = Vec::new();
        pack(&dir, &mut second).unwrap();
        assert_eq!(first, second);

        let dest = tempfile::tempdir().unwrap();
        let out = Dir::open_ambient_dir(dest.path(), ambient_authority()).unwrap();
        let limits = Limits {
            max_bytes: 1 << 20,
            max_files: 100,
        };
        let received = unpack(first.as_slice(), &out, limits).unwrap();
        assert!(received.skipped.is_empty(), "{:?}", received.skipped);
        assert_eq!(received.manifest.len(), 5);
        assert!(matches!(
            received.manifest.get("link"),
            Some(Entry::Symlink { target }) if target == "a/b/file.txt"
        ));
        assert_eq!(
            std::fs::read(dest.path().join("a/b/file.txt")).unwrap(),
            b"hello\n"
        );
        assert_eq!(received.manifest.bytes(), 70_006);
    }
}
