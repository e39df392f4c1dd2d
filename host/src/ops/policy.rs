//! `policy list|show|set|reset`, and building the decision pipeline from the
//! plugins active in this data folder.
//!
//! A plugin activated with `policy set` is copied into `policies/` under its
//! sha256, so editing or deleting the original file changes nothing; the
//! digest is checked again every time it is loaded.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::policy::{
    CompileCache, Pipeline, PluginMeta, PluginOrigin, PluginPre, PolicyEngine, Role, Slot, defaults,
};
use crate::store::ActivePolicy;

use super::{Context, OpsError};

/// Largest component `policy set` accepts; real policies are tens of KiB.
const MAX_COMPONENT_BYTES: u64 = 32 << 20;

/// One role's active plugin and whether it is usable right now.
#[derive(Debug, Serialize)]
pub struct PolicyStatus {
    pub role: Role,
    pub world: &'static str,
    pub plugin: PluginMeta,
    pub activated_at: Option<String>,
    /// "ok", or the error class every decision of this role will give.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Builds the pipeline from the active plugins. A plugin that cannot be
/// loaded becomes a `missing` slot: its role denies, the others still run.
pub fn pipeline(ctx: &Context, engine: &Arc<PolicyEngine>) -> Result<Pipeline, OpsError> {
    let cache = ctx.compile_cache();
    let active = ctx.store.active_policies()?;
    let slots = Role::ALL
        .into_iter()
        .map(|role| {
            let chosen = active.iter().find(|p| p.role == role.as_str());
            load_slot(ctx, engine, cache.as_ref(), role, chosen)
        })
        .collect();
    Ok(Pipeline::new(engine.clone(), slots, ctx.settings.flatten()))
}

fn load_slot(
    ctx: &Context,
    engine: &PolicyEngine,
    cache: Option<&CompileCache>,
    role: Role,
    chosen: Option<&ActivePolicy>,
) -> Slot {
    let Some(active) = chosen else {
        let wasm = defaults::component(role);
        return match PluginPre::load(
            engine,
            cache,
            role,
            &defaults::name(role),
            PluginOrigin::Default,
            wasm,
        ) {
            Ok(plugin) => Slot::ready(plugin),
            Err(e) => Slot::missing(role, default_meta(role), e.to_string()),
        };
    };
    let meta = PluginMeta {
        name: active.name.clone(),
        digest: active.sha256.clone(),
        origin: PluginOrigin::File,
    };
    match read_stored(ctx, active) {
        Err(message) => Slot::missing(role, meta, message),
        Ok(wasm) => {
            match PluginPre::load(engine, cache, role, &active.name, PluginOrigin::File, &wasm) {
                Ok(plugin) => Slot::ready(plugin),
                Err(e) => Slot::missing(role, meta, e.to_string()),
            }
        }
    }
}

/// Reads an activated component back and checks it is still the one that
/// was activated.
fn read_stored(ctx: &Context, active: &ActivePolicy) -> Result<Vec<u8>, String> {
    let fix = format!(
        "run `policy set {} FILE` again or `policy reset {}`",
        active.role, active.role
    );
    let name = stored_name(&active.sha256);
    let wasm = ctx
        .home
        .subdir("policies")
        .map_err(|e| e.to_string())
        .and_then(|dir| dir.read(&name).map_err(|e| e.to_string()))
        .map_err(|e| {
            format!(
                "{} plugin '{}' is missing from policies/{name} ({e}); {fix}",
                active.role, active.name
            )
        })?;
    if hex::encode(Sha256::digest(&wasm)) != active.sha256 {
        return Err(format!(
            "{} plugin '{}' in policies/{name} was changed after it was activated; {fix}",
            active.role, active.name
        ));
    }
    Ok(wasm)
}

fn stored_name(sha256: &str) -> String {
    format!("{sha256}.wasm")
}

fn default_meta(role: Role) -> PluginMeta {
    PluginMeta {
        name: defaults::name(role),
        digest: hex::encode(Sha256::digest(defaults::component(role))),
        origin: PluginOrigin::Default,
    }
}

/// The active plugin of every role, each loaded and validated.
pub fn list(ctx: &Context) -> Result<Vec<PolicyStatus>, OpsError> {
    let engine = ctx.engine()?;
    let pipeline = pipeline(ctx, &engine)?;
    let active = ctx.store.active_policies()?;
    Ok(pipeline
        .slots()
        .iter()
        .map(|slot| PolicyStatus {
            role: slot.role(),
            world: slot.role().world(),
            plugin: slot.meta().clone(),
            activated_at: active
                .iter()
                .find(|p| p.role == slot.role().as_str())
                .map(|p| p.activated_at.clone()),
            state: slot.failure().map_or("ok".into(), |f| f.class.to_string()),
            problem: slot.failure().map(|f| f.message.clone()),
        })
        .collect())
}

/// The active plugin of one role.
pub fn show(ctx: &Context, role: Role) -> Result<PolicyStatus, OpsError> {
    let mut all = list(ctx)?;
    let index = all
        .iter()
        .position(|s| s.role == role)
        .expect("list covers every role");
    Ok(all.swap_remove(index))
}

/// Activates the component at `path` for `role`, after proving it implements
/// the role's world and accepts the current settings.
pub fn set(ctx: &mut Context, role: Role, path: &Path) -> Result<PolicyStatus, OpsError> {
    let wasm = read_component(path)?;
    let name = path
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
    let engine = ctx.engine()?;
    let plugin = PluginPre::load(
        &engine,
        ctx.compile_cache().as_ref(),
        role,
        &name,
        PluginOrigin::File,
        &wasm,
    )?;
    plugin
        .validate(&engine, ctx.settings.flatten())
        .map_err(OpsError::PluginRefused)?;
    let digest = plugin.meta().digest.clone();
    let dir = ctx.home.subdir("policies")?;
    let write_err = |source| OpsError::Write {
        path: ctx.home.root().join("policies").join(stored_name(&digest)),
        source,
    };
    dir.write(stored_name(&digest), &wasm).map_err(write_err)?;
    ctx.store.set_active_policy(&ActivePolicy {
        role: role.as_str().into(),
        origin: PluginOrigin::File.as_str().into(),
        name,
        sha256: digest,
        activated_at: now_rfc3339(),
    })?;
    show(ctx, role)
}

/// Goes back to the embedded default for `role`.
pub fn reset(ctx: &mut Context, role: Role) -> Result<PolicyStatus, OpsError> {
    ctx.store.reset_active_policy(role.as_str())?;
    show(ctx, role)
}

fn read_component(path: &Path) -> Result<Vec<u8>, OpsError> {
    let read_err = |source| OpsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut wasm = Vec::new();
    file.take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut wasm)
        .map_err(read_err)?;
    if wasm.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(OpsError::InvalidInput {
            what: format!(
                "{} is larger than {} MiB; that is not a policy plugin",
                path.display(),
                MAX_COMPONENT_BYTES >> 20
            ),
        });
    }
    Ok(wasm)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC time always formats as RFC 3339")
}
