//! Running one job container to the end.
//!
//! Order matters: the container is attached to *before* it starts so no
//! early output is lost, stdin (for a program that reads it) is written and
//! then closed so the program sees EOF, and output is delivered as it
//! arrives. A timeout or cancellation sends SIGTERM first and waits the
//! program's stop grace (a command's relay uses it to stop the command and
//! send its workspace back), then SIGKILL. Whatever happens (normal exit,
//! engine error, timeout, cancellation, or the caller dropping the future)
//! the container is force-removed: explicitly on every path we control, and
//! by a drop guard that spawns the removal on the runtime when the future
//! is abandoned half-way.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::Docker;
use super::error::{RunnerError, status_of};
use super::spec::{GATEWAY_MOUNT, JobContainer};

/// A stop signal the engine could not deliver is retried until this passes.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    /// The program exited by itself with this status.
    Exited { code: i64 },
    /// The timeout elapsed; the container was killed.
    TimedOut,
    /// The cancellation token fired; the container was killed.
    Cancelled,
}

/// The result of [`Docker::run_job`]. The container no longer exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    pub container_id: String,
    pub end: JobEnd,
}

impl Docker {
    /// Creates the container described by `spec`, feeds it `stdin`, streams
    /// its output to `on_output` and waits for it to end, at most `timeout`
    /// after it started or until `cancel` fires. `on_started` gets the
    /// container id right after the start. The container is removed in
    /// every case, including when this future is dropped (then by a spawned
    /// task). If that removal fails after a timeout or cancellation the
    /// removal error is returned, as the job may still be running; after a
    /// normal exit it is only logged.
    pub async fn run_job(
        &self,
        spec: &JobContainer,
        stdin: Vec<u8>,
        timeout: Duration,
        cancel: CancellationToken,
        mut on_output: impl FnMut(Stream, &[u8]),
        on_started: impl FnOnce(&str),
    ) -> Result<JobRun, RunnerError> {
        spec.validate()?;
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let created = self
            .inner
            .create_container(Some(options), spec.to_create_body())
            .await
            .map_err(|e| match status_of(&e) {
                Some(404) => RunnerError::ImageMissing {
                    image: spec.image.clone(),
                },
                Some(409) => RunnerError::NameInUse {
                    name: spec.name.clone(),
                },
                _ => RunnerError::Engine {
                    during: "creating the job container",
                    source: e,
                },
            })?;
        let id = created.id;
        let guard = RemovalGuard {
            docker: self.inner.clone(),
            id: Some(id.clone()),
        };
        for warning in &created.warnings {
            tracing::warn!(container = %id, "engine warning on create: {warning}");
        }

        let outcome = self
            .drive(
                spec,
                &id,
                stdin,
                timeout,
                cancel,
                &mut on_output,
                on_started,
            )
            .await;
        let removal = remove_container(&self.inner, &id).await;
        guard.disarm();
        match (outcome, removal) {
            (outcome, Ok(())) => outcome.map(|end| JobRun {
                container_id: id,
                end,
            }),
            // The program is gone; a stopped leftover carries our labels and
            // is found by the owned-container cleanup.
            (Ok(JobEnd::Exited { code }), Err(e)) => {
                tracing::warn!(container = %id, "could not remove exited job container: {e}");
                Ok(JobRun {
                    container_id: id,
                    end: JobEnd::Exited { code },
                })
            }
            // A job we meant to stop may still be running: the caller must know.
            (Ok(JobEnd::TimedOut | JobEnd::Cancelled), Err(e)) => Err(e),
            // The first failure explains more than the cleanup's.
            (Err(first), Err(e)) => {
                tracing::warn!(container = %id, "could not remove job container: {e}");
                Err(first)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn drive(
        &self,
        spec: &JobContainer,
        id: &str,
        stdin: Vec<u8>,
        timeout: Duration,
        cancel: CancellationToken,
        on_output: &mut impl FnMut(Stream, &[u8]),
        on_started: impl FnOnce(&str),
    ) -> Result<JobEnd, RunnerError> {
        self.check_mounts(id).await?;
        let takes_stdin = spec.takes_stdin();
        let attach_options = AttachContainerOptionsBuilder::new()
            .stream(true)
            .logs(false)
            .stdin(takes_stdin)
            .stdout(true)
            .stderr(true)
            .build();
        let attached = self
            .inner
            .attach_container(id, Some(attach_options))
            .await
            .map_err(RunnerError::engine("attaching to the job container"))?;
        self.inner
            .start_container(id, None)
            .await
            .map_err(RunnerError::engine("starting the job container"))?;
        let deadline = tokio::time::Instant::now() + timeout;
        on_started(id);

        let mut input = attached.input;
        let mut output = attached.output;
        let feed_stdin = async move {
            if !takes_stdin {
                return Ok::<(), RunnerError>(());
            }
            // A program that exits without reading all of stdin closes the
            // pipe under us; that is its business, its exit status tells.
            if let Err(e) = input.write_all(&stdin).await {
                tracing::debug!(container = %id, "stdin not fully written: {e}");
            }
            if let Err(e) = input.shutdown().await {
                tracing::debug!(container = %id, "closing stdin: {e}");
            }
            Ok::<(), RunnerError>(())
        };
        let pump_output = async {
            while let Some(item) = output.next().await {
                match item.map_err(RunnerError::engine("reading the job's output"))? {
                    LogOutput::StdOut { message } => on_output(Stream::Stdout, &message),
                    LogOutput::StdErr { message } => on_output(Stream::Stderr, &message),
                    LogOutput::StdIn { .. } | LogOutput::Console { .. } => {}
                }
            }
            Ok(())
        };
        let wait_exit = async {
            let options = WaitContainerOptionsBuilder::new()
                .condition("not-running")
                .build();
            match self.inner.wait_container(id, Some(options)).next().await {
                Some(Ok(response)) => Ok(response.status_code),
                // bollard reports a non-zero exit status as an error.
                Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
                Some(Err(e)) => Err(RunnerError::Engine {
                    during: "waiting for the job container to exit",
                    source: e,
                }),
                None => Err(RunnerError::Engine {
                    during: "waiting for the job container to exit",
                    source: BollardError::DockerStreamError {
                        error: "the wait stream ended without an exit status".into(),
                    },
                }),
            }
        };
        let run = async {
            let ((), (), code) = tokio::try_join!(feed_stdin, pump_output, wait_exit)?;
            Ok(JobEnd::Exited { code })
        };
        tokio::pin!(run);

        let end = tokio::select! {
            biased;
            () = cancel.cancelled() => JobEnd::Cancelled,
            () = tokio::time::sleep_until(deadline) => JobEnd::TimedOut,
            result = &mut run => return result,
        };
        let grace = spec.stop_grace();
        if !grace.is_zero() {
            // Output keeps flowing while the program stops, so the job's
            // last words reach its log.
            let stopped = async {
                signal_container(&self.inner, id, "SIGTERM").await?;
                let _ = tokio::time::timeout(grace, &mut run).await;
                Ok::<(), RunnerError>(())
            };
            if let Err(e) = stopped.await {
                tracing::warn!(container = %id, "could not stop job container gently: {e}");
            }
        }
        // Not fatal: the force removal that follows kills as well, and its
        // failure is what gets reported.
        if let Err(e) = kill_container(&self.inner, id).await {
            tracing::warn!(container = %id, "could not kill job container: {e}");
        }
        Ok(end)
    }

    /// The engine adds an anonymous volume for every `VOLUME` in the image,
    /// which would give the job writable storage outside the spec, so refuse
    /// to start unless the gateway bind is the only mount.
    async fn check_mounts(&self, id: &str) -> Result<(), RunnerError> {
        let inspect = self
            .inner
            .inspect_container(id, None)
            .await
            .map_err(RunnerError::engine("inspecting the new job container"))?;
        let mounts = inspect.mounts.unwrap_or_default();
        let only_gateway = match mounts.as_slice() {
            [m] => m.destination.as_deref() == Some(GATEWAY_MOUNT) && m.rw == Some(false),
            _ => false,
        };
        if only_gateway {
            return Ok(());
        }
        let found: Vec<String> = mounts
            .iter()
            .map(|m| {
                format!(
                    "{} (rw={})",
                    m.destination.as_deref().unwrap_or("?"),
                    m.rw.unwrap_or(true)
                )
            })
            .collect();
        Err(RunnerError::Spec(format!(
            "the container would have mounts [{}] but only a read-only {GATEWAY_MOUNT} is allowed; \
             does the image declare a VOLUME?",
            found.join(", ")
        )))
    }
}

/// Force-removes a container on drop unless disarmed, so an abandoned
/// `run_job` future does not leave a (possibly running) container behind.
struct RemovalGuard {
    docker: bollard::Docker,
    id: Option<String>,
}

impl RemovalGuard {
    fn disarm(mut self) {
        self.id = None;
    }
}

impl Drop for RemovalGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let docker = self.docker.clone();
                runtime.spawn(async move {
                    if let Err(e) = remove_container(&docker, &id).await {
                        tracing::warn!(container = %id, "could not remove abandoned job container: {e}");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(container = %id, "no async runtime to remove the abandoned job container; it is left for cleanup");
            }
        }
    }
}

/// SIGKILL; a container that is already gone or stopped is fine.
pub(crate) async fn kill_container(docker: &bollard::Docker, id: &str) -> Result<(), RunnerError> {
    signal_container(docker, id, "SIGKILL").await
}

/// Sends `signal` to the container's init, which passes it on; a container
/// that is already gone or stopped is fine.
async fn signal_container(
    docker: &bollard::Docker,
    id: &str,
    signal: &str,
) -> Result<(), RunnerError> {
    let options = KillContainerOptionsBuilder::new().signal(signal).build();
    let sent = tokio::time::timeout(KILL_TIMEOUT, docker.kill_container(id, Some(options)));
    let sent = sent.await.map_err(|_| RunnerError::Engine {
        during: "signalling the job container",
        source: BollardError::RequestTimeoutError,
    })?;
    match sent {
        Ok(()) => Ok(()),
        Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
        Err(e) => Err(RunnerError::Engine {
            during: "killing the job container",
            source: e,
        }),
    }
}

/// Force-removal (kills if running), with any anonymous volumes; already
/// gone, or a removal already in progress, is fine.
pub(crate) async fn remove_container(
    docker: &bollard::Docker,
    id: &str,
) -> Result<(), RunnerError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) if status_of(&e) == Some(409) && e.to_string().contains("already in progress") => {
            Ok(())
        }
        Err(e) => Err(RunnerError::Engine {
            during: "removing the job container",
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::BuildContext;

    /// The host spawns these futures on a multi-threaded runtime.
    fn futures_are_send(docker: &Docker, spec: &JobContainer, context: &BuildContext) {
        fn is_send<T: Send>(_: T) {}
        is_send(docker.run_job(
            spec,
            Vec::new(),
            Duration::ZERO,
            CancellationToken::new(),
            |_, _| {},
            |_| {},
        ));
        is_send(docker.build_image("t", false, context, |_| {}));
        is_send(docker.pull_image("r", |_| {}));
        is_send(docker.owned_containers(&[]));
        is_send(docker.kill_and_remove("id"));
    }

    #[test]
    fn public_futures_are_send() {
        let _ = futures_are_send as fn(&Docker, &JobContainer, &BuildContext);
    }
}
