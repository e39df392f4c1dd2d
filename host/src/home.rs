//! The data folder: where config, state, plugins and caches live.
//!
//! Chosen by `--home`, else `CMM_HOME`, else the platform's data directory.
//! Sub-folders are handed out as cap-std `Dir`s so a name that comes from a
//! user or a plugin cannot reach outside them.

use std::path::{Path, PathBuf};

use std::os::unix::fs::DirBuilderExt as _;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt};

/// Why the data folder could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error(
        "no data folder: the platform has no data directory for this user; pass --home DIR or set CMM_HOME"
    )]
    NoDefault,
    #[error(
        "cannot use data folder {path}: {source}; check it exists and is writable, or pass another --home"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An opened data folder.
pub struct Home {
    root: PathBuf,
    dir: Dir,
}

impl Home {
    /// The folder to use: `explicit` (from --home or CMM_HOME), else the
    /// platform default.
    pub fn locate(explicit: Option<PathBuf>) -> Result<PathBuf, HomeError> {
        if let Some(path) = explicit {
            return Ok(path);
        }
        directories::ProjectDirs::from("", "", "claude-max-market")
            .map(|dirs| dirs.data_dir().to_path_buf())
            .ok_or(HomeError::NoDefault)
    }

    /// Opens `root`, creating it (mode 0700: it holds the audit log and
    /// policy choices) if needed.
    pub fn open(root: &Path) -> Result<Home, HomeError> {
        let err = |source| HomeError::Open {
            path: root.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(err)?;
        let dir = Dir::open_ambient_dir(root, ambient_authority()).map_err(err)?;
        Ok(Home {
            root: root.to_path_buf(),
            dir,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// Beside `config.toml`, never replaced, so every writer of the
    /// settings locks the same file.
    pub fn config_lock_path(&self) -> PathBuf {
        self.root.join("config.lock")
    }

    pub fn database_path(&self) -> PathBuf {
        self.root.join("state.db")
    }

    /// A sub-folder (created 0700 if missing), e.g. "policies" or "cache".
    pub fn subdir(&self, name: &str) -> Result<Dir, HomeError> {
        let err = |source| HomeError::Open {
            path: self.root.join(name),
            source,
        };
        if !self.dir.exists(name) {
            self.dir
                .create_dir_with(name, &private_dir_builder())
                .map_err(err)?;
        }
        self.dir.open_dir(name).map_err(err)
    }
}

fn private_dir_builder() -> DirBuilder {
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_private_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/b");
        let home = Home::open(&root).unwrap();
        home.subdir("policies").unwrap();
        home.subdir("policies").unwrap();
        for path in [root.clone(), root.join("policies")] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", path.display());
        }
        assert_eq!(Home::locate(Some(root.clone())).unwrap(), root);
    }
}
