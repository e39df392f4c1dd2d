//! The policy plugin host: every decision about a job is made here, by
//! sandboxed WebAssembly components behind the WIT contract in `wit/`.
//!
//! Layout:
//! - `bindings` — the generated host side of the WIT package.
//! - `engine` — the wasmtime engine, its pooling allocator and epoch ticker.
//! - `sandbox` — per-call store state: limits, a deny-everything WASI context.
//! - `imports/` — the host functions a plugin may call, one file each.
//! - `job` — the job a decision is about, lent to plugins as a handle.
//! - `cache` — the on-disk compile cache.
//! - `plugin` — a compiled, linked plugin for one role (`PluginPre`).
//! - `call` — running one guest call, fresh or warm, and classifying failures.
//! - `pipeline` — the four-role decision.
//! - `defaults` — the default plugins embedded at build time.
//!
//! Nothing here touches SQLite, Docker or the CLI; `ops` wires it in.

mod bindings;
mod cache;
mod call;
pub mod defaults;
mod engine;
mod failure;
mod imports;
mod job;
mod node_rules;
mod outcome;
mod pipeline;
mod plugin;
mod role;
mod sandbox;
mod stderr;

pub use bindings::{
    Budget, ConfiguredLimits, CredentialKind, Fact, FactStatus, Image, JobSource, MarketContext,
    Usage, Workspace,
};
pub use cache::CompileCache;
pub use engine::{Isolation, PolicyEngine, SandboxLimits};
pub use failure::{Failure, FailureClass};
pub use job::Job;
pub use node_rules::{NodeRules, image_listed};
pub use outcome::{ComplianceFinding, Grant, Outcome, Quote, RoleDecision, Severity};
pub use pipeline::{DecisionInput, Pipeline, PipelineDecision, Slot, unix_now};
pub use plugin::{LoadError, OWN_CONFIG_PREFIX, PluginMeta, PluginOrigin, PluginPre};
pub use role::{Role, UnknownRole};
