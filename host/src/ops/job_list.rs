//! `jobs`: the newest jobs, as the store has them, after settling any whose
//! host process died so none shows as running forever.

use crate::store::JobRow;

use super::{Context, OpsError, reconcile};

/// The newest `limit` jobs, newest first.
pub fn recent(ctx: &mut Context, limit: usize) -> Result<Vec<JobRow>, OpsError> {
    reconcile::jobs(ctx, &Default::default())?;
    Ok(ctx.store.jobs(limit)?)
}
