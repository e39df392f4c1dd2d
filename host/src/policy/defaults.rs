//! The default plugins, built from `plugins/` by `build.rs` and embedded, so
//! an installed binary needs nothing else to decide.

use super::role::Role;

const APPROVAL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugins/approval.wasm"));
const LIMITS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugins/limits.wasm"));
const PRICING: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugins/pricing.wasm"));
const COMPLIANCE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugins/compliance.wasm"));

/// The embedded component for `role`.
pub fn component(role: Role) -> &'static [u8] {
    match role {
        Role::Approval => APPROVAL,
        Role::Limits => LIMITS,
        Role::Pricing => PRICING,
        Role::Compliance => COMPLIANCE,
    }
}

/// The name the default plugin for `role` is shown under.
pub fn name(role: Role) -> String {
    format!("default-{role}")
}
