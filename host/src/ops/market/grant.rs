//! `market grant`: an issuer credits RUV to a node. The grant is signed by
//! the issuer's key (a key file made with `policy keygen`, or this node's
//! own key), and nodes apply it only when that key's id is in their
//! `market.issuerKeys`.

use std::path::Path;

use rand::RngCore;
use serde::Serialize;
use serde_json::json;

use crate::crypto::NodeKey;
use crate::market::message;
use crate::market::types::{Body, Grant};

use super::super::context::runtime;
use super::super::{Context, OpsError, keys};
use super::Peer;

#[derive(Debug, Clone, Serialize)]
pub struct Granted {
    pub grant: String,
    pub issuer: String,
    pub to: String,
    pub amount: u64,
    /// Whether this node itself trusts the issuer (if not, its balances
    /// ignore the grant).
    pub issuer_trusted_here: bool,
}

/// The issuer's key: the file given (a key made with `policy keygen`), or
/// this node's own key.
pub(super) fn issuer_key(
    ctx: &mut Context,
    key_file: Option<&Path>,
    passphrase_env: Option<&str>,
) -> Result<NodeKey, OpsError> {
    Ok(match key_file {
        Some(path) => {
            let passphrase = passphrase_env.and_then(|v| std::env::var(v).ok());
            NodeKey::read_file(path, passphrase.as_deref(), passphrase_env)?
        }
        None => keys::current(ctx)?.0,
    })
}

/// Signs and publishes a grant of `amount` RUV to node `to`, with the
/// private key in `key_file` (this node's key when `None`).
pub fn grant(
    ctx: &mut Context,
    to: &str,
    amount: u64,
    key_file: Option<&Path>,
    passphrase_env: Option<&str>,
    memo: &str,
) -> Result<Granted, OpsError> {
    if to.len() != 64 || !to.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(OpsError::InvalidInput {
            what: format!(
                "'{to}' is not a node id: give all 64 hex characters (`keys show` on that node prints them)"
            ),
        });
    }
    if amount == 0 {
        return Err(OpsError::InvalidInput {
            what: "a grant of 0 RUV changes nothing; give --amount above 0".into(),
        });
    }
    let issuer = issuer_key(ctx, key_file, passphrase_env)?;
    let rt = runtime()?;
    let peer = Peer::connect(ctx, &rt)?;
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    let body = Grant {
        grant: hex::encode(id),
        to: to.to_ascii_lowercase(),
        amount,
        memo: memo.to_owned(),
    };
    ctx.store.append_audit(
        "market.grant",
        &body.grant,
        &json!({ "issuer": issuer.node_id(), "to": body.to, "amount": amount, "memo": memo }),
    )?;
    let subject = format!("cmm.ledger.grant.{}", body.grant);
    let (bytes, msg_id) = message::seal(&issuer, Body::Grant(body.clone()))?;
    rt.block_on(peer.transport.publish(&subject, &msg_id, bytes))?;
    Ok(Granted {
        issuer_trusted_here: peer.settings.issuer_keys.contains(&issuer.node_id()),
        grant: body.grant,
        issuer: issuer.node_id(),
        to: body.to,
        amount,
    })
}
