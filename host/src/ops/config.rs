//! Reading and changing settings. Every change is audited before the file is
//! written; if the audit row cannot be written, the setting does not change.
//! Changes hold an exclusive lock on the data folder's `config.lock` from
//! reading the file to writing it, so two processes changing settings at
//! once both land, and each audit row's `from` is the value it replaced.

use std::fs::{File, OpenOptions};
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::config::{self as settings, Settings};

use super::{Context, OpsError};

/// One key whose value changed.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub key: String,
    pub from: String,
    pub to: String,
}

/// One row of `config --list`.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub key: &'static str,
    pub value: String,
    pub default: String,
    pub kind: &'static str,
    pub description: &'static str,
}

/// Applies `KEY=VALUE` assignments all or nothing: every value is validated
/// before anything is written.
pub fn set(ctx: &mut Context, assignments: &[(String, String)]) -> Result<Vec<Change>, OpsError> {
    let path = ctx.home.config_path();
    let _lock = lock(&ctx.home.config_lock_path())?;
    // What this process read at start may be stale by now.
    ctx.settings = Settings::load(&path)?;
    let mut next = ctx.settings.clone();
    let mut changes = Vec::new();
    for (key, value) in assignments {
        let from = next.get(key)?;
        next.set(key, value)?;
        let to = next.get(key)?;
        if from != to {
            changes.push(Change {
                key: key.clone(),
                from,
                to,
            });
        }
    }
    if changes.is_empty() {
        return Ok(changes);
    }
    ctx.store
        .append_audit("config.set", "config", &json!({ "changes": changes }))?;
    if let Err(e) = next.save(&path) {
        // The row above announced a change that did not happen; say so.
        let detail = json!({ "changes": changes, "error": e.to_string() });
        ctx.store
            .append_audit("config.set-failed", "config", &detail)?;
        return Err(e.into());
    }
    ctx.settings = next;
    Ok(changes)
}

/// Waits for the exclusive lock; it is released when the file is dropped,
/// or by the kernel if the process dies holding it.
fn lock(path: &Path) -> Result<File, OpsError> {
    let write = |source| OpsError::Write {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(write)?;
    file.lock().map_err(write)?;
    Ok(file)
}

/// The current value of one key.
pub fn get(ctx: &Context, key: &str) -> Result<String, OpsError> {
    Ok(ctx.settings.get(key)?)
}

/// Every key with its value, default and meaning.
pub fn list(ctx: &Context) -> Vec<Entry> {
    let defaults = Settings::default();
    settings::keys()
        .iter()
        .map(|k| Entry {
            key: k.name,
            value: ctx.settings.get(k.name).unwrap_or_default(),
            default: defaults.get(k.name).unwrap_or_default(),
            kind: k.kind,
            description: k.description,
        })
        .collect()
}
