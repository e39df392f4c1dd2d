//! The requester's market task as a job of this node. It is this owner's
//! own job wherever it runs, so it is admitted by this node's policies
//! like a job run here (approval, the daily limits, compliance; `execute
//! --market` admits it as `execute` does) before anything is posted, and
//! recorded like one, so `jobs`, `status` and `usage` show it. It ends
//! with how the market task ended.

use crate::store::{JobEnd, MeteredUsage};

use super::super::job::admit::AdmittedJob;
use super::super::{Context, OpsError};
use super::MarketRun;

/// Ends the job as its market task ended: finished when the result was
/// paid for, timed out, or failed (with the reason) however else it went.
pub(super) fn end(
    ctx: &mut Context,
    job: AdmittedJob,
    run: &Result<MarketRun, OpsError>,
) -> Result<(), OpsError> {
    let id = &job.request().id;
    let granted = job.grant().tokens;
    let (end, reason) = match run {
        Ok(run) => {
            // The tokens are the provider's word: they may not charge this
            // node's day more than it granted the job.
            let input_tokens = run.input_tokens.min(granted);
            let output_tokens = run.output_tokens.min(granted - input_tokens);
            let usage = MeteredUsage {
                requests: 0,
                input_tokens,
                output_tokens,
            };
            ctx.store.record_metered(id, usage)?;
            let reason = run
                .detail
                .as_deref()
                .map(|d| format!("{}: {d}", run.outcome));
            (ending(run), reason)
        }
        Err(e) => (JobEnd::Failed, Some(e.to_string())),
    };
    ctx.store.end_job(id, end, None, reason.as_deref())?;
    Ok(())
}

fn ending(run: &MarketRun) -> JobEnd {
    match run.outcome.as_str() {
        "completed" => JobEnd::Finished,
        "timed-out" => JobEnd::TimedOut,
        _ => JobEnd::Failed,
    }
}
