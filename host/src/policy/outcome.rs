//! What a role decided, in host types the rest of the crate can use without
//! knowing the WIT bindings.

use std::sync::Arc;

use serde::Serialize;

pub use crate::outcome::Outcome;

use super::failure::{Failure, FailureClass};
use super::plugin::PluginMeta;
use super::role::Role;

/// The budget the limits role granted: what the gateway and the runner
/// hold the job to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// Input plus output tokens over the whole job.
    pub tokens: u64,
    /// Messages API requests, token counting included.
    pub requests: u32,
    pub timeout_secs: u32,
}

/// The price the pricing role quoted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Quote {
    pub price: u64,
    pub explanation: String,
}

/// How much a compliance finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A failure stops every job.
    Critical,
    /// Worth fixing; jobs still run.
    Warning,
    /// For information.
    Info,
}

/// One fact about this node as the compliance role judged it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComplianceFinding {
    pub id: String,
    pub severity: Severity,
    pub passed: bool,
    /// What was found and, when it failed, what to do about it.
    pub message: String,
}

/// What one role answered, before it is tied to a plugin.
#[derive(Clone, Debug)]
pub enum RoleResult {
    Allow,
    Deny(String),
    Ask(String),
    Granted(Grant),
    Quoted(Quote),
    /// Pricing has no opinion: the owner's or the offer's price applies.
    NoQuote,
    Failed(Failure),
}

/// One role's decision, with the plugin that made it.
#[derive(Clone, Debug, Serialize)]
pub struct RoleDecision {
    pub role: Role,
    pub plugin: Arc<PluginMeta>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<FailureClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    pub elapsed_us: u64,
}

impl RoleDecision {
    pub(crate) fn new(
        role: Role,
        plugin: Arc<PluginMeta>,
        result: RoleResult,
        elapsed_us: u64,
    ) -> Self {
        let mut d = RoleDecision {
            role,
            plugin,
            outcome: Outcome::Allow,
            reason: None,
            error_class: None,
            grant: None,
            quote: None,
            elapsed_us,
        };
        match result {
            RoleResult::Allow => {}
            RoleResult::Deny(reason) => (d.outcome, d.reason) = (Outcome::Deny, Some(reason)),
            RoleResult::Ask(reason) => (d.outcome, d.reason) = (Outcome::Ask, Some(reason)),
            RoleResult::Granted(grant) => d.grant = Some(grant),
            RoleResult::Quoted(quote) => d.quote = Some(quote),
            RoleResult::NoQuote => {
                d.reason =
                    Some("no opinion on the price: the owner's or the offer's applies".into());
            }
            RoleResult::Failed(failure) => {
                d.outcome = Outcome::Deny;
                d.error_class = Some(failure.class);
                d.reason = Some(failure.message);
            }
        }
        d
    }
}
