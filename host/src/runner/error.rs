//! The one error type of the runner: each variant says what went wrong and
//! what the operator can do about it, because these messages reach the CLI
//! user unchanged.

use bollard::errors::Error as BollardError;

/// Everything that can go wrong while talking to the Docker Engine.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The engine could not be reached or did not answer the version handshake.
    #[error(
        "cannot reach the Docker Engine at {socket}: {source}; is the daemon running \
         (`systemctl status docker`) and may this user use its socket (root or the `docker` group)?"
    )]
    Connect {
        socket: String,
        #[source]
        source: BollardError,
    },

    /// `DOCKER_HOST` names something other than a local unix socket.
    #[error(
        "DOCKER_HOST={host} is not supported: only a local unix socket (unix:///path) may be used; \
         unset DOCKER_HOST to use /var/run/docker.sock"
    )]
    UnsupportedHost { host: String },

    /// The in-memory build context could not be assembled.
    #[error("cannot put {path} into the image build context: {reason}")]
    BuildContext { path: String, reason: String },

    /// The daemon reported an error while building an image.
    #[error(
        "building image {tag} failed: {message}; fix the build input and run \
         `claude-max-market docker:build` again"
    )]
    Build { tag: String, message: String },

    /// Pulling an image failed (commonly: no registry is reachable from here).
    #[error(
        "pulling image {reference} failed: {message}; the registry may not be reachable from this \
         machine (no network, or no registry at that address); build the image locally with \
         `claude-max-market docker:build` instead, or check the reference"
    )]
    Pull { reference: String, message: String },

    /// The pulled image does not carry the digest the reference was pinned to.
    #[error(
        "image {reference} was pinned to {expected} but the engine reports digests [{}]; \
         refusing to use it: check the pinned digest or the registry serving it",
        found.join(", ")
    )]
    DigestMismatch {
        reference: String,
        expected: String,
        found: Vec<String>,
    },

    /// Pushing an image failed.
    #[error("pushing image {reference} failed: {message}; is the registry running and reachable?")]
    Push { reference: String, message: String },

    /// A job was started from an image the engine does not have. Jobs never
    /// pull: what runs is what the owner put there.
    #[error(
        "image {image} is not present in the Docker Engine, and jobs never pull one; build the \
         job image with `claude-max-market docker:build` (or `docker:build --agent claude-code`), \
         pull it with `claude-max-market docker:pull --tag {image}`, or build your own with \
         `docker build -t {image} .`"
    )]
    ImageMissing { image: String },

    /// A container with the job's name already exists.
    #[error(
        "a container named {name} already exists (left over from an earlier run?); remove it with \
         `docker rm -f {name}` or let the host's cleanup remove leftovers"
    )]
    NameInUse { name: String },

    /// The job container spec is unsafe or malformed; nothing was sent to the engine.
    #[error("invalid job container spec: {0}")]
    Spec(String),

    /// A reference (image name) could not be understood.
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },

    /// Any other engine call failure, with the step that was under way.
    #[error(
        "the Docker Engine failed while {during}: {source}; check `docker info` and the daemon log"
    )]
    Engine {
        during: &'static str,
        #[source]
        source: BollardError,
    },
}

impl RunnerError {
    pub(crate) fn engine(during: &'static str) -> impl FnOnce(BollardError) -> RunnerError {
        move |source| RunnerError::Engine { during, source }
    }
}

/// The HTTP status of an engine error response, if it was one.
pub(crate) fn status_of(error: &BollardError) -> Option<u16> {
    match error {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The daemon's own message, without bollard's wrapping, for error texts that
/// already say which step failed.
pub(crate) fn daemon_message(error: &BollardError) -> String {
    match error {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        BollardError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}
