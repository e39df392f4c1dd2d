//! What a job changed in its workspace: the paths added, changed and
//! removed between the copy it got and the folder it returned, and a
//! unified diff of the text files among them for people to read.

use std::fmt::Write as _;
use std::io::Read;

use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use similar::TextDiff;

use super::manifest::{Entry, Manifest};

/// A text file larger than this is summarised, not diffed.
const MAX_DIFF_BYTES: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Changed,
    Removed,
}

/// One path that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
    /// The entry in the copy the job got; `None` when added.
    pub before: Option<Entry>,
    /// The entry in the returned folder; `None` when removed.
    pub after: Option<Entry>,
}

/// Every path whose entry differs, in path order. A folder whose mode alone
/// changed is not a change worth reporting.
pub fn compare(before: &Manifest, after: &Manifest) -> Vec<Change> {
    let mut paths: Vec<&String> = before.iter().map(|(p, _)| p).collect();
    paths.extend(after.iter().map(|(p, _)| p));
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|path| {
            let (old, new) = (before.get(path), after.get(path));
            let kind = match (old, new) {
                (None, Some(_)) => ChangeKind::Added,
                (Some(_), None) => ChangeKind::Removed,
                (Some(a), Some(b)) if a.is_dir() && b.is_dir() => return None,
                (Some(a), Some(b)) if a != b => ChangeKind::Changed,
                _ => return None,
            };
            Some(Change {
                path: path.clone(),
                kind,
                before: old.cloned(),
                after: new.cloned(),
            })
        })
        .collect()
}

/// A unified diff (`a/` before, `b/` after) of every changed file, read
/// from the two trees. Binary or large files get one line saying so.
pub fn unified_diff(changes: &[Change], before: &Dir, after: &Dir) -> String {
    let mut out = String::new();
    for change in changes {
        let old = side(before, &change.path, change.before.as_ref());
        let new = side(after, &change.path, change.after.as_ref());
        let (old, new) = match (old, new) {
            (Side::Absent, Side::Absent) => continue,
            (Side::Text(a), Side::Text(b)) => (Some(a), Some(b)),
            (Side::Text(a), Side::Absent) => (Some(a), None),
            (Side::Absent, Side::Text(b)) => (None, Some(b)),
            _ => {
                let _ = writeln!(out, "Binary files a/{0} and b/{0} differ", change.path);
                continue;
            }
        };
        let header_old = if old.is_some() {
            format!("a/{}", change.path)
        } else {
            "/dev/null".to_owned()
        };
        let header_new = if new.is_some() {
            format!("b/{}", change.path)
        } else {
            "/dev/null".to_owned()
        };
        let (old, new) = (old.unwrap_or_default(), new.unwrap_or_default());
        let diff = TextDiff::from_lines(&old, &new);
        let _ = write!(
            out,
            "{}",
            diff.unified_diff()
                .context_radius(3)
                .header(&header_old, &header_new)
        );
    }
    out
}

enum Side {
    Absent,
    Text(String),
    Opaque,
}

/// One side of a diff: a file's text, nothing (absent, a folder), or
/// something a text diff cannot show.
fn side(dir: &Dir, path: &str, entry: Option<&Entry>) -> Side {
    match entry {
        None | Some(Entry::Dir { .. }) => Side::Absent,
        Some(Entry::Symlink { target }) => Side::Text(format!("-> {target}\n")),
        Some(Entry::File { size, .. }) if *size > MAX_DIFF_BYTES => Side::Opaque,
        Some(Entry::File { .. }) => {
            let mut bytes = Vec::new();
            let read = dir
                .open(path)
                .and_then(|f| f.take(MAX_DIFF_BYTES).read_to_end(&mut bytes));
            match (read, String::from_utf8(bytes)) {
                (Ok(_), Ok(text)) if !text.contains('\0') => Side::Text(text),
                _ => Side::Opaque,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    fn file(sha: &str) -> Entry {
        Entry::File {
            mode: 0o644,
            size: 1,
            sha256: sha.into(),
        }
    }

    fn manifest(entries: &[(&str, Entry)]) -> Manifest {
        let mut m = Manifest::default();
        for (p, e) in entries {
            m.insert((*p).into(), e.clone());
        }
        m
    }

    #[test]
    fn added_changed_and_removed_paths_are_found() {
        let before = manifest(&[
            ("keep", file("1")),
            ("edit", file("2")),
            ("gone", file("3")),
            ("dir", Entry::Dir { mode: 0o755 }),
        ]);
        let after = manifest(&[
            ("keep", file("1")),
            ("edit", file("9")),
            ("new", file("4")),
            ("dir", Entry::Dir { mode: 0o700 }),
        ]);
        let changes = compare(&before, &after);
        let seen: Vec<_> = changes.iter().map(|c| (c.path.as_str(), c.kind)).collect();
        assert_eq!(
            seen,
            [
                ("edit", ChangeKind::Changed),
                ("gone", ChangeKind::Removed),
                ("new", ChangeKind::Added)
            ]
        );
    }

    #[test]
    fn the_diff_shows_text_and_names_binaries() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(a.path().join("notes.txt"), "one\ntwo\n").unwrap();
        std::fs::write(b.path().join("notes.txt"), "one\nthree\n").unwrap();
        std::fs::write(b.path().join("blob"), b"\0\x01").unwrap();
        let changes = vec![
            Change {
                path: "notes.txt".into(),
                kind: ChangeKind::Changed,
                before: Some(file("1")),
                after: Some(file("2")),
            },
            Change {
                path: "blob".into(),
                kind: ChangeKind::Added,
                before: None,
                after: Some(file("3")),
            },
        ];
        let open = |p: &std::path::Path| Dir::open_ambient_dir(p, ambient_authority()).unwrap();
        let diff = unified_diff(&changes, &open(a.path()), &open(b.path()));
        assert!(
            diff.contains("--- a/notes.txt\n+++ b/notes.txt\n"),
            "{diff}"
        );
        assert!(diff.contains("-two\n+three\n"), "{diff}");
        assert!(
            diff.contains("Binary files a/blob and b/blob differ"),
            "{diff}"
        );
    }
}
