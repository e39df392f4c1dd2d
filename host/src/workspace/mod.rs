//! A job's folder, in and out: the checked copy of the owner's folder that
//! goes into the container, the folder that comes back, what changed
//! between the two, and copying those changes into the owner's folder when
//! the owner asks.
//!
//! Every folder is handled through cap-std `Dir` handles, so a name taken
//! from the owner's tree or from the container's archive cannot reach
//! outside the folder it belongs to, and a symlink is copied as a link,
//! never followed. What comes back from a container is hostile input: its
//! size, entry count, paths and link targets are all checked here. This
//! module knows nothing of Docker, policy or SQLite.
//!
//! Layout:
//! - `manifest` — what a tree holds: one entry per path, with a content hash.
//! - `snapshot` — the checked copy of the owner's folder (refuses links that
//!   leave it, devices, and more files or bytes than the limits).
//! - `archive` — unpacking the tar the relay sends back, within the limits.
//! - `pack` — packing a folder as that tar, for a workspace sent to a peer.
//! - `changes` — added, changed and removed paths, and a unified diff.
//! - `apply` — writing the changes into the owner's folder, refusing (unless
//!   forced) when it changed since the job took its copy.
//! - `channel` — the relay's channel back to the host: its end report and
//!   the final workspace, on a Unix socket in the job folder.

mod apply;
mod archive;
mod changes;
mod channel;
mod manifest;
mod pack;
mod snapshot;

use std::path::PathBuf;

pub use apply::{Applied, Conflict, apply};
pub use archive::{Received, unpack};
pub use changes::{Change, ChangeKind, compare, unified_diff};
pub use channel::{Channel, EndReport, Returned};
pub use manifest::{Entry, Manifest};
pub use pack::{Packed, pack};
pub use snapshot::{Snapshot, give_to, snapshot};

/// How big a workspace may be, going in and coming back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of its regular files.
    pub max_bytes: u64,
    /// Files, folders and symlinks, counted together.
    pub max_files: u32,
}

/// Why a workspace could not be copied, received or applied.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("cannot read the workspace {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot copy {path} of the workspace: {source}")]
    Copy {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} in the workspace is a symlink to {target}, which leaves the workspace; \
         a job gets only what is inside its folder, so replace the link with a copy"
    )]
    LinkLeaves { path: String, target: String },
    #[error(
        "{path} in the workspace is a {kind}; a workspace may hold only files, folders and \
         symlinks, so move it out of the folder"
    )]
    Special { path: String, kind: &'static str },
    #[error("{path} in the workspace has a name that is not UTF-8; rename it")]
    NotUtf8 { path: String },
    #[error(
        "the workspace holds more than {max} bytes in its files (workspace.maxBytes); \
         use a smaller folder or raise the cap with `config --set workspace.maxBytes=SIZE`"
    )]
    TooManyBytes { max: u64 },
    #[error(
        "the workspace holds more than {max} files and folders (workspace.maxFiles); \
         use a smaller folder or raise the cap with `config --set workspace.maxFiles=N`"
    )]
    TooManyFiles { max: u32 },
    #[error("the workspace the job returned is unusable: {reason}")]
    Returned { reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} changed since the job copied the folder ({}); nothing was written. Look at \
         `result --diff`, then apply with --force to overwrite them",
        conflicts.len(),
        conflicts.iter().map(|c| c.path.as_str()).collect::<Vec<_>>().join(", ")
    )]
    Conflicts { conflicts: Vec<Conflict> },
}

/// A path inside a workspace as `/`-separated text, checked to be relative
/// and free of `.` and `..`, so it can be joined under any root.
pub(crate) fn clean_relative(path: &std::path::Path) -> Option<String> {
    use std::path::Component;
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Whether the symlink at `link` (a clean relative path) pointing at
/// `target` stays inside the tree when followed. `link_at` says which other
/// paths of the tree are symlinks and to what: a link met on the way is
/// expanded, since `up -> ..` followed by `up/../x` leaves the tree although
/// neither text climbs above the root on its own.
pub(crate) fn link_stays_inside<'a>(
    link: &str,
    target: &str,
    link_at: impl Fn(&str) -> Option<&'a str>,
) -> bool {
    /// More expansions than this is a loop (the kernel's own limit).
    const MAX_HOPS: usize = 40;
    let mut at: Vec<String> = link.split('/').map(String::from).collect();
    at.pop();
    let mut pending: std::collections::VecDeque<String> =
        target.split('/').map(String::from).collect();
    if target.starts_with('/') {
        return false;
    }
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part.as_str() {
            "" | "." => {}
            ".." => {
                if at.pop().is_none() {
                    return false;
                }
            }
            _ => {
                at.push(part);
                let Some(next) = link_at(&at.join("/")) else {
                    continue;
                };
                hops += 1;
                if hops > MAX_HOPS || next.starts_with('/') {
                    return false;
                }
                at.pop();
                for step in next.split('/').rev() {
                    pending.push_front(step.to_owned());
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn only_plain_relative_paths_are_clean() {
        assert_eq!(
            clean_relative(Path::new("a/b.txt")).as_deref(),
            Some("a/b.txt")
        );
        assert_eq!(clean_relative(Path::new("./a//b")).as_deref(), Some("a/b"));
        for bad in ["/etc/passwd", "../x", "a/../../x", "", "."] {
            assert_eq!(clean_relative(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn links_may_point_anywhere_inside_and_nowhere_outside() {
        let none = |_: &str| None;
        assert!(link_stays_inside("a/link", "../b/file", none));
        assert!(link_stays_inside("link", "sub/./file", none));
        assert!(link_stays_inside("a/b/link", "../../c", none));
        assert!(!link_stays_inside("link", "../outside", none));
        assert!(!link_stays_inside("a/link", "../../etc/passwd", none));
        assert!(!link_stays_inside("a/link", "/etc/passwd", none));
        assert!(!link_stays_inside("a/link", "x/../../../y", none));
    }

    #[test]
    fn links_on_the_way_are_followed() {
        let links = |path: &str| match path {
            "a/up" => Some(".."),
            "loop" => Some("loop"),
            "abs" => Some("/etc"),
            _ => None,
        };
        assert!(link_stays_inside("a/fine", "up/b", links));
        assert!(!link_stays_inside("a/evil", "up/../x", links));
        assert!(!link_stays_inside("x", "loop/y", links));
        assert!(!link_stays_inside("x", "abs/passwd", links));
    }
}
