//! `audit`: what the log holds, and whether its hash chain is intact.

use serde::Serialize;
use time::OffsetDateTime;

use crate::store::{AuditEntry, ChainStatus};

use super::{Context, OpsError};

#[derive(Debug, Serialize)]
pub struct AuditReport {
    pub chain: ChainStatus,
    pub entries: Vec<AuditEntry>,
}

/// The entries since `since` (all when `None`) and the chain's state.
pub fn report(ctx: &Context, since: Option<OffsetDateTime>) -> Result<AuditReport, OpsError> {
    Ok(AuditReport {
        chain: ctx.store.verify_audit()?,
        entries: ctx.store.audit_entries(since)?,
    })
}

/// Walks the chain; a broken chain is an error naming the first bad row.
pub fn verify(ctx: &Context) -> Result<ChainStatus, OpsError> {
    let chain = ctx.store.verify_audit()?;
    match &chain.broken {
        Some(b) => Err(OpsError::ChainBroken {
            seq: b.seq,
            reason: b.reason.clone(),
        }),
        None => Ok(chain),
    }
}
