//! A provider's receipt for a task: what its gateway recorded for the
//! job's requests upstream (the job's `gateway.request` entries on this
//! node's audit log), summed by model, and what that costs at the terms
//! the task was claimed on.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::market::types::{ModelUsage, Receipt};

use super::super::{Context, OpsError};

/// The receipt for job `task`, claimed at `lock` RUV, at `token_price` RUV
/// per 1,000 tokens (0: the whole price, whatever it used).
pub(super) fn of_job(
    ctx: &Context,
    task: &str,
    lock: u64,
    token_price: u64,
) -> Result<Receipt, OpsError> {
    let mut models: BTreeMap<String, ModelUsage> = BTreeMap::new();
    let mut replies = Vec::new();
    let mut requests = 0u32;
    for entry in ctx.store.audit_about("gateway.request", task)? {
        let d = &entry.details;
        // Counting tokens is free upstream, and meters nothing here.
        if d["endpoint"] != "messages" {
            continue;
        }
        let n = |key: &str| d[key].as_u64().unwrap_or(0);
        let model = d["model"].as_str().unwrap_or_default().to_owned();
        let usage = models.entry(model.clone()).or_insert_with(|| ModelUsage {
            model,
            requests: 0,
            input_tokens: 0,
            cache_creation_tokens: 0,
            cache_read_tokens: 0,
            output_tokens: 0,
        });
        let (written, read) = (n("cache_creation_tokens"), n("cache_read_tokens"));
        usage.requests += 1;
        usage.input_tokens += n("input_tokens").saturating_sub(written + read);
        usage.cache_creation_tokens += written;
        usage.cache_read_tokens += read;
        usage.output_tokens += n("output_tokens");
        requests += 1;
        if let Some(id) = d["request_id"].as_str() {
            replies.push(hex::encode(Sha256::digest(id.as_bytes())));
        }
    }
    let mut receipt = Receipt {
        task: task.to_owned(),
        requests,
        models: models.into_values().collect(),
        replies,
        amount: lock,
    };
    if token_price > 0 {
        let tokens = receipt.input_tokens() + receipt.output_tokens();
        receipt.amount = lock.min(tokens.saturating_mul(token_price).div_ceil(1000));
    }
    Ok(receipt)
}
