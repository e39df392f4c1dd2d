//! `limits`: set the daily and per-job limits, and show them with today's usage.

use serde::Serialize;

use crate::config::LimitsSettings;
use crate::store::UsageSnapshot;

use super::config::{self, Change};
use super::{Context, OpsError};

/// Limits to change; `None` leaves a limit as it is.
#[derive(Debug, Default)]
pub struct LimitsOptions {
    pub daily_tasks: Option<u32>,
    pub daily_tokens: Option<u64>,
    pub timeout_secs: Option<u32>,
    pub concurrent_jobs: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct LimitsView {
    pub limits: LimitsSettings,
    pub usage_today: UsageSnapshot,
    pub changes: Vec<Change>,
}

/// Applies the changes (validated and audited by `config::set`) and reports.
pub fn apply(ctx: &mut Context, opts: &LimitsOptions) -> Result<LimitsView, OpsError> {
    let assignments: Vec<(String, String)> = [
        ("limits.dailyTasks", opts.daily_tasks.map(|v| v.to_string())),
        (
            "limits.dailyTokens",
            opts.daily_tokens.map(|v| v.to_string()),
        ),
        (
            "limits.timeoutSecs",
            opts.timeout_secs.map(|v| v.to_string()),
        ),
        (
            "limits.concurrentJobs",
            opts.concurrent_jobs.map(|v| v.to_string()),
        ),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.map(|v| (key.to_string(), v)))
    .collect();
    let changes = config::set(ctx, &assignments)?;
    Ok(LimitsView {
        limits: ctx.settings.limits.clone(),
        usage_today: ctx.store.usage_snapshot(today())?,
        changes,
    })
}

/// Today's date in UTC: limits reset at UTC midnight.
pub(crate) fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}
