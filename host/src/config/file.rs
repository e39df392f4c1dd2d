//! Reading `config.toml` and writing it back.
//!
//! A missing file means the defaults; anything else wrong with it is an
//! error naming the file, never a silent fall-back that would run jobs under
//! limits the user did not choose. Saving replaces the file atomically, so a
//! crash leaves either the old settings or the new ones, never half of each.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::Settings;
use super::error::ConfigError;

const HEADER: &str = "# claude-max-market settings. `claude-max-market config --list` \
                      describes every key.\n\n";

/// Distinguishes temp files of concurrent saves within one process.
static SAVES: AtomicU64 = AtomicU64::new(0);

impl Settings {
    /// Reads the settings from `path`, or the defaults if there is no file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let settings: Settings = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        settings.validate().map_err(|err| err.in_file(path))?;
        Ok(settings)
    }

    /// Writes the settings to `path`, replacing any file there atomically.
    /// Settings that `load` would refuse are not written.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        self.validate()?;
        let body = toml::to_string(self).map_err(|source| ConfigError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
        write_atomically(path, format!("{HEADER}{body}").as_bytes()).map_err(|source| {
            ConfigError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

/// Writes a temp file beside `path`, flushes it to disk and renames it over
/// `path`: the rename is atomic only within one file system, hence "beside".
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = temp_path(path)?;
    let result = write_durably(&temp, bytes).and_then(|()| fs::rename(&temp, path));
    if result.is_err() {
        // The write's own error is the one worth reporting; a temp file that
        // cannot be removed either was never created or will be reported by
        // the next save.
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(path)
}

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            ErrorKind::InvalidInput,
            "the config path does not name a file",
        )
    })?;
    let serial = SAVES.fetch_add(1, Ordering::Relaxed);
    let temp = format!(
        ".{}.{}.{serial}.tmp",
        name.to_string_lossy(),
        std::process::id()
    );
    Ok(path.with_file_name(temp))
}

fn write_durably(temp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = match create_private(temp) {
        // Left by a crashed process that had our pid; nobody else writes it.
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            fs::remove_file(temp)?;
            create_private(temp)?
        }
        other => other?,
    };
    file.write_all(bytes)?;
    file.sync_all()
}

/// Creates a new file readable only by its owner. The mode is given at
/// creation so the file is never readable by others, and set again because
/// the umask may have narrowed it.
fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    options.open(path)
}

/// Makes the rename itself durable: until the folder is synced, a crash may
/// bring back the old file.
#[cfg(unix)]
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    fn config_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("config.toml")
    }

    /// The message of every error in the chain, as a user would see it.
    fn chain(err: &ConfigError) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }

    #[test]
    fn a_missing_file_means_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Settings::load(&config_in(&dir)).unwrap(),
            Settings::default()
        );
    }

    #[test]
    fn settings_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_in(&dir);
        let mut settings = Settings::default();
        settings.save(&path).unwrap();
        assert_eq!(Settings::load(&path).unwrap(), settings);
        settings.set("market.url", "nats://a:4222").unwrap();
        settings.set("docker.tmpfsSize", "1536k").unwrap();
        settings.set("policy.isolation", "reuse").unwrap();
        settings.save(&path).unwrap();
        assert_eq!(Settings::load(&path).unwrap(), settings);
    }

    #[test]
    fn keys_missing_from_the_file_take_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_in(&dir);
        let text = "[limits]\ndailyTasks = 5\n[docker]\nmemory = 536870912\n\
                    [policy]\nmemoryMiB = 32\n";
        fs::write(&path, text).unwrap();
        let settings = Settings::load(&path).unwrap();
        assert_eq!(settings.limits.daily_tasks, 5);
        assert_eq!(settings.policy.memory_mib, 32);
        assert_eq!(settings.get("docker.memory").unwrap(), "512m");
        assert_eq!(settings.limits.daily_tokens, 2_000_000);
        assert_eq!(settings.compliance, Default::default());
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named_with_the_valid_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_in(&dir);
        fs::write(&path, "[limits]\ndailyTask = 5\n").unwrap();
        let err = Settings::load(&path).unwrap_err();
        assert!(matches!(&err, ConfigError::Parse { path: p, .. } if *p == path));
        let text = chain(&err);
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("fix it, or remove it"), "{text}");
        assert!(
            text.contains("dailyTask") && text.contains("dailyTasks"),
            "{text}"
        );
    }

    #[test]
    fn bad_toml_is_reported_with_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_in(&dir);
        fs::write(&path, "[limits]\ndailyTasks = = 5\n").unwrap();
        let err = Settings::load(&path).unwrap_err();
        let text = chain(&err);
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn a_value_against_the_rules_is_reported_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_in(&dir);
        fs::write(&path, "[docker]\nmemory = \"4m\"\n").unwrap();
        let err = Settings::load(&path).unwrap_err();
        assert!(matches!(
            &err,
            ConfigError::InvalidFile { path: p, key, value, .. }
                if *p == path && key == "docker.memory" && value == "4m"
        ));
        assert!(err.to_string().contains("at least 6m"), "{err}");
    }

    #[test]
    fn save_replaces_the_file_privately_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_in(&dir);
        fs::write(&path, "old").unwrap();
        Settings::default().save(&path).unwrap();
        Settings::default().save(&path).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.toml"]);
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .starts_with("# claude-max-market")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn save_refuses_settings_that_load_would_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_in(&dir);
        let mut settings = Settings::default();
        settings.limits.daily_tokens = u64::MAX;
        assert!(matches!(
            settings.save(&path),
            Err(ConfigError::InvalidValue { key, .. }) if key == "limits.dailyTokens"
        ));
        assert!(!path.exists());
    }

    #[test]
    fn a_failed_save_names_the_file_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("config.toml");
        let err = Settings::default().save(&path).unwrap_err();
        assert!(matches!(&err, ConfigError::Write { path: p, .. } if *p == path));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_failed_rename_removes_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_in(&dir);
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), "").unwrap();
        let err = Settings::default().save(&path).unwrap_err();
        assert!(matches!(&err, ConfigError::Write { path: p, .. } if *p == path));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
