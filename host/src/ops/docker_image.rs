//! `docker:build` and `docker:pull`: getting the job image onto this
//! machine. The build needs nothing from the network: the host carries the
//! worker binary and the Dockerfile inside itself. A pull of an image pinned
//! by digest must produce exactly that digest. Both are audited.

use serde::Serialize;
use serde_json::json;

use crate::runner::{BuildEvent, Docker, PullProgress, job_image};

use super::context::runtime;
use super::{Context, OpsError};

/// What `docker:build` made.
#[derive(Debug, Clone, Serialize)]
pub struct Built {
    pub tag: String,
    pub id: String,
}

/// What `docker:pull` fetched.
#[derive(Debug, Clone, Serialize)]
pub struct Pulled {
    pub reference: String,
    pub id: String,
    pub repo_digests: Vec<String>,
    /// The digest the reference is pinned to, which the pull matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
}

/// Builds the job image as `tag` (default: `docker.image`).
pub fn build(
    ctx: &mut Context,
    tag: Option<String>,
    no_cache: bool,
    on_event: &mut dyn FnMut(BuildEvent),
) -> Result<Built, OpsError> {
    let tag = match tag {
        Some(tag) => tag,
        None if pinned_digest(&ctx.settings.docker.image).is_some() => {
            return Err(OpsError::InvalidInput {
                what: format!(
                    "docker.image ({}) is pinned by digest, which a local build cannot \
                     reproduce; pass --tag NAME:TAG, or pull the pinned image with docker:pull",
                    ctx.settings.docker.image
                ),
            });
        }
        None => ctx.settings.docker.image.clone(),
    };
    let runtime = runtime()?;
    let docker = runtime.block_on(Docker::connect())?;
    build_on(ctx, &runtime, &docker, tag, no_cache, on_event)
}

/// Builds the job image as `tag` on `docker`, and audits it.
pub(super) fn build_on(
    ctx: &mut Context,
    runtime: &tokio::runtime::Runtime,
    docker: &Docker,
    tag: String,
    no_cache: bool,
    on_event: &mut dyn FnMut(BuildEvent),
) -> Result<Built, OpsError> {
    let id =
        runtime.block_on(docker.build_image(&tag, no_cache, &job_image::context(), on_event))?;
    ctx.store.append_audit(
        "docker.build",
        &tag,
        &json!({ "tag": tag, "image_id": id, "no_cache": no_cache }),
    )?;
    Ok(Built { tag, id })
}

/// Pulls `reference` (default: `docker.image`).
pub fn pull(
    ctx: &mut Context,
    reference: Option<String>,
    on_progress: &mut dyn FnMut(PullProgress),
) -> Result<Pulled, OpsError> {
    let reference = reference.unwrap_or_else(|| ctx.settings.docker.image.clone());
    let runtime = runtime()?;
    let pulled = runtime.block_on(async {
        let docker = Docker::connect().await?;
        docker.pull_image(&reference, on_progress).await
    })?;
    let pinned = pinned_digest(&reference).map(str::to_owned);
    ctx.store.append_audit(
        "docker.pull",
        &reference,
        &json!({
            "reference": reference,
            "image_id": pulled.id,
            "repo_digests": pulled.repo_digests,
            "pinned": pinned,
        }),
    )?;
    Ok(Pulled {
        reference,
        id: pulled.id,
        repo_digests: pulled.repo_digests,
        pinned,
    })
}

/// The `sha256:…` a reference is pinned to, if it is.
pub(super) fn pinned_digest(reference: &str) -> Option<&str> {
    reference
        .split_once('@')
        .map(|(_, digest)| digest)
        .filter(|digest| digest.starts_with("sha256:"))
}
