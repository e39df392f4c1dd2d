//! `usage`: what jobs used over the last days, as figures (`usage_stats`
//! computes them from the store's job rows; this file only gathers).

use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, OffsetDateTime};

use crate::store::JobRow;

use super::limits::today;
use super::usage_stats::{self, JobSample, UsageReport};
use super::{Context, OpsError};

/// Most days a report covers: a year and a bit.
pub const MAX_DAYS: u32 = 400;

/// Usage for the `days` UTC days ending today.
pub fn report(ctx: &Context, days: u32) -> Result<UsageReport, OpsError> {
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(OpsError::InvalidInput {
            what: format!("--days must be from 1 to {MAX_DAYS}, not {days}"),
        });
    }
    let today = today();
    let from = today - Duration::days(i64::from(days) - 1);
    let samples: Vec<JobSample> = ctx
        .store
        .jobs_since(from)?
        .iter()
        .filter_map(sample)
        .collect();
    Ok(usage_stats::summarize(&samples, today, days))
}

/// A job row as analytics sees it. A row whose day does not parse cannot be
/// placed in the window and is left out.
fn sample(job: &JobRow) -> Option<JobSample> {
    let day_format = time::macros::format_description!("[year]-[month]-[day]");
    let day = Date::parse(&job.usage_day, &day_format).ok()?;
    let at = |ts: &Option<String>| {
        ts.as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    };
    let duration_ms = match (at(&job.started_at), at(&job.finished_at)) {
        (Some(start), Some(end)) if end >= start => {
            u64::try_from((end - start).whole_milliseconds()).ok()
        }
        _ => None,
    };
    Some(JobSample {
        day,
        model: job.model.clone(),
        state: job.state.clone(),
        input_tokens: job.input_tokens.unwrap_or(0),
        output_tokens: job.output_tokens.unwrap_or(0),
        duration_ms,
    })
}
