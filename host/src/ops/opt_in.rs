//! `opt-in`: record consent, after the current terms were accepted, and
//! optionally set the daily limits in the same step. Usage history is never
//! touched: opting in again only adds a consent event.

use serde::Serialize;

use crate::store::{ConsentEvent, ConsentState};

use super::config::{self, Change};
use super::{Context, OpsError, terms};

#[derive(Debug, Default)]
pub struct OptInOptions {
    /// Consent to running Claude jobs on this machine.
    pub claude_jobs: bool,
    /// New `limits.dailyTasks`.
    pub max_daily: Option<u32>,
    /// New `limits.dailyTokens`.
    pub max_tokens: Option<u64>,
    /// Accept the current terms as part of opting in.
    pub accept_terms: bool,
}

#[derive(Debug, Serialize)]
pub struct OptInReport {
    pub consent: ConsentState,
    pub terms_version: String,
    pub changes: Vec<Change>,
}

pub fn run(ctx: &mut Context, opts: &OptInOptions) -> Result<OptInReport, OpsError> {
    if opts.accept_terms {
        terms::accept(ctx)?;
    }
    terms::require_current(&ctx.store.consent_state()?)?;
    let current = terms::version();
    let assignments: Vec<(String, String)> = [
        ("limits.dailyTasks", opts.max_daily.map(|v| v.to_string())),
        ("limits.dailyTokens", opts.max_tokens.map(|v| v.to_string())),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.map(|v| (key.to_string(), v)))
    .collect();
    let changes = config::set(ctx, &assignments)?;
    ctx.store.record_consent(&ConsentEvent::OptIn {
        claude_jobs: opts.claude_jobs,
        terms_version: current.clone(),
    })?;
    Ok(OptInReport {
        consent: ctx.store.consent_state()?,
        terms_version: current,
        changes,
    })
}
