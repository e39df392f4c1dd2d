//! Everything that talks to the Docker Engine.
//!
//! The host runs each Claude job in a throw-away, locked-down container. This
//! module is the only place that speaks the Engine API (through bollard):
//!
//! - [`Docker`] (here): a connected client whose API version has been
//!   negotiated with the daemon. Without negotiation bollard speaks its own
//!   (newer) default API version, which an older engine such as 20.10
//!   (API 1.41) rejects on every call, so [`Docker::connect`] always negotiates.
//! - [`image`]: building an image from a [`context`] (in memory, or from
//!   this machine's files, streamed), pulling (with digest pinning),
//!   inspecting, tagging and pushing images; [`job_image`] is the context of
//!   the job image this binary carries.
//! - [`spec`]: the hardened container spec, built in exactly one place so a
//!   security review has one function to read; [`program`] is what runs in
//!   it (the worker, or a command under the relay) and [`hardening`] the
//!   record of it that the audit log keeps; [`relay`] carries the relay.
//! - [`run`]: running one job container to the end and always removing it.
//! - [`labels`] and [`clean`]: what this tool owns, and cleaning it up
//!   without ever touching containers it did not create.
//!
//! Only local unix sockets are supported: a remote engine would see the host
//! paths bind-mounted into job containers on the wrong machine.

pub mod clean;
pub mod context;
pub mod error;
pub mod hardening;
pub mod image;
pub mod job_image;
pub mod labels;
pub mod program;
pub mod relay;
pub mod run;
pub mod spec;

use std::path::Path;

pub use clean::OwnedContainer;
pub use context::BuildContext;
pub use error::RunnerError;
pub use hardening::Hardening;
pub use image::{BuildEvent, ImageInfo, PullProgress, PulledImage};
pub use labels::{LABEL_PREFIX, MANAGED_LABEL};
pub use program::{CommandSpec, Program, WorkspaceMount};
pub use run::{JobEnd, JobRun, Stream};
pub use spec::{GATEWAY_MOUNT, JobContainer};

/// Where the engine listens when `DOCKER_HOST` is unset.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long one engine request may take to answer (headers, not whole
/// streams: builds, pulls, attach and wait stream for as long as they need).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// A connected Docker Engine client whose API version was negotiated.
#[derive(Debug, Clone)]
pub struct Docker {
    inner: bollard::Docker,
    socket: String,
}

/// What the engine reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineVersion {
    /// Engine release, e.g. `20.10.24+dfsg1`.
    pub engine: String,
    /// Highest API version the engine speaks, e.g. `1.41`.
    pub api: String,
    /// API version this client negotiated and uses for every call.
    pub client_api: String,
    /// The daemon runs rootless (`name=rootless` in its security options).
    pub rootless: bool,
    /// The daemon remaps container users (`name=userns` in its security options).
    pub userns_remap: bool,
    /// The raw security options, e.g. `name=seccomp,profile=default`.
    pub security_options: Vec<String>,
}

impl Docker {
    /// Connects to the engine at `DOCKER_HOST` (which must be `unix://...`)
    /// or else `/var/run/docker.sock`, and negotiates the API version.
    pub async fn connect() -> Result<Docker, RunnerError> {
        let socket = socket_path(std::env::var("DOCKER_HOST").ok())?;
        Docker::connect_to(Path::new(&socket)).await
    }

    /// Connects to the engine listening on the unix socket at `socket`.
    pub async fn connect_to(socket: &Path) -> Result<Docker, RunnerError> {
        let socket_str = socket.display().to_string();
        let connect_error = |source| RunnerError::Connect {
            socket: socket_str.clone(),
            source,
        };
        let client = bollard::Docker::connect_with_unix(
            &socket_str,
            REQUEST_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(connect_error)?;
        let inner = client.negotiate_version().await.map_err(connect_error)?;
        tracing::debug!(socket = %socket_str, api = %inner.client_version(), "connected to the Docker Engine");
        Ok(Docker {
            inner,
            socket: socket_str,
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Engine and API versions, and whether the daemon is rootless or
    /// remaps users (both change what "uid 65532 in the container" means on
    /// the host).
    pub async fn version(&self) -> Result<EngineVersion, RunnerError> {
        let version = self
            .inner
            .version()
            .await
            .map_err(RunnerError::engine("reading the engine version"))?;
        let info = self
            .inner
            .info()
            .await
            .map_err(RunnerError::engine("reading the engine info"))?;
        let security_options = info.security_options.unwrap_or_default();
        let has = |name: &str| {
            security_options
                .iter()
                .any(|opt| opt.split(',').any(|field| field == format!("name={name}")))
        };
        Ok(EngineVersion {
            engine: version.version.unwrap_or_default(),
            api: version.api_version.unwrap_or_default(),
            client_api: self.inner.client_version().to_string(),
            rootless: has("rootless"),
            userns_remap: has("userns"),
            security_options,
        })
    }
}

/// The socket named by `DOCKER_HOST`, refusing anything but `unix://`
/// rather than silently falling back to the default socket.
fn socket_path(docker_host: Option<String>) -> Result<String, RunnerError> {
    match docker_host {
        Some(host) if !host.is_empty() => match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => Ok(path.to_string()),
            _ => Err(RunnerError::UnsupportedHost { host }),
        },
        _ => Ok(DEFAULT_SOCKET.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_must_be_a_unix_socket() {
        assert_eq!(socket_path(None).ok().as_deref(), Some(DEFAULT_SOCKET));
        assert_eq!(
            socket_path(Some(String::new())).ok().as_deref(),
            Some(DEFAULT_SOCKET)
        );
        assert_eq!(
            socket_path(Some("unix:///run/user/1000/docker.sock".into()))
                .ok()
                .as_deref(),
            Some("/run/user/1000/docker.sock")
        );
        for bad in [
            "tcp://10.0.0.1:2375",
            "ssh://host",
            "unix://",
            "/var/run/docker.sock",
        ] {
            assert!(
                matches!(
                    socket_path(Some(bad.into())),
                    Err(RunnerError::UnsupportedHost { .. })
                ),
                "{bad}"
            );
        }
    }
}
