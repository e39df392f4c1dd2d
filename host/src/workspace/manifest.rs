//! What a workspace tree holds: one entry per path, files with their size,
//! mode and content hash. Two manifests say what changed without the trees
//! being read again, and a stored one lets `result --apply` tell whether the
//! owner's folder moved on since the job took its copy.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One path in a tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    Dir {
        mode: u32,
    },
    File {
        /// Permission bits only (setuid, setgid and sticky are never kept).
        mode: u32,
        size: u64,
        /// Hex sha256 of the content.
        sha256: String,
    },
    Symlink {
        target: String,
    },
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        matches!(self, Entry::Dir { .. })
    }
}

/// Every path of a tree, `/`-separated and relative to its root, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Manifest(BTreeMap<String, Entry>);

impl Manifest {
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.0.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.0.iter()
    }

    pub(crate) fn insert(&mut self, path: String, entry: Entry) {
        self.0.insert(path, entry);
    }

    /// Files, folders and symlinks.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Total size of the regular files.
    pub fn bytes(&self) -> u64 {
        self.0
            .values()
            .map(|entry| match entry {
                Entry::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    /// The symlink target at `path`, if `path` is a symlink.
    pub(crate) fn link_at(&self, path: &str) -> Option<&str> {
        match self.0.get(path) {
            Some(Entry::Symlink { target }) => Some(target),
            _ => None,
        }
    }

    /// Whether some folder above `path` is a symlink in this tree.
    pub(crate) fn under_link(&self, path: &str) -> bool {
        path.match_indices('/')
            .any(|(at, _)| self.link_at(&path[..at]).is_some())
    }
}

/// Copies `from` to `to`, hashing on the way, and stops with `Err(None)`
/// once more than `budget` bytes have passed; `Ok` carries the size and hash.
pub(crate) fn copy_hashed(
    from: &mut impl Read,
    to: &mut impl Write,
    budget: u64,
) -> Result<(u64, String), Option<io::Error>> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size: u64 = 0;
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Some(e)),
        };
        size += read as u64;
        if size > budget {
            return Err(None);
        }
        hasher.update(&buffer[..read]);
        to.write_all(&buffer[..read]).map_err(Some)?;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// The hex sha256 of everything `from` yields.
pub(crate) fn hash(from: &mut impl Read) -> io::Result<(u64, String)> {
    copy_hashed(from, &mut io::sink(), u64::MAX)
        .map_err(|e| e.unwrap_or_else(|| io::Error::other("unbounded copy stopped")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_hashes_and_stops_past_its_budget() {
        let mut out = Vec::new();
        let (size, sha) = copy_hashed(&mut &b"hello"[..], &mut out, 5).unwrap();
        assert_eq!((size, out.as_slice()), (5, &b"hello"[..]));
        assert_eq!(
            sha,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(matches!(
            copy_hashed(&mut &b"hello!"[..], &mut Vec::new(), 5),
            Err(None)
        ));
    }

    #[test]
    fn paths_under_a_link_are_known() {
        let mut m = Manifest::default();
        m.insert("a".into(), Entry::Symlink { target: "b".into() });
        m.insert("b".into(), Entry::Dir { mode: 0o755 });
        assert!(m.under_link("a/x"));
        assert!(!m.under_link("b/x"));
        assert!(!m.under_link("a"));
    }
}
