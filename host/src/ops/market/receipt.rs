//! The job's requests upstream as this provider's gateway metered them:
//! its `gateway.request` entries on this node's audit log, which a
//! receipt ([`Taken::receipt`](crate::market::serving::Taken::receipt))
//! sums and prices.

use crate::market::serving::MeteredRequest;

use super::super::{Context, OpsError};

/// The Messages requests job `task` made, in order. Counting tokens is
/// free upstream and meters nothing here, so it is left out.
pub(super) fn metered(ctx: &Context, task: &str) -> Result<Vec<MeteredRequest>, OpsError> {
    Ok(ctx
        .store
        .audit_about("gateway.request", task)?
        .into_iter()
        .filter(|entry| entry.details["endpoint"] == "messages")
        .map(|entry| {
            let d = &entry.details;
            let n = |key: &str| d[key].as_u64().unwrap_or(0);
            MeteredRequest {
                model: d["model"].as_str().unwrap_or_default().to_owned(),
                input_tokens: n("input_tokens"),
                cache_creation_tokens: n("cache_creation_tokens"),
                cache_read_tokens: n("cache_read_tokens"),
                output_tokens: n("output_tokens"),
                request_id: d["request_id"].as_str().map(String::from),
            }
        })
        .collect())
}
