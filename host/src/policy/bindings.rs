//! The one place the host generates bindings from `wit/`.
//!
//! It binds the `policy-host` world, which includes every role's exports, so
//! the shared `types` records exist once. Each plugin still targets a single
//! role's world; `plugin.rs` checks which role's exports it actually has.

wasmtime::component::bindgen!({
    world: "policy-host",
    path: "../wit",
    // A decision's input is recorded on the audit log as these types, so
    // `policy test --replay` can ask a candidate plugin the same question.
    additional_derives: [serde::Serialize, serde::Deserialize],
    // The job is lent to a plugin as a handle to the host's record.
    with: {
        "claude-max-market:policy/types.job": super::job::LentJob,
    },
    // A getter on a handle the host did not lend traps the call.
    imports: {
        "claude-max-market:policy/types": trappable,
    },
});

pub use self::claude_max_market::policy::types::{
    Budget, ConfiguredLimits, CredentialKind, Fact, FactStatus, Image, JobSource, MarketContext,
    Usage, Workspace,
};
pub use self::exports::claude_max_market::policy::{
    approval, compliance, config_check, limits, pricing,
};
