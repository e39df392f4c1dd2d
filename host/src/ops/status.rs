//! `status`: consent, limits, today's usage, the active policy per role and
//! the state of the audit chain, in one report.

use serde::Serialize;

use crate::config::LimitsSettings;
use crate::store::{ChainStatus, ConsentState, UsageSnapshot};

use super::limits::today;
use super::policy::{self, PolicyStatus};
use super::{Context, OpsError, terms};

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub home: String,
    pub consent: ConsentState,
    pub terms_version: String,
    pub terms_current: bool,
    pub limits: LimitsSettings,
    pub usage_today: UsageSnapshot,
    pub policies: Vec<PolicyStatus>,
    pub audit: ChainStatus,
}

pub fn report(ctx: &Context) -> Result<StatusReport, OpsError> {
    let consent = ctx.store.consent_state()?;
    let terms_version = terms::version();
    Ok(StatusReport {
        home: ctx.home.root().display().to_string(),
        terms_current: consent.terms_version.as_deref() == Some(terms_version.as_str()),
        consent,
        terms_version,
        limits: ctx.settings.limits.clone(),
        usage_today: ctx.store.usage_snapshot(today())?,
        policies: policy::list(ctx)?,
        audit: ctx.store.verify_audit()?,
    })
}
