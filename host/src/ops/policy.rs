//! `policy list|show|set|reset`, and building the decision pipeline from the
//! plugins active in this data folder.
//!
//! A plugin activated with `policy set` or from a bundle is copied into
//! `policies/` under its sha256, so editing or deleting the original file
//! changes nothing; the digest is checked again every time it is loaded.
//! A bundle's plugin is also re-checked against today's trust store and
//! clock on every load: removing a key from trust, or a bundle expiring,
//! stops its plugins from deciding (they fail closed), and once any key is
//! trusted a loose `policy set` component fails closed too.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::policy::{
    CompileCache, NodeRules, Pipeline, PluginMeta, PluginOrigin, PluginPre, PolicyEngine, Role,
    Slot, defaults,
};
use crate::store::ActivePolicy;

use super::policy_bundle::{load_plugin, reassemble};
use super::{Context, OpsError, now_rfc3339, policy_trust};
use crate::bundle::TrustedKey;
use crate::config::ComplianceSettings;

/// Largest component `policy set` accepts; real policies are tens of KiB.
const MAX_COMPONENT_BYTES: u64 = 32 << 20;

/// One role's active plugin and whether it is usable right now.
#[derive(Debug, Serialize)]
pub struct PolicyStatus {
    pub role: Role,
    pub world: &'static str,
    pub plugin: PluginMeta,
    pub activated_at: Option<String>,
    /// Where a bundle's plugin was installed from (a path or URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
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
    let trusted = policy_trust::trusted_keys(ctx)?;
    let slots = Role::ALL
        .into_iter()
        .map(|role| {
            let chosen = active.iter().find(|p| p.role == role.as_str());
            load_slot(ctx, engine, cache.as_ref(), &trusted, role, chosen)
        })
        .collect();
    Ok(Pipeline::new(engine.clone(), slots, ctx.settings.flatten())
        .with_node_rules(node_rules(&ctx.settings.compliance)))
}

/// The `compliance.*` settings the host holds every decision to.
pub(super) fn node_rules(c: &ComplianceSettings) -> NodeRules {
    NodeRules {
        allowed_models: c.allowed_models.clone(),
        max_prompt_bytes: Some(c.max_prompt_bytes),
        allow_auto_approve: c.allow_auto_approve,
        allow_egress: c.allow_egress,
        allowed_images: c.allowed_images.clone(),
        restrict_local_images: c.restrict_local_images,
    }
}

fn load_slot(
    ctx: &Context,
    engine: &PolicyEngine,
    cache: Option<&CompileCache>,
    trusted: &[TrustedKey],
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
    let bundle_label = active
        .bundle
        .as_ref()
        .map(|b| format!("{b}@{}", active.revision.unwrap_or_default()));
    let meta = PluginMeta {
        name: active.name.clone(),
        digest: active.sha256.clone(),
        origin: if bundle_label.is_some() {
            PluginOrigin::Bundle
        } else {
            PluginOrigin::File
        },
        bundle: bundle_label,
    };
    let loaded = if active.bundle.is_some() {
        load_from_bundle(ctx, engine, cache, trusted, role, active)
    } else if trusted.is_empty() {
        load_loose(ctx, engine, cache, role, active)
    } else {
        Err(format!(
            "{role} plugin '{}' is a loose component, and this node trusts policy signing keys, so only signed bundles run; `policy install` a bundle or `policy reset {role}`",
            active.name
        ))
    };
    match loaded {
        Ok(plugin) => Slot::ready(plugin),
        Err(message) => Slot::missing(role, meta, message),
    }
}

/// A `policy set` component (only ever loaded while no key is trusted).
fn load_loose(
    ctx: &Context,
    engine: &PolicyEngine,
    cache: Option<&CompileCache>,
    role: Role,
    active: &ActivePolicy,
) -> Result<PluginPre, String> {
    let wasm = read_stored(ctx, active)?;
    PluginPre::load(engine, cache, role, &active.name, PluginOrigin::File, &wasm)
        .map_err(|e| e.to_string())
}

/// A bundle's component, re-checked as of now: the stored revision's
/// signatures against today's trust store, its expiry, and the digest.
fn load_from_bundle(
    ctx: &Context,
    engine: &PolicyEngine,
    cache: Option<&CompileCache>,
    trusted: &[TrustedKey],
    role: Role,
    active: &ActivePolicy,
) -> Result<PluginPre, String> {
    let name = active.bundle.as_deref().unwrap_or_default();
    let revision = active.revision.unwrap_or_default();
    let label = format!("{name}@{revision}");
    let fix =
        format!("install a newer revision of '{name}' (`policy update`) or `policy reset {role}`");
    let row = ctx
        .store
        .bundle_revision(name, revision)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!("bundle {label} is active for {role} but not recorded as installed; {fix}")
        })?;
    let bundle = reassemble(ctx, &row).map_err(|e| format!("bundle {label}: {e}; {fix}"))?;
    let trust = policy_trust::policy(ctx, trusted);
    trust
        .accept(&trust.check(&bundle.manifest_bytes, &bundle.signatures))
        .map_err(|e| format!("bundle {label} no longer passes this node's trust rules: {e}"))?;
    if bundle.manifest.expired_at(time::OffsetDateTime::now_utc()) {
        return Err(format!(
            "bundle {label} expired at {}; its plugins no longer decide; {fix}",
            bundle.manifest.expires
        ));
    }
    let entry = bundle
        .manifest
        .role(role.as_str())
        .filter(|e| e.sha256 == active.sha256)
        .ok_or_else(|| {
            format!(
                "bundle {label} has no {role} component with digest {}; {fix}",
                active.sha256
            )
        })?;
    bundle
        .check_digests()
        .map_err(|e| format!("bundle {label}: {e}; {fix}"))?;
    load_plugin(engine, cache, &bundle, entry).map_err(|e| e.to_string())
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

pub(super) fn stored_name(sha256: &str) -> String {
    format!("{sha256}.wasm")
}

/// Keeps a component in `policies/` under its digest.
pub(super) fn store_component(ctx: &Context, sha256: &str, wasm: &[u8]) -> Result<(), OpsError> {
    let dir = ctx.home.subdir("policies")?;
    dir.write(stored_name(sha256), wasm)
        .map_err(|source| OpsError::Write {
            path: ctx.home.root().join("policies").join(stored_name(sha256)),
            source,
        })
}

fn default_meta(role: Role) -> PluginMeta {
    PluginMeta {
        name: defaults::name(role),
        digest: hex::encode(Sha256::digest(defaults::component(role))),
        origin: PluginOrigin::Default,
        bundle: None,
    }
}

/// The active plugin of every role, each loaded and validated.
pub fn list(ctx: &Context) -> Result<Vec<PolicyStatus>, OpsError> {
    let engine = ctx.engine()?;
    let pipeline = pipeline(ctx, &engine)?;
    let active = ctx.store.active_policies()?;
    let revisions = ctx.store.bundle_revisions()?;
    Ok(pipeline
        .slots()
        .iter()
        .map(|slot| {
            let chosen = active.iter().find(|p| p.role == slot.role().as_str());
            PolicyStatus {
                role: slot.role(),
                world: slot.role().world(),
                plugin: slot.meta().clone(),
                activated_at: chosen.map(|p| p.activated_at.clone()),
                source: chosen.and_then(|p| {
                    revisions
                        .iter()
                        .find(|r| {
                            Some(&r.name) == p.bundle.as_ref() && Some(r.revision) == p.revision
                        })
                        .map(|r| r.source.clone())
                }),
                state: slot.failure().map_or("ok".into(), |f| f.class.to_string()),
                problem: slot.failure().map(|f| f.message.clone()),
            }
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
    if !ctx.store.trusted_keys()?.is_empty() {
        return Err(OpsError::LooseRefused {
            role: role.as_str().into(),
        });
    }
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
    store_component(ctx, &digest, &wasm)?;
    ctx.store.set_active_policy(&ActivePolicy {
        role: role.as_str().into(),
        origin: PluginOrigin::File.as_str().into(),
        name,
        sha256: digest,
        activated_at: now_rfc3339(),
        bundle: None,
        revision: None,
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
