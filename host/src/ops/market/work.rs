//! What a provider runs for a task, made from what the requester sent: the
//! prompt, or a command line in an image named by digest on a workspace
//! fetched from the object store and unpacked straight into the job
//! folder. Everything is opened and checked before the policies decide, so
//! they judge what would really run, and nothing is claimed that this node
//! cannot run. The changed workspace goes back the same way, sealed to the
//! requester.

use std::path::PathBuf;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::crypto::{NodeKey, PublicKey};
use crate::market::types::{CommandPayload, CommandTask, Task, WorkspaceObject};
use crate::market::workspace;
use crate::runner::Docker;
use crate::store::Budget;
use crate::workspace::Snapshot;

use super::super::docker_image::pinned_digest;
use super::super::job::folder::JobFolder;
use super::super::job::request::{CommandWork, ResolvedImage, Work, prompt_budget, resolve_image};
use super::super::job::results;
use super::super::{Context, OpsError, keys};
use super::requester::object_name;
use super::{Peer, matches_digest, open_sealed};

/// A task opened: what the job request is made of.
pub(super) struct Opened {
    pub image: ResolvedImage,
    pub budget: Budget,
    pub work: Work,
    pub egress: bool,
}

/// Opens `task` from `requester` into what would run here, the workspace
/// copied into `folder`. `Ok(Err(reason))` when this node cannot or will
/// not use what was sent.
pub(super) fn open(
    ctx: &mut Context,
    rt: &tokio::runtime::Runtime,
    docker: &Docker,
    peer: &Peer,
    (task, requester): (&Task, &str),
    folder: &JobFolder,
) -> Result<Result<Opened, String>, OpsError> {
    // Loaded once for the payload and the workspace; a key this node
    // cannot load leaves the task to others.
    let keys = match keys::decryption_keys(ctx) {
        Ok(keys) => keys,
        Err(e) => return Ok(Err(format!("its payload cannot be used: {e}"))),
    };
    let payload = match open_payload(&keys, task) {
        Ok(payload) => payload,
        Err(reason) => return Ok(Err(format!("its payload cannot be used: {reason}"))),
    };
    let Some(command) = &task.command else {
        let Ok(prompt) = String::from_utf8(payload) else {
            return Ok(Err("its prompt is not UTF-8 text".into()));
        };
        let image = match rt.block_on(resolve_image(docker, &ctx.settings.docker.image)) {
            Ok(image) => image,
            Err(e) => return Ok(Err(e.to_string())),
        };
        return Ok(Ok(Opened {
            image,
            budget: prompt_budget(ctx, &prompt, task.max_tokens),
            work: Work::Prompt {
                text: prompt,
                max_tokens: task.max_tokens,
            },
            egress: false,
        }));
    };
    let Ok(line) = serde_json::from_slice::<CommandPayload>(&payload) else {
        return Ok(Err("its payload is not a command line".into()));
    };
    let registries = &ctx.settings.market.pull_registries;
    let image = match rt.block_on(image_by_digest(docker, command, registries)) {
        Ok(image) => image,
        Err(reason) => return Ok(Err(reason)),
    };
    let workspace = match &command.workspace {
        None => None,
        Some(object) => match receive(ctx, rt, peer, (object, &keys), requester, folder)? {
            Ok(snapshot) => Some(snapshot),
            Err(reason) => return Ok(Err(reason)),
        },
    };
    Ok(Ok(Opened {
        image,
        budget: Budget {
            tokens: command.budget_tokens,
            requests: command.max_requests,
            timeout_secs: ctx.settings.limits.timeout_secs,
        },
        work: Work::Command(CommandWork {
            argv: line.argv,
            env: line.env,
            stdin: line.stdin,
            agent: command.agent.clone(),
            workspace,
        }),
        egress: command.egress,
    }))
}

/// The task's image as this node has it: only by digest, never a tag. An
/// image this node lacks is pulled, by digest, only from a registry in
/// `market.pullRegistries`. It goes by this node's own name for it (or the
/// pinned reference the registry vouches for), so compliance judges the
/// image by what the owner calls it, not by what the requester says it is.
async fn image_by_digest(
    docker: &Docker,
    command: &CommandTask,
    registries: &[String],
) -> Result<ResolvedImage, String> {
    let pinned = pinned_digest(&command.image).is_some();
    if !pinned && !command.image.starts_with("sha256:") {
        return Err(format!(
            "its image {} is not named by digest, and this node runs no image by tag for the market",
            command.image
        ));
    }
    let mut found = docker
        .image(&command.image)
        .await
        .map_err(|e| e.to_string())?;
    if found.is_none() {
        let host = registry_of(&command.image);
        if !pinned || !host.is_some_and(|h| registries.iter().any(|r| r == h)) {
            return Err(format!(
                "its image {} ({}) is not on this node, which pulls only by digest from \
                 market.pullRegistries ({})",
                command.reference,
                command.image,
                registries.join(",")
            ));
        }
        docker
            .pull_image(&command.image, |_| {})
            .await
            .map_err(|e| format!("its image {} could not be pulled: {e}", command.image))?;
        found = docker
            .image(&command.image)
            .await
            .map_err(|e| e.to_string())?;
    }
    let Some(info) = found else {
        return Err(format!(
            "its image {} vanished as it was pulled",
            command.image
        ));
    };
    let reference = if pinned && info.repo_digests.contains(&command.image) {
        command.image.clone()
    } else if info.repo_tags.contains(&command.reference) {
        command.reference.clone()
    } else {
        info.repo_tags
            .first()
            .cloned()
            .unwrap_or_else(|| info.id.clone())
    };
    Ok(ResolvedImage {
        reference,
        id: info.id,
    })
}

/// The registry a reference names (`host[:port]`, the first part of its
/// repository when that has a dot or a port, or is `localhost`).
fn registry_of(reference: &str) -> Option<&str> {
    let (first, _) = reference.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// Fetches, opens and checks the task's workspace, and copies it into the
/// job folder as a local job's is copied from the owner's folder.
fn receive(
    ctx: &Context,
    rt: &tokio::runtime::Runtime,
    peer: &Peer,
    (object, keys): (&WorkspaceObject, &[NodeKey]),
    requester: &str,
    folder: &JobFolder,
) -> Result<Result<Snapshot, String>, OpsError> {
    let limits = ctx.workspace_limits();
    if object.bytes > limits.max_bytes || object.files > limits.max_files {
        return Ok(Err(format!(
            "its workspace ({} bytes in {} files) is over this node's workspace.maxBytes \
             ({}) or workspace.maxFiles ({})",
            object.bytes, object.files, limits.max_bytes, limits.max_files
        )));
    }
    let dest = folder.workspace_in()?;
    let received = workspace::receive(
        rt.handle(),
        &peer.transport,
        object,
        keys,
        folder.path(),
        (&dest, limits, folder.owner()),
    );
    // What does not verify is thrown away with the job folder.
    Ok(match received {
        Err(e) => Err(format!("its workspace was refused: {e}")),
        Ok(received) if !received.skipped.is_empty() => Err(format!(
            "its workspace holds what a workspace may not: {}",
            received.skipped.join("; ")
        )),
        Ok(received) => Ok(Snapshot {
            source: PathBuf::from(format!("market:{requester}")),
            manifest: received.manifest,
        }),
    })
}

/// Packs the job's final workspace, seals it to the requester and stores
/// it; the provider then keeps none of it.
pub(super) fn send_back(
    ctx: &Context,
    rt: &tokio::runtime::Runtime,
    peer: &Peer,
    task: &str,
    requester: &PublicKey,
) -> Result<WorkspaceObject, OpsError> {
    let root = results::path(ctx, task);
    let sent = (|| {
        let final_dir = root.join(results::WORKSPACE_DIR);
        let dir = Dir::open_ambient_dir(&final_dir, ambient_authority()).map_err(|source| {
            OpsError::Read {
                path: final_dir.clone(),
                source,
            }
        })?;
        Ok(workspace::send(
            rt.handle(),
            &peer.transport,
            &dir,
            &root,
            &object_name(task, "out"),
            std::slice::from_ref(requester),
        )?)
    })();
    let _ = std::fs::remove_dir_all(&root);
    sent
}

/// Decrypts the payload and checks it is the one the task described.
fn open_payload(keys: &[NodeKey], task: &Task) -> Result<Vec<u8>, String> {
    let payload = open_sealed(keys, &task.payload, "the task's payload")?;
    if !matches_digest(&payload, &task.prompt_sha256) || payload.len() as u64 != task.prompt_bytes {
        return Err("the payload is not the one the task describes".into());
    }
    Ok(payload)
}
