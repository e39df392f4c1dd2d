//! The job image this binary carries inside itself: the `FROM scratch`
//! Dockerfile from `docker/` and the static musl worker that `build.rs`
//! compiled from `docker/worker/`. With both in memory, `docker:build` needs
//! nothing from the network or from the source tree.

use super::BuildContext;

const DOCKERFILE: &str = include_str!("../../../docker/Dockerfile");
const WORKER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cmm-worker"));

/// The build context: exactly the Dockerfile and the worker.
pub fn context() -> BuildContext {
    BuildContext::new()
        .file("Dockerfile", DOCKERFILE.as_bytes(), 0o644)
        .file("worker", WORKER, 0o755)
}
