//! Small filesystem helpers shared by the key store and the file helpers
//! of the envelope: durable renames, and temporary outputs that are removed
//! however the process ends: on drop, on a signal (through
//! [`remove_pending`]), or by the next run after a crash ([`sweep_stale`]).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Fsyncs directory `dir` so that a rename into it survives a crash.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Directories cannot be opened for syncing here; renames are as durable
/// as the platform makes them.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// The temporary outputs this process is writing now.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A temporary output on the pending list while this lives.
pub(crate) struct Pending(PathBuf);

impl Pending {
    pub(crate) fn register(path: &Path) -> Pending {
        lock_pending().push(path.to_owned());
        Pending(path.to_owned())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        lock_pending().retain(|p| p != &self.0);
    }
}

fn lock_pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the list leaves it usable: it is only paths.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every temporary output this process is writing. For a signal
/// handler that is about to end the process, so nothing is half-written
/// and left behind.
pub fn remove_pending() {
    for path in lock_pending().drain(..) {
        let _ = std::fs::remove_file(path);
    }
}

/// Removes the files in `dir` named `prefix…suffix` that no live process
/// is writing: a writer holds an exclusive lock on its temporary file for
/// as long as it writes, and the kernel drops the lock when the writer dies
/// however it dies. Best effort: a file that cannot be opened is left.
pub(crate) fn sweep_stale(dir: &Path, prefix: &str, suffix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(prefix) && name.ends_with(suffix)) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() {
            let _ = std::fs::remove_file(&path);
        }
    }
}
