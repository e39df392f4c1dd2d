//! A plugin compiled and linked for one role: the `…Pre` state that is cheap
//! to turn into a live instance.
//!
//! Loading proves the component implements its role's world (exports the
//! role's interface and `config-check`, imports nothing the host does not
//! give), so a plugin for the wrong role is refused here, not at decision time.

use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre};

use super::bindings::{approval, compliance, config_check, limits, pricing};
use super::cache::CompileCache;
use super::engine::{PolicyEngine, SandboxLimits};
use super::role::Role;
use super::sandbox::{Entropy, PluginSettings, PluginState};
use crate::wit::{WIT_PACKAGE, package_name, wit_version};

/// Where a plugin's own (bundle) configuration appears among its settings.
pub const OWN_CONFIG_PREFIX: &str = "plugin.";

/// Where an active plugin came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginOrigin {
    /// Built from `plugins/` and embedded in this binary.
    Default,
    /// A local component activated with `policy set`.
    File,
    /// A component from a signed policy bundle.
    Bundle,
}

impl PluginOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginOrigin::Default => "default",
            PluginOrigin::File => "file",
            PluginOrigin::Bundle => "bundle",
        }
    }
}

/// Who a decision came from: recorded with every decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginMeta {
    pub name: String,
    /// Hex sha256 of the component bytes.
    pub digest: String,
    pub origin: PluginOrigin,
    /// `name@revision` of the bundle it came from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
}

/// Why a component could not become a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "could not compile {role} plugin '{plugin}': {detail}; it must be a WebAssembly component (e.g. built for wasm32-wasip2)"
    )]
    Compile {
        role: Role,
        plugin: String,
        detail: String,
    },
    #[error(
        "{role} plugin '{plugin}' starts with {needs_mib} MiB of memory, more than the {cap_mib} MiB policy.memoryMiB allows; raise it with `claude-max-market config --set policy.memoryMiB={needs_mib}` (or more, for what it grows to)"
    )]
    StartingMemory {
        role: Role,
        plugin: String,
        needs_mib: u64,
        cap_mib: u64,
    },
    #[error(
        "'{plugin}' is not a plugin for the {role} role: it does not export {missing} (it exports: {found}); build it for the {world} world in wit/"
    )]
    WrongRole {
        role: Role,
        plugin: String,
        world: &'static str,
        missing: String,
        found: String,
    },
    #[error(
        "{role} plugin '{plugin}' was built for {found}, but this host speaks {expected}; rebuild it against the wit/ folder of this release (docs/plugins.md says what changed between versions)"
    )]
    WitVersion {
        role: Role,
        plugin: String,
        found: String,
        expected: &'static str,
    },
    #[error(
        "{role} plugin '{plugin}' imports something this host does not provide: {detail}; plugins may import only the logging, clock and settings interfaces (and WASI, which is denied)"
    )]
    Link {
        role: Role,
        plugin: String,
        detail: String,
    },
}

/// The bytes of memory a module starts with, when compiling failed because
/// that is over the memory cap: the engine's pooling allocator refuses such
/// a module up front (wasmtime 48's message names "minimum byte size").
fn starting_memory(detail: &str) -> Option<u64> {
    const MARK: &str = "minimum byte size of ";
    let rest = &detail[detail.find(MARK)? + MARK.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The role-specific export of a plugin, resolved once at load time.
#[derive(Clone)]
pub(crate) enum RoleExports {
    Approval(approval::GuestIndices),
    Limits(limits::GuestIndices),
    Pricing(pricing::GuestIndices),
    Compliance(compliance::GuestIndices),
}

/// A compiled, linked plugin for one role. Cloning is cheap: the compiled
/// code is shared.
#[derive(Clone)]
pub struct PluginPre {
    pub(crate) role: Role,
    pub(crate) meta: PluginMeta,
    /// What each call may use: the engine's limits, or tighter ones a
    /// bundle asked for.
    pub(crate) limits: SandboxLimits,
    /// The node's own caps, to tell which side set a limit that was hit.
    pub(crate) node_limits: SandboxLimits,
    /// The plugin's own configuration from its bundle, as `plugin.<key>`.
    own_config: Vec<(String, String)>,
    pub(crate) label: Arc<str>,
    /// What WASI's random interfaces give this plugin, fixed by its digest.
    pub(crate) entropy: Arc<Entropy>,
    pub(crate) pre: InstancePre<PluginState>,
    pub(crate) config_check: config_check::GuestIndices,
    pub(crate) exports: RoleExports,
}

impl PluginPre {
    /// Compiles (through the cache when given) and links `wasm` as a plugin
    /// for `role`.
    pub fn load(
        engine: &PolicyEngine,
        cache: Option<&CompileCache>,
        role: Role,
        name: &str,
        origin: PluginOrigin,
        wasm: &[u8],
    ) -> Result<PluginPre, LoadError> {
        let digest = hex::encode(Sha256::digest(wasm));
        let compiled = match cache {
            Some(cache) => cache.load_or_compile(engine.engine(), &digest, wasm),
            None => Component::new(engine.engine(), wasm),
        };
        let component = compiled.map_err(|e| {
            let detail = format!("{e:#}");
            match starting_memory(&detail) {
                Some(bytes) => LoadError::StartingMemory {
                    role,
                    plugin: name.to_string(),
                    needs_mib: bytes.div_ceil(1 << 20),
                    cap_mib: (engine.limits().memory_bytes >> 20) as u64,
                },
                None => LoadError::Compile {
                    role,
                    plugin: name.to_string(),
                    detail,
                },
            }
        })?;
        if let Some(found) = foreign_package(engine, &component) {
            return Err(LoadError::WitVersion {
                role,
                plugin: name.to_string(),
                found,
                expected: WIT_PACKAGE,
            });
        }
        let pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link {
                role,
                plugin: name.to_string(),
                detail: format!("{e:#}"),
            })?;
        let wrong_role = |missing: &str| LoadError::WrongRole {
            role,
            plugin: name.to_string(),
            world: role.world(),
            missing: missing.to_string(),
            found: export_names(engine, &component),
        };
        let config_check = config_check::GuestIndices::new(&pre)
            .map_err(|_| wrong_role(&interface_name("config-check")))?;
        let exports =
            role_exports(role, &pre).map_err(|_| wrong_role(&interface_name(role.as_str())))?;
        Ok(PluginPre {
            role,
            limits: *engine.limits(),
            node_limits: *engine.limits(),
            own_config: Vec::new(),
            label: format!("{role}:{name}").into(),
            entropy: Arc::new(Entropy::of(&digest)),
            meta: PluginMeta {
                name: name.to_string(),
                digest,
                origin,
                bundle: None,
            },
            pre,
            config_check,
            exports,
        })
    }

    /// Marks this plugin as coming from bundle `label` (`name@revision`),
    /// runs it under the tighter of the engine's limits and `requested`,
    /// and gives it the bundle's configuration values for its role.
    pub fn from_bundle(
        mut self,
        label: String,
        requested: SandboxLimits,
        config: impl IntoIterator<Item = (String, String)>,
    ) -> PluginPre {
        self.limits = self.limits.narrowed(&requested);
        self.meta.origin = PluginOrigin::Bundle;
        self.meta.bundle = Some(label);
        self.own_config = config
            .into_iter()
            .map(|(k, v)| (format!("{OWN_CONFIG_PREFIX}{k}"), v))
            .collect();
        self
    }

    /// The settings this plugin sees: the node's, plus its own.
    pub(crate) fn settings(&self, node: &[(String, String)]) -> Arc<PluginSettings> {
        let mut pairs = node.to_vec();
        pairs.extend(self.own_config.iter().cloned());
        Arc::new(PluginSettings::new(pairs))
    }

    /// The limits each call of this plugin runs under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn meta(&self) -> &PluginMeta {
        &self.meta
    }

    /// Asks the plugin to validate `settings`, as activation and the
    /// pipeline do; a refusal is an `invalid-config` failure.
    pub fn validate(
        &self,
        engine: &PolicyEngine,
        settings: Vec<(String, String)>,
    ) -> Result<(), super::Failure> {
        super::pipeline::validate(engine, self, &self.settings(&settings))
    }
}

fn role_exports(role: Role, pre: &InstancePre<PluginState>) -> wasmtime::Result<RoleExports> {
    Ok(match role {
        Role::Approval => RoleExports::Approval(approval::GuestIndices::new(pre)?),
        Role::Limits => RoleExports::Limits(limits::GuestIndices::new(pre)?),
        Role::Pricing => RoleExports::Pricing(pricing::GuestIndices::new(pre)?),
        Role::Compliance => RoleExports::Compliance(compliance::GuestIndices::new(pre)?),
    })
}

fn interface_name(interface: &str) -> String {
    format!("{}/{interface}@{}", package_name(), wit_version())
}

/// The policy package version a component was built against, when it is
/// not this host's: linking would fail on it with a bare "missing import",
/// which does not tell the author to rebuild.
fn foreign_package(engine: &PolicyEngine, component: &Component) -> Option<String> {
    let ty = component.component_type();
    let prefix = format!("{}/", package_name());
    let names: Vec<String> = ty
        .imports(engine.engine())
        .map(|(name, _)| name.to_string())
        .chain(
            ty.exports(engine.engine())
                .map(|(name, _)| name.to_string()),
        )
        .collect();
    names.iter().find_map(|name| {
        let (_, version) = name.strip_prefix(&prefix)?.split_once('@')?;
        (version != wit_version()).then(|| format!("{}@{version}", package_name()))
    })
}

fn export_names(engine: &PolicyEngine, component: &Component) -> String {
    let names: Vec<String> = component
        .component_type()
        .exports(engine.engine())
        .map(|(name, _)| name.to_string())
        .collect();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}
