//! The gateway: a job container's only way out.
//!
//! Job containers run with no network. Each gets a Unix socket, bind-mounted
//! from a per-job host folder, on which the host serves an Anthropic Messages
//! API-compatible endpoint (`POST /v1/messages` and
//! `POST /v1/messages/count_tokens`); inside the container a relay makes it
//! plain HTTP on loopback for unmodified clients. Every request is checked
//! against what the job's admission decided ([`JobGrant`]); an allowed one is
//! held to the job's token budget (its input bounded and its `max_tokens`
//! clamped to what is left), forwarded to the real API with the owner's key
//! (which the container never sees), the reply is streamed back, and the
//! real token usage in it is metered into the job's totals as it arrives
//! ([`Meter`]).
//!
//! Layout:
//! - `credentials` — loading the owner's [`ApiKey`] and keeping it unprintable.
//! - `policy` — the [`JobGrant`] and the per-request checks.
//! - `body` — the request body's top level: reading, bounding, rewriting.
//! - `meter` — the job's totals, the budget ledger with per-request
//!   reservations, and the [`Meter`] the host implements.
//! - `service` — one request: routing, refusals, admission, forwarding.
//! - `upstream` — the real API: headers, retries, token counts.
//! - `relay` — streaming the reply back while metering it; `sse` parses it.
//! - this file — the socket, the accept loop, and shutdown.

mod body;
mod credentials;
mod meter;
mod policy;
mod relay;
mod service;
mod sse;
mod upstream;

#[cfg(test)]
mod test_upstream;
#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use body::INPUT_OVERHEAD_TOKENS;
pub use credentials::{
    API_KEY_ENV, ApiKey, CREDENTIAL_PREFIX, CredentialError, KeySource, credentials_in,
    load_api_key,
};
pub use meter::{GatewayEvent, Meter, Metered, RequestRecord};
pub use policy::JobGrant;
pub use upstream::{Probe, RetryPolicy, Upstream};

use meter::Ledger;
use relay::Drains;
use service::Shared;
use upstream::UpstreamClient;

/// How long shutdown lets replies in flight finish before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// After a failed `accept` (e.g. out of file descriptors), wait this long
/// rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "the upstream URL `{base_url}` is not an http(s) URL with a host; use e.g. https://api.anthropic.com"
    )]
    BadBaseUrl { base_url: String },
    #[error("cannot set up the HTTP client for the upstream: {reason}")]
    HttpClient { reason: String },
    #[error(
        "{} exists and is not a socket; the gateway will not replace it, so remove it or use another job folder",
        path.display()
    )]
    NotASocket { path: PathBuf },
    #[error("cannot remove the stale gateway socket {}: {source}; remove it by hand", path.display())]
    StaleSocket { path: PathBuf, source: io::Error },
    #[error(
        "cannot listen on the gateway socket {}: {source}; check that its folder exists, the host can write to it, and the path is under 108 bytes",
        path.display()
    )]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot set mode 0600 on the gateway socket {}: {source}", path.display())]
    SocketMode { path: PathBuf, source: io::Error },
    #[error(
        "cannot give the gateway socket {} to the container's user {uid}:{gid}: {source}; changing an owner needs root, so run the host as root or start the gateway without a socket owner",
        path.display()
    )]
    SocketOwner {
        path: PathBuf,
        uid: u32,
        gid: u32,
        source: io::Error,
    },
}

/// A running gateway for one job.
pub struct Gateway {
    socket_path: PathBuf,
    ledger: Arc<Ledger>,
    stop: watch::Sender<bool>,
    /// Replies read on after their client hung up.
    drains: Drains,
    /// `None` once shut down.
    accept_loop: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Binds the socket at `socket_path` (its folder must exist), makes it
    /// mode 0600 and, if `socket_owner` is given, owned by the container's
    /// `uid:gid`, then serves it on the current tokio runtime.
    ///
    /// A socket file left at the path by an earlier crashed run is replaced;
    /// any other kind of file is an error.
    pub async fn start(
        socket_path: &Path,
        socket_owner: Option<(u32, u32)>,
        grant: JobGrant,
        upstream: Upstream,
        meter: Arc<dyn Meter>,
    ) -> Result<Gateway, GatewayError> {
        let upstream = UpstreamClient::new(upstream)?;
        remove_stale_socket(socket_path)?;
        let listener = UnixListener::bind(socket_path).map_err(|source| GatewayError::Bind {
            path: socket_path.to_owned(),
            source,
        })?;
        // Until the chmod lands the socket has the umask's mode; the per-job
        // folder around it is what keeps others out for that instant.
        if let Err(e) = secure_socket(socket_path, socket_owner) {
            drop(listener);
            let _ = fs::remove_file(socket_path);
            return Err(e);
        }
        tracing::info!(
            job_id = %grant.job_id,
            socket = %socket_path.display(),
            "gateway listening"
        );
        let ledger = Ledger::new(grant, meter);
        let (stop, stopped) = watch::channel(false);
        let drains = Drains::new(stopped.clone());
        let shared = Arc::new(Shared {
            ledger: Arc::clone(&ledger),
            upstream,
            drains: drains.clone(),
        });
        let accept_loop = tokio::spawn(accept_loop(listener, shared, stopped));
        Ok(Gateway {
            socket_path: socket_path.to_owned(),
            ledger,
            stop,
            drains,
            accept_loop: Some(accept_loop),
        })
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The job's totals so far.
    pub fn totals(&self) -> Metered {
        self.ledger.totals()
    }

    /// Stops accepting, gives replies in flight up to 2 s to finish (then
    /// cuts them off, charging each what was seen of it), removes the socket
    /// file and returns the final totals.
    pub async fn shutdown(mut self) -> Metered {
        self.stop.send_replace(true);
        remove_socket(&self.socket_path);
        if let Some(accept_loop) = self.accept_loop.take()
            && let Err(e) = accept_loop.await
        {
            tracing::error!(error = %e, "the gateway's accept loop failed");
        }
        // Replies whose client hung up settle at the stop signal.
        self.drains.settled().await;
        self.ledger.totals()
    }
}

impl Drop for Gateway {
    /// Dropped without `shutdown`: stop in the background and remove the
    /// socket now, so a crashed caller does not leave the container a door.
    fn drop(&mut self) {
        if self.accept_loop.is_some() {
            self.stop.send_replace(true);
            remove_socket(&self.socket_path);
        }
    }
}

fn remove_stale_socket(path: &Path) -> Result<(), GatewayError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            fs::remove_file(path).map_err(|source| GatewayError::StaleSocket {
                path: path.to_owned(),
                source,
            })
        }
        Ok(_) => Err(GatewayError::NotASocket {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(GatewayError::Bind {
            path: path.to_owned(),
            source,
        }),
    }
}

fn secure_socket(path: &Path, owner: Option<(u32, u32)>) -> Result<(), GatewayError> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
        GatewayError::SocketMode {
            path: path.to_owned(),
            source,
        }
    })?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| {
            GatewayError::SocketOwner {
                path: path.to_owned(),
                uid,
                gid,
                source,
            }
        })?;
    }
    Ok(())
}

fn remove_socket(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(socket = %path.display(), error = %e, "cannot remove the gateway socket");
    }
}

/// Accepts connections until told to stop, then drains them: each gets a
/// graceful shutdown (finish the reply in flight, then close), and whatever
/// is still running after the grace period is aborted.
async fn accept_loop(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop_requested(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(
                        stream,
                        Arc::clone(&shared),
                        stopped.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gateway accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            job_id = %shared.ledger.grant().job_id,
            connections = connections.len(),
            "replies still running after the shutdown grace period; cutting them off"
        );
        connections.shutdown().await;
    }
}

/// Resolves once shutdown is asked for, or the `Gateway` is gone.
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await.
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn serve_connection(
    stream: UnixStream,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let service = service_fn(move |request| service::handle(Arc::clone(&shared), request));
    let connection = http1::Builder::new()
        // With a timer set, hyper drops clients that dawdle over headers.
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop_requested(&mut stopped) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "gateway connection ended with an error");
    }
}
