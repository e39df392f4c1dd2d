//! `health`: whether this node can run a job right now. Each check says
//! what it found and, when something is wrong, what to do. Nothing here
//! changes state except a probe file written and removed in the data folder.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;

use serde::Serialize;

use crate::gateway::{KeySource, Probe, RetryPolicy, Upstream};
use crate::runner::Docker;

use super::context::runtime;
use super::docker_image::pinned_digest;
use super::{Context, OpsError, policy, reconcile};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    /// Works, but is worth attention.
    Warn,
    /// A job cannot run until this is fixed.
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: CheckStatus,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: CheckStatus::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn with(name: &'static str, status: CheckStatus, detail: String, fix: String) -> Check {
        Check {
            name,
            status,
            detail,
            fix: Some(fix),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// False when any check failed.
    pub healthy: bool,
    pub checks: Vec<Check>,
}

pub fn run(ctx: &mut Context) -> Result<Health, OpsError> {
    let runtime = runtime()?;
    let mut checks = Vec::new();
    let docker = runtime.block_on(Docker::connect());
    match &docker {
        Ok(docker) => {
            checks.push(engine_check(&runtime, docker));
            checks.push(image_check(ctx, &runtime, docker));
            if let Err(e) = runtime.block_on(reconcile::run(ctx, Some(docker))) {
                tracing::warn!(error = %e, "could not reconcile jobs of dead host processes");
            }
        }
        Err(e) => {
            checks.push(Check::with(
                "docker",
                CheckStatus::Fail,
                e.to_string(),
                "start the Docker Engine, and check that this user may use its socket".into(),
            ));
            checks.push(Check::with(
                "image",
                CheckStatus::Fail,
                "not checked: the Docker Engine is unreachable".into(),
                "fix the docker check first".into(),
            ));
        }
    }
    checks.push(folder_check(ctx));
    checks.push(database_check(ctx));
    checks.push(policies_check(ctx)?);
    checks.push(upstream_check(ctx, &runtime));
    Ok(Health {
        healthy: checks.iter().all(|c| c.status != CheckStatus::Fail),
        checks,
    })
}

fn engine_check(runtime: &tokio::runtime::Runtime, docker: &Docker) -> Check {
    match runtime.block_on(docker.version()) {
        Ok(v) if v.rootless || v.userns_remap => Check::ok(
            "docker",
            format!(
                "Docker Engine {} reachable, API {}{}",
                v.engine,
                v.api,
                if v.rootless {
                    ", rootless"
                } else {
                    ", user namespaces remapped"
                }
            ),
        ),
        Ok(v) => Check::with(
            "docker",
            CheckStatus::Warn,
            format!(
                "Docker Engine {} reachable, API {}; it runs as root without user-namespace \
                 remapping",
                v.engine, v.api
            ),
            "jobs run as an unprivileged user with every capability dropped, but a container \
             escape would be root on this host: consider rootless Docker or userns-remap"
                .into(),
        ),
        Err(e) => Check::with(
            "docker",
            CheckStatus::Fail,
            e.to_string(),
            "check the Docker Engine's state and logs".into(),
        ),
    }
}

fn image_check(ctx: &Context, runtime: &tokio::runtime::Runtime, docker: &Docker) -> Check {
    let image = &ctx.settings.docker.image;
    let pinned = pinned_digest(image);
    let get_it = if pinned.is_some() {
        "run `claude-max-market docker:pull`"
    } else {
        "run `claude-max-market docker:build`"
    };
    match runtime.block_on(docker.image(image)) {
        Ok(Some(info)) => match pinned {
            Some(digest) if !info.repo_digests.iter().any(|d| d.ends_with(digest)) => Check::with(
                "image",
                CheckStatus::Fail,
                format!("{image} is present but none of its digests is {digest}"),
                get_it.into(),
            ),
            Some(digest) => Check::ok("image", format!("{image} present, digest {digest}")),
            None => Check::ok("image", format!("{image} present ({})", info.id)),
        },
        Ok(None) => Check::with(
            "image",
            CheckStatus::Fail,
            format!("{image} is not on this machine"),
            get_it.into(),
        ),
        Err(e) => Check::with(
            "image",
            CheckStatus::Fail,
            e.to_string(),
            "check the Docker Engine's state and logs".into(),
        ),
    }
}

fn folder_check(ctx: &Context) -> Check {
    let probe = ctx
        .home
        .root()
        .join(format!(".health-{}", std::process::id()));
    let written = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"ok").and_then(|()| f.sync_all()));
    let removed = std::fs::remove_file(&probe);
    match written.and(removed) {
        Ok(()) => Check::ok(
            "data folder",
            format!("{} is writable", ctx.home.root().display()),
        ),
        Err(e) => Check::with(
            "data folder",
            CheckStatus::Fail,
            format!("cannot write in {}: {e}", ctx.home.root().display()),
            "check the folder's owner, permissions and free space, or pass another --home".into(),
        ),
    }
}

fn database_check(ctx: &Context) -> Check {
    match ctx.store.integrity_check() {
        Ok(problems) if problems.is_empty() => Check::ok("database", "SQLite integrity check ok"),
        Ok(problems) => Check::with(
            "database",
            CheckStatus::Fail,
            format!("SQLite integrity check found: {}", problems.join("; ")),
            format!(
                "restore {} from a backup; `claude-max-market audit --verify` shows whether the \
                 audit log is intact",
                ctx.home.database_path().display()
            ),
        ),
        Err(e) => Check::with(
            "database",
            CheckStatus::Fail,
            e.to_string(),
            "check the database file and its folder".into(),
        ),
    }
}

fn policies_check(ctx: &Context) -> Result<Check, OpsError> {
    let policies = policy::list(ctx)?;
    let broken: Vec<String> = policies
        .iter()
        .filter(|p| p.problem.is_some())
        .map(|p| {
            format!(
                "{} ({}): {}",
                p.role,
                p.plugin.name,
                p.problem.as_deref().unwrap_or_default()
            )
        })
        .collect();
    let names: Vec<String> = policies
        .iter()
        .map(|p| format!("{}={}", p.role, p.plugin.name))
        .collect();
    Ok(if broken.is_empty() {
        Check::ok("policies", format!("all load: {}", names.join(", ")))
    } else {
        Check::with(
            "policies",
            CheckStatus::Fail,
            broken.join("; "),
            "activate a working plugin with `policy set ROLE FILE`, or `policy reset ROLE` for \
             the default"
                .into(),
        )
    })
}

/// Asks the upstream itself: a key on disk says nothing about whether the
/// API answers or takes it.
fn upstream_check(ctx: &Context, runtime: &tokio::runtime::Runtime) -> Check {
    const NAME: &str = "gateway upstream";
    let base = &ctx.settings.api.base_url;
    let (key, source) = match ctx.api_key() {
        Ok(found) => found,
        Err(e) => {
            return Check::with(
                NAME,
                CheckStatus::Fail,
                format!("{base}, but no usable API key"),
                e.to_string(),
            );
        }
    };
    let from = match source {
        KeySource::Env => "ANTHROPIC_API_KEY".to_owned(),
        KeySource::File(path) => path.display().to_string(),
    };
    let upstream = Upstream {
        base_url: base.clone(),
        key,
        retry: RetryPolicy::default(),
    };
    let model = &ctx.settings.api.default_model;
    let fix_address = "check api.baseUrl and this machine's route to it".to_owned();
    match runtime.block_on(upstream.probe(model)) {
        Ok(Probe::Ready) => Check::ok(
            NAME,
            format!("{base} answers, with the API key from {from}"),
        ),
        Ok(Probe::Refused { status, message }) if status == 429 || status == 529 => Check::with(
            NAME,
            CheckStatus::Warn,
            format!("{base} is busy ({status}): {message}"),
            "jobs wait and retry; nothing to fix here unless it lasts".into(),
        ),
        Ok(Probe::Refused { status, message }) if status == 401 || status == 403 => Check::with(
            NAME,
            CheckStatus::Fail,
            format!("{base} refused the API key from {from} ({status}): {message}"),
            format!("put a valid key in {from}"),
        ),
        Ok(Probe::Refused { status, message }) => Check::with(
            NAME,
            CheckStatus::Fail,
            format!("{base} answered {status} to a token count for {model}: {message}"),
            "check api.baseUrl and api.defaultModel".into(),
        ),
        Ok(Probe::Unreachable { reason }) => Check::with(
            NAME,
            CheckStatus::Fail,
            format!("{base} is unreachable: {reason}"),
            fix_address,
        ),
        Err(e) => Check::with(NAME, CheckStatus::Fail, e.to_string(), fix_address),
    }
}
