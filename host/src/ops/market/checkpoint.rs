//! `market checkpoint`: an issuer signs the ledger's state so nodes can
//! start from it, and may then purge the entries before it so the ledger
//! stream stops growing without bound.
//!
//! The state goes to the `cmm-checkpoints` object store under its digest;
//! the signed checkpoint (sequence and digest) goes on the ledger stream
//! right after the entry the state ends with, or not at all: it is
//! published only while that entry is still the last, so every node
//! replaying the stream checks it against its own state at that point.

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::market::transport::{CHECKPOINT_SUBJECT, LEDGER_STREAM};
use crate::market::types::{Body, Checkpoint};
use crate::market::{MarketError, message};

use super::super::context::runtime;
use super::super::{Context, OpsError};
use super::grant::issuer_key;
use super::{Peer, catch_up};

/// Tries before giving up when other entries keep landing between reading
/// the ledger and publishing the checkpoint.
const ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Serialize)]
pub struct Checkpointed {
    /// The last ledger entry the state includes.
    pub seq: u64,
    /// Where the checkpoint itself was stored.
    pub stored_at: u64,
    pub digest: String,
    pub issuer: String,
    pub accounts: usize,
    pub escrows: usize,
    /// Entries removed before the checkpoint, with `--purge`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purged: Option<u64>,
}

/// Signs the ledger's current state with the issuer key in `key_file`
/// (this node's key when `None`) and, with `purge`, removes the entries
/// before the checkpoint.
pub fn checkpoint(
    ctx: &mut Context,
    key_file: Option<&Path>,
    passphrase_env: Option<&str>,
    purge: bool,
) -> Result<Checkpointed, OpsError> {
    let issuer = issuer_key(ctx, key_file, passphrase_env)?;
    let rt = runtime()?;
    let peer = Peer::connect(ctx, &rt)?;
    if !peer.settings.issuer_keys.contains(&issuer.node_id()) {
        return Err(OpsError::InvalidInput {
            what: format!(
                "{} is not in this node's market.issuerKeys: a checkpoint vouches for the \
                 balances this node computes, so sign it where the issuer is trusted",
                issuer.node_id()
            ),
        });
    }
    let mut ledger = peer.ledger();
    for _ in 0..ATTEMPTS {
        rt.block_on(catch_up(&peer.transport, &mut ledger))?;
        if let Some(seq) = ledger.diverged() {
            return Err(MarketError::Diverged { seq }.into());
        }
        let state = ledger.state();
        let digest = state.digest();
        let bytes = serde_json::to_vec(&state).expect("a ledger state always serializes");
        rt.block_on(peer.transport.put_state(&digest, bytes))?;
        let body = Body::Checkpoint(Checkpoint {
            seq: state.seq,
            digest: digest.clone(),
        });
        let (sealed, id) = message::seal(&issuer, body)?;
        let published =
            rt.block_on(
                peer.transport
                    .publish_after(CHECKPOINT_SUBJECT, &id, sealed, state.seq),
            )?;
        let Some(stored_at) = published else {
            continue;
        };
        let purged = if purge {
            Some(rt.block_on(peer.transport.purge_before(LEDGER_STREAM, stored_at))?)
        } else {
            None
        };
        ctx.store.append_audit(
            "market.checkpoint",
            &digest,
            &json!({ "issuer": issuer.node_id(), "seq": state.seq, "stored_at": stored_at, "purged": purged }),
        )?;
        return Ok(Checkpointed {
            seq: state.seq,
            stored_at,
            digest,
            issuer: issuer.node_id(),
            accounts: state.accounts.len(),
            escrows: state.escrows.len(),
            purged,
        });
    }
    Err(MarketError::Contended { attempts: ATTEMPTS }.into())
}
