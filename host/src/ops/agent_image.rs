//! `docker:build --agent claude-code [--wheel FILE]`: builds an agent's
//! image offline from what this machine has: the agent's program out of its
//! wheel (fetched from PyPI into the data folder's cache, checked against
//! PyPI's sha256, or the file the owner names) and this machine's own tools
//! with their libraries, in a `FROM scratch` image. Audited like any build.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::json;

use crate::agent::{Agent, claude_code, rootfs::Source, wheel};
use crate::runner::{BuildContext, BuildEvent, Docker};

use super::context::runtime;
use super::{Context, OpsError};

#[derive(Debug, Clone)]
pub struct AgentImageOptions {
    pub agent: Agent,
    /// Default: the agent's own image name.
    pub tag: Option<String>,
    pub no_cache: bool,
    /// A wheel file to take the agent from instead of PyPI.
    pub wheel: Option<PathBuf>,
}

/// What the build made.
#[derive(Debug, Clone, Serialize)]
pub struct AgentImage {
    pub agent: String,
    pub tag: String,
    pub id: String,
    /// The agent's version, as its wheel says.
    pub version: String,
    pub wheel: PathBuf,
    /// Hex sha256 of the agent's program.
    pub program_sha256: String,
}

/// How the build is going.
pub enum AgentBuildEvent {
    /// Bytes of the wheel downloaded, and in all.
    Download(u64, u64),
    Build(BuildEvent),
}

pub fn build(
    ctx: &mut Context,
    opts: &AgentImageOptions,
    on_event: &mut dyn FnMut(AgentBuildEvent),
) -> Result<AgentImage, OpsError> {
    let Agent::ClaudeCode = opts.agent;
    let runtime = runtime()?;
    let cache = ctx.home.root().join("cache").join("agents");
    std::fs::create_dir_all(&cache).map_err(|source| OpsError::Write {
        path: cache.clone(),
        source,
    })?;
    let wheel_path = match &opts.wheel {
        Some(path) => path.clone(),
        None => runtime.block_on(wheel::fetch(
            wheel::PYPI,
            claude_code::WHEEL_PACKAGE,
            claude_code::WHEEL_PLATFORM,
            &cache,
            &mut |done, total| on_event(AgentBuildEvent::Download(done, total)),
        ))?,
    };
    // The file reads like `2.1.332 (Claude Code)`.
    let version = wheel::read_text(&wheel_path, claude_code::WHEEL_VERSION)?
        .split_whitespace()
        .next()
        .unwrap_or("unknown")
        .to_owned();
    let program = cache.join(format!("claude-{version}"));
    let program_sha256 = wheel::extract(&wheel_path, claude_code::WHEEL_MEMBER, &program)?;
    let rootfs = claude_code::rootfs(&program)?;
    let mut context = BuildContext::new().file(
        "Dockerfile",
        claude_code::dockerfile(&version).into_bytes(),
        0o644,
    );
    for (path, item) in rootfs.items() {
        let inside = format!("rootfs{path}");
        context = match &item.source {
            Source::Host(host) => context.host_file(inside, host.clone(), item.mode),
            Source::Bytes(bytes) => context.file(inside, bytes.clone(), item.mode),
            Source::Symlink(target) => context.symlink(inside, target.clone()),
        };
    }
    let tag = opts
        .tag
        .clone()
        .unwrap_or_else(|| opts.agent.image().to_owned());
    let id = runtime.block_on(async {
        let docker = Docker::connect().await?;
        docker
            .build_image(&tag, opts.no_cache, &context, |e| {
                on_event(AgentBuildEvent::Build(e))
            })
            .await
    })?;
    let built = AgentImage {
        agent: opts.agent.name().to_owned(),
        tag,
        id,
        version,
        wheel: wheel_path,
        program_sha256,
    };
    ctx.store.append_audit(
        "docker.build",
        &built.tag,
        &json!({ "tag": built.tag, "image_id": built.id, "agent": built.agent,
                 "version": built.version, "program_sha256": built.program_sha256 }),
    )?;
    Ok(built)
}
