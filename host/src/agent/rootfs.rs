//! A root filesystem assembled from this machine's own programs, for
//! images built with no registry in reach: each program goes in with the
//! shared libraries `ldd` says it loads (and the dynamic loader), so a
//! `FROM scratch` image runs it. Nothing is downloaded; what goes in is
//! what this machine has, so the image is as patched as the host.
//!
//! It only lists what goes where; turning the list into a build context is
//! the caller's business.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where programs are looked for: the system's own folders, never a
/// user's PATH (which may hold shims, like pyenv's, rather than programs).
const SYSTEM_BIN: [&str; 4] = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin"];

/// The user jobs run as, given a name and a home so programs that look
/// themselves up (git, shells) find one.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\njob:x:65532:65532:job:/tmp/home:/bin/bash\n";
const GROUP: &str = "root:x:0:\njob:x:65532:\n";

/// Why a root filesystem could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(
        "`{name}` is not installed on this machine (looked in {}); install it (e.g. `apt-get install {name}`) and build again",
        SYSTEM_BIN.join(", ")
    )]
    Missing { name: String },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} needs {library}, which this machine does not have", program.display())]
    Library { program: PathBuf, library: String },
}

/// What one path of the image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// This machine's file at that path.
    Host(PathBuf),
    Bytes(Vec<u8>),
    Symlink(String),
}

/// One entry: its source and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub source: Source,
    pub mode: u32,
}

/// The image's files by absolute path.
#[derive(Debug, Clone)]
pub struct Rootfs {
    items: BTreeMap<String, Item>,
}

impl Default for Rootfs {
    fn default() -> Self {
        let mut fs = Rootfs {
            items: BTreeMap::new(),
        };
        fs.bytes("/etc/passwd", PASSWD.as_bytes(), 0o644);
        fs.bytes("/etc/group", GROUP.as_bytes(), 0o644);
        // Merged /usr: programs live in /usr/bin, and scripts still find
        // /bin/sh.
        fs.symlink("/bin", "usr/bin");
        fs
    }
}

impl Rootfs {
    pub fn items(&self) -> impl Iterator<Item = (&String, &Item)> {
        self.items.iter()
    }

    pub fn bytes(&mut self, at: &str, content: &[u8], mode: u32) {
        self.insert(at, Source::Bytes(content.to_vec()), mode);
    }

    pub fn symlink(&mut self, at: &str, target: &str) {
        self.insert(at, Source::Symlink(target.to_owned()), 0o777);
    }

    fn insert(&mut self, at: &str, source: Source, mode: u32) {
        self.items.insert(at.to_owned(), Item { source, mode });
    }

    /// The system program `name` at `/usr/bin/<name>`, with its libraries.
    pub fn program(&mut self, name: &str) -> Result<(), RootfsError> {
        let found = SYSTEM_BIN
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| RootfsError::Missing { name: name.into() })?;
        self.executable(&found, &format!("/usr/bin/{name}"))
    }

    /// Like [`program`](Self::program), for programs an image can do without.
    pub fn optional_program(&mut self, name: &str) -> Result<(), RootfsError> {
        match self.program(name) {
            Err(RootfsError::Missing { .. }) => {
                tracing::info!(
                    program = name,
                    "not on this machine; the image goes without it"
                );
                Ok(())
            }
            other => other,
        }
    }

    /// The executable at `host` as `at`, with the libraries it loads.
    pub fn executable(&mut self, host: &Path, at: &str) -> Result<(), RootfsError> {
        self.insert(at, Source::Host(host.to_path_buf()), 0o755);
        self.libraries_of(host)
    }

    /// Every file under `host` at the same place under `at`, skipping
    /// paths for which `keep` says no; ELF files bring their libraries.
    pub fn tree(
        &mut self,
        host: &Path,
        at: &str,
        keep: &dyn Fn(&Path) -> bool,
    ) -> Result<(), RootfsError> {
        let read_err = |source| RootfsError::Read {
            path: host.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(host).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let path = entry.path();
            if !keep(&path) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let inside = format!("{}/{name}", at.trim_end_matches('/'));
            let kind = entry.file_type().map_err(read_err)?;
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(read_err)?;
                self.symlink(&inside, &target.to_string_lossy());
            } else if kind.is_dir() {
                self.tree(&path, &inside, keep)?;
            } else if kind.is_file() {
                let mode = mode_of(&path)?;
                self.insert(&inside, Source::Host(path.clone()), mode);
                if is_elf(&path) {
                    self.libraries_of(&path)?;
                }
            }
        }
        Ok(())
    }

    /// Adds what `ldd` says `program` loads, at the paths it names.
    fn libraries_of(&mut self, program: &Path) -> Result<(), RootfsError> {
        for library in ldd(program)? {
            if !self.items.contains_key(&library) {
                self.insert(&library, Source::Host(PathBuf::from(&library)), 0o755);
            }
        }
        Ok(())
    }
}

fn mode_of(path: &Path) -> Result<u32, RootfsError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .map_err(|source| RootfsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The libraries `ldd` lists for `program`, absolute paths; none for a
/// static program.
fn ldd(program: &Path) -> Result<Vec<String>, RootfsError> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|source| RootfsError::Read {
            path: PathBuf::from("ldd"),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some((name, rest)) = line.split_once(" => ") {
            let path = rest.split_whitespace().next().unwrap_or_default();
            if path == "not" {
                return Err(RootfsError::Library {
                    program: program.to_path_buf(),
                    library: name.to_owned(),
                });
            }
            if path.starts_with('/') {
                libraries.push(path.to_owned());
            }
        } else if let Some(path) = line.split_whitespace().next()
            && path.starts_with('/')
        {
            libraries.push(path.to_owned());
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_brings_its_loader_and_libraries() {
        let mut fs = Rootfs::default();
        fs.program("sh").expect("a shell is installed");
        let paths: Vec<&String> = fs.items().map(|(p, _)| p).collect();
        assert!(paths.contains(&&"/usr/bin/sh".to_owned()), "{paths:?}");
        assert!(
            paths.iter().any(|p| p.contains("ld-linux")),
            "the dynamic loader: {paths:?}"
        );
        assert!(paths.iter().any(|p| p.contains("libc.so")), "{paths:?}");
        assert!(matches!(
            fs.program("no-such-program-here"),
            Err(RootfsError::Missing { .. })
        ));
        fs.optional_program("no-such-program-here").unwrap();
    }
}
