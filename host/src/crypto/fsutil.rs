//! Small filesystem helpers shared by the key store and the file helpers
//! of the envelope: durable renames.

use std::io;
use std::path::Path;

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
