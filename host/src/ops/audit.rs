//! `audit`: what the log holds, whether its hash chain is intact, a signed
//! head to keep elsewhere and the check against one, and starting a new
//! chain after a break.

use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::crypto::{SignedHead, VerifiedHead};
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

/// Signs the chain's head with the node key (made first if the node has
/// none, which is itself a row). Refused while the chain is broken: a
/// signed broken head would vouch for the break.
pub fn head(ctx: &mut Context) -> Result<SignedHead, OpsError> {
    let (key, _, _) = super::keys::current(ctx)?;
    let chain = verify(ctx)?;
    let Some(hash) = chain.head else {
        return Err(OpsError::InvalidInput {
            what: "the audit log is empty; there is no head to sign".to_owned(),
        });
    };
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .map_err(|e| OpsError::InvalidInput {
            what: format!("cannot format the time: {e}"),
        })?;
    Ok(SignedHead::sign(&key, chain.head_seq, &hash, &now)?)
}

/// What `audit --verify --against FILE` found.
#[derive(Debug, Serialize)]
pub struct AnchorReport {
    pub chain: ChainStatus,
    pub anchored_seq: i64,
    pub anchored_hash: String,
    pub signed_by: String,
    pub signed_at: String,
}

/// Verifies the chain, then that it still holds the head the statement in
/// `path` anchors, signed by a key of this node: one it holds, or one its
/// log named before the anchored row.
pub fn verify_against(ctx: &Context, path: &Path) -> Result<AnchorReport, OpsError> {
    let text = std::fs::read_to_string(path).map_err(|source| OpsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let anchored = SignedHead::verify(&text)?;
    let chain = verify(ctx)?;
    if let Err(reason) = ctx.store.audit_holds(anchored.seq(), anchored.hash())? {
        return Err(OpsError::AnchorMismatch { reason });
    }
    if !signed_by_this_node(ctx, &anchored)? {
        return Err(OpsError::ForeignAnchor {
            node: anchored.node_id().to_owned(),
        });
    }
    Ok(AnchorReport {
        chain,
        anchored_seq: anchored.seq(),
        anchored_hash: anchored.hash().to_owned(),
        signed_by: anchored.node_id().to_owned(),
        signed_at: anchored.signed_at().to_owned(),
    })
}

fn signed_by_this_node(ctx: &Context, anchored: &VerifiedHead) -> Result<bool, OpsError> {
    if super::keys::store(ctx)?
        .list()?
        .iter()
        .any(|k| k.id == anchored.node_id())
    {
        return Ok(true);
    }
    // Rows up to the anchored one are pinned by its hash, so a key row
    // among them is genuine.
    let rows = ctx.store.audit_rows_containing(anchored.node_id())?;
    Ok(rows.first().is_some_and(|&seq| seq <= anchored.seq()))
}

/// Starts a new chain after a break: one row linked to the newest row
/// present records the break and its evidence. `confirmed` must be true (the
/// CLI takes it from `--yes` or a prompt).
pub fn recover(ctx: &mut Context, confirmed: bool) -> Result<AuditEntry, OpsError> {
    let chain = ctx.store.verify_audit()?;
    let Some(broken) = chain.broken else {
        return Err(OpsError::InvalidInput {
            what: format!(
                "the audit chain is intact ({} rows); there is nothing to recover",
                chain.rows
            ),
        });
    };
    if !confirmed {
        return Err(OpsError::NeedsConfirmation {
            what: "restarting the audit chain",
        });
    }
    ctx.store
        .restart_audit_chain()?
        .ok_or_else(|| OpsError::InvalidInput {
            what: format!(
                "the chain broken at row {} was restarted by another process",
                broken.seq
            ),
        })
}
