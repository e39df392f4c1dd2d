//! `policy trust add|remove|list`: the public keys this node accepts policy
//! bundle signatures from. Adding the first key switches the node from
//! "developer machine" to "only signed policy runs".

use std::path::Path;

use serde::Serialize;

use crate::bundle::{TrustPolicy, TrustedKey};
use crate::crypto::PublicKey;
use crate::store::TrustedKeyRow;

use super::{Context, OpsError, now_rfc3339};

/// A trusted key as `trust list` shows it.
#[derive(Debug, Serialize)]
pub struct TrustEntry {
    pub key_id: String,
    pub name: String,
    pub bits: usize,
    pub added_at: String,
}

/// What `trust add` did.
#[derive(Debug, Serialize)]
pub struct TrustAdded {
    pub key: TrustEntry,
    /// False when the key was already trusted.
    pub added: bool,
    /// Roles running a loose component, which stop running now that
    /// trust is configured.
    pub loose_roles: Vec<String>,
}

/// The trusted keys, parsed. A stored key that no longer parses is left out
/// with a warning: it can only make fewer bundles acceptable.
pub(super) fn trusted_keys(ctx: &Context) -> Result<Vec<TrustedKey>, OpsError> {
    Ok(ctx
        .store
        .trusted_keys()?
        .into_iter()
        .filter_map(|row| match PublicKey::from_pem(&row.public_pem) {
            Ok(key) => Some(TrustedKey { name: row.name, key }),
            Err(e) => {
                tracing::warn!(key_id = %row.key_id, error = %e, "ignoring an unreadable trusted key");
                None
            }
        })
        .collect())
}

/// The node's signature rule over `trusted`.
pub(super) fn policy<'a>(ctx: &Context, trusted: &'a [TrustedKey]) -> TrustPolicy<'a> {
    TrustPolicy {
        trusted,
        min_signatures: ctx.settings.policy.min_signatures,
    }
}

/// Trusts the public key in the PEM file at `path`, named `name` (the file
/// stem when not given).
pub fn add(ctx: &mut Context, path: &Path, name: Option<&str>) -> Result<TrustAdded, OpsError> {
    let pem = std::fs::read_to_string(path).map_err(|source| OpsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let key = PublicKey::from_pem(&pem).map_err(OpsError::Key)?;
    let name = name.map_or_else(
        || {
            path.file_stem()
                .map_or_else(|| "key".into(), |s| s.to_string_lossy().into_owned())
        },
        str::to_owned,
    );
    let row = TrustedKeyRow {
        key_id: key.node_id(),
        name,
        public_pem: key.to_pem().map_err(OpsError::Key)?,
        added_at: now_rfc3339(),
    };
    let added = ctx.store.add_trusted_key(&row)?;
    let loose_roles = ctx
        .store
        .active_policies()?
        .into_iter()
        .filter(|p| p.origin == "file")
        .map(|p| p.role)
        .collect();
    let stored = ctx
        .store
        .trusted_keys()?
        .into_iter()
        .find(|r| r.key_id == row.key_id)
        .unwrap_or(row);
    Ok(TrustAdded {
        key: entry(&stored, key.bits()),
        added,
        loose_roles,
    })
}

/// Stops trusting the key whose id starts with `id` (at least 12 hex digits,
/// as `trust list` shows them).
pub fn remove(ctx: &mut Context, id: &str) -> Result<TrustEntry, OpsError> {
    let row = find(ctx, id)?;
    ctx.store.remove_trusted_key(&row.key_id)?;
    let bits = PublicKey::from_pem(&row.public_pem).map_or(0, |k| k.bits());
    Ok(entry(&row, bits))
}

/// Every trusted key.
pub fn list(ctx: &Context) -> Result<Vec<TrustEntry>, OpsError> {
    Ok(ctx
        .store
        .trusted_keys()?
        .iter()
        .map(|row| {
            entry(
                row,
                PublicKey::from_pem(&row.public_pem).map_or(0, |k| k.bits()),
            )
        })
        .collect())
}

fn find(ctx: &Context, id: &str) -> Result<TrustedKeyRow, OpsError> {
    let id = id.to_ascii_lowercase();
    if id.len() < 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(OpsError::InvalidInput {
            what: format!(
                "'{id}' is not a key id; give at least 12 hex digits of one `policy trust list` shows"
            ),
        });
    }
    let mut matching: Vec<_> = ctx
        .store
        .trusted_keys()?
        .into_iter()
        .filter(|r| r.key_id.starts_with(&id))
        .collect();
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(OpsError::InvalidInput {
            what: format!("no trusted key has an id starting with {id}; see `policy trust list`"),
        }),
        _ => Err(OpsError::InvalidInput {
            what: format!("more than one trusted key starts with {id}; give more digits"),
        }),
    }
}

fn entry(row: &TrustedKeyRow, bits: usize) -> TrustEntry {
    TrustEntry {
        key_id: row.key_id.clone(),
        name: row.name.clone(),
        bits,
        added_at: row.added_at.clone(),
    }
}
