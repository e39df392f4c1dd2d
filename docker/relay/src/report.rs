//! The relay's word back to the host when the command has ended: one line
//! of JSON (how it ended) and then a tar of the workspace, on the host's
//! control socket. The host treats both as the job's own claims: the exit
//! status it trusts is the container's, and the archive is checked entry by
//! entry before anything is kept.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Why the command did not run, in the report's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `not_found`, `not_executable`, `workspace_copy` or `spawn`.
    pub kind: &'static str,
    pub message: String,
}

/// How the command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndReport {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub workspace_full: bool,
    pub error: Option<Failure>,
}

impl EndReport {
    pub fn to_json(&self) -> String {
        let number = |n: Option<i32>| n.map_or("null".to_owned(), |n| n.to_string());
        let error = match &self.error {
            Some(f) => format!(
                "{{\"kind\":\"{}\",\"message\":\"{}\"}}",
                f.kind,
                json_escape(&f.message)
            ),
            None => "null".to_owned(),
        };
        format!(
            "{{\"exit_code\":{},\"signal\":{},\"workspace_full\":{},\"error\":{error}}}",
            number(self.exit_code),
            number(self.signal),
            self.workspace_full
        )
    }
}

/// Text as the inside of a JSON string.
pub fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Sends `report` and, when there is one, the workspace to `control`.
pub fn send(control: &Path, report: &EndReport, workspace: Option<&Path>) -> io::Result<()> {
    let stream = UnixStream::connect(control)?;
    let mut out = BufWriter::new(stream);
    writeln!(out, "{}", report.to_json())?;
    if let Some(root) = workspace {
        let mut archive = tar::Builder::new(out);
        archive.follow_symlinks(false);
        append_tree(&mut archive, root, Path::new(""))?;
        out = archive.into_inner()?;
    }
    out.flush()?;
    out.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .shutdown(std::net::Shutdown::Write)
}

/// Folders, files and symlinks under `dir`, named relative to the root;
/// sockets, FIFOs and devices a job made are left out. Headers carry the
/// modes the command left, even where the relay had to give itself read
/// access back (see `readable`).
fn append_tree<W: Write>(
    archive: &mut tar::Builder<W>,
    dir: &Path,
    relative: &Path,
) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let (path, name) = (entry.path(), relative.join(entry.file_name()));
        let meta = fs::symlink_metadata(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        let kind = meta.file_type();
        if kind.is_dir() {
            archive.append_data(&mut header, &name, io::empty())?;
            readable(&path, &meta, 0o500)?;
            append_tree(archive, &path, &name)?;
        } else if kind.is_file() {
            readable(&path, &meta, 0o400)?;
            let file = fs::File::open(&path)?.take(meta.len());
            archive.append_data(&mut header, &name, file)?;
        } else if kind.is_symlink() {
            archive.append_link(&mut header, &name, fs::read_link(&path)?)?;
        }
    }
    Ok(())
}

/// A command may take its own read access away (`chmod 0`). The relay runs
/// as the same user, so it owns the entry and gives itself access back:
/// otherwise one such entry would cut the archive short and lose every
/// entry after it.
fn readable(path: &Path, meta: &fs::Metadata, bits: u32) -> io::Result<()> {
    let mode = meta.permissions().mode();
    if mode & bits == bits {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode | bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_one_line_of_json() {
        let report = EndReport {
            exit_code: Some(127),
            signal: None,
            workspace_full: false,
            error: Some(Failure {
                kind: "not_found",
                message: "command `x\"y` was not found\n".into(),
            }),
        };
        assert_eq!(
            report.to_json(),
            r#"{"exit_code":127,"signal":null,"workspace_full":false,"error":{"kind":"not_found","message":"command `x\"y` was not found\u000a"}}"#
        );
    }
}
