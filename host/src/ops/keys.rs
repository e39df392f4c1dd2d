//! `keys show | export-public | rotate`: this node's identity. The key pair
//! is made on first need. Rotation makes a new pair current; retired pairs
//! still decrypt for `security.keyRotationDays` more days and are then
//! removed. Every creation, rotation and removal is on the audit log.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::crypto::{DEFAULT_KEY_BITS, KeyError, KeyInfo, KeyStore, NodeKey};

use super::{Context, OpsError};

/// One key pair as shown to people.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub node_id: String,
    pub short_id: String,
    pub created: String,
    pub age_days: i64,
    /// When a retired pair stops decrypting; absent for the current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_until: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeysReport {
    pub current: KeyView,
    /// Retired pairs still within their grace period.
    pub retired: Vec<KeyView>,
    pub rotation_days: u32,
    /// Whether this call made the first key pair.
    pub created_now: bool,
}

impl From<KeyError> for OpsError {
    fn from(e: KeyError) -> Self {
        OpsError::Key(e)
    }
}

/// The key store in the data folder, unlocked with the passphrase from the
/// environment variable `security.keyPassphraseEnv` names, if any.
pub(super) fn store(ctx: &Context) -> Result<KeyStore, OpsError> {
    let var = &ctx.settings.security.key_passphrase_env;
    let var = (!var.is_empty()).then_some(var.as_str());
    let passphrase = var.and_then(|v| std::env::var(v).ok());
    Ok(KeyStore::open(
        &ctx.home.root().join("keys"),
        passphrase.as_deref(),
        var,
    )?)
}

/// The current key, made (and audited) if this node has none yet; retired
/// keys past their grace period are removed on the way.
pub(super) fn current(ctx: &mut Context) -> Result<(NodeKey, KeyInfo, bool), OpsError> {
    let keys = store(ctx)?;
    let now = OffsetDateTime::now_utc();
    let (key, info, created) = keys.current_or_create(now, DEFAULT_KEY_BITS)?;
    if created {
        ctx.store.append_audit(
            "key.created",
            &info.id,
            &json!({ "node_id": info.id, "bits": DEFAULT_KEY_BITS }),
        )?;
    }
    prune(ctx, &keys, now)?;
    Ok((key, info, created))
}

/// Every key that may decrypt now: the current one first, then retired
/// ones still within their grace period.
pub(super) fn decryption_keys(ctx: &mut Context) -> Result<Vec<NodeKey>, OpsError> {
    let keys = store(ctx)?;
    let now = OffsetDateTime::now_utc();
    prune(ctx, &keys, now)?;
    Ok(keys.decryption_keys(now, ctx.settings.security.key_rotation_days)?)
}

fn prune(ctx: &mut Context, keys: &KeyStore, now: OffsetDateTime) -> Result<(), OpsError> {
    for removed in keys.prune(now, ctx.settings.security.key_rotation_days)? {
        ctx.store.append_audit(
            "key.removed",
            &removed.id,
            &json!({
                "node_id": removed.id,
                "retired": removed.retired.and_then(|t| t.format(&Rfc3339).ok()),
                "reason": "its grace period after rotation ended",
            }),
        )?;
    }
    Ok(())
}

pub fn show(ctx: &mut Context) -> Result<KeysReport, OpsError> {
    let (_, info, created_now) = current(ctx)?;
    let now = OffsetDateTime::now_utc();
    let grace = ctx.settings.security.key_rotation_days;
    let retired = store(ctx)?
        .list()?
        .iter()
        .filter(|k| k.retired.is_some() && k.usable_for_decryption(now, grace))
        .map(|k| view(k, now, grace))
        .collect();
    Ok(KeysReport {
        current: view(&info, now, grace),
        retired,
        rotation_days: grace,
        created_now,
    })
}

/// The current public key as PEM, written to `out` when given.
pub fn export_public(ctx: &mut Context, out: Option<&PathBuf>) -> Result<String, OpsError> {
    let (key, _, _) = current(ctx)?;
    let pem = key.public().to_pem()?;
    if let Some(path) = out {
        std::fs::write(path, &pem).map_err(|source| OpsError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(pem)
}

#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    pub old: KeyView,
    pub new: KeyView,
}

/// Makes a new current pair. On a market node the node id is its market
/// identity (balance, reputation, tasks in flight), which the new id does not
/// inherit, so there `confirmed` must be true (the CLI takes it from `--yes`
/// or a prompt).
pub fn rotate(ctx: &mut Context, confirmed: bool) -> Result<Rotated, OpsError> {
    let (_, info, _) = current(ctx)?;
    if !confirmed && on_the_market(ctx)? {
        return Err(OpsError::RotationAbandonsMarketIdentity {
            node: info.short_id().to_owned(),
        });
    }
    let keys = store(ctx)?;
    let now = OffsetDateTime::now_utc();
    let grace = ctx.settings.security.key_rotation_days;
    let rotation = keys.rotate(now, DEFAULT_KEY_BITS)?;
    ctx.store.append_audit(
        "key.rotated",
        &rotation.new.id,
        &json!({
            "old": rotation.old.id,
            "new": rotation.new.id,
            "old_usable_for_days": grace,
        }),
    )?;
    Ok(Rotated {
        old: view(&rotation.old, now, grace),
        new: view(&rotation.new, now, grace),
    })
}

/// Whether the node id may hold a market balance: a market is configured or
/// this node has traded.
pub fn on_the_market(ctx: &Context) -> Result<bool, OpsError> {
    Ok(!ctx.settings.market.url.is_empty() || !ctx.store.market_tasks(1)?.is_empty())
}

fn view(info: &KeyInfo, now: OffsetDateTime, grace_days: u32) -> KeyView {
    let stamp = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    KeyView {
        node_id: info.id.clone(),
        short_id: info.short_id().to_owned(),
        created: stamp(info.created),
        age_days: info.age_days(now),
        usable_until: info
            .retired
            .map(|r| stamp(r + time::Duration::days(i64::from(grace_days)))),
    }
}
