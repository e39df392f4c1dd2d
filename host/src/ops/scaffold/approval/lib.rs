//! {{name}}: decides whether a job may run at all.
//!
//! A model outside `plugin.models` is denied. A job from the market is put
//! to the owner first, unless they pre-approved it. Everything else runs.
//!
//! The plugin's own values (`[roles.approval.config]` in `bundle.toml`)
//! arrive as `plugin.<key>`, the node's settings as `section.key`: as a list
//! to `validate_config` before the plugin is activated, and one key at a
//! time through `settings::get` while it decides. Change the rules in
//! `judge`, then add a case for each to `cases.toml`.

wit_bindgen::generate!({ world: "{{world}}", path: "wit" });

use claude_max_market::policy::settings;
use claude_max_market::policy::types::{Job, JobSource};
use exports::claude_max_market::policy::approval::{Guest as Approval, Verdict};
use exports::claude_max_market::policy::config_check::Guest as ConfigCheck;

/// The models this node runs, comma-separated. Unset allows every model.
const MODELS: &str = "plugin.models";

/// `plugin.models` as a list, or `None` when it is unset. A value with no
/// model in it is refused rather than read as "no model allowed": a slip
/// in the bundle should not quietly stop every job.
fn allowed_models(raw: Option<&str>) -> Result<Option<Vec<String>>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let models: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|model| !model.is_empty())
        .map(String::from)
        .collect();
    if models.is_empty() {
        return Err(format!(
            "{MODELS}: expected a comma-separated list of model names, got '{raw}'"
        ));
    }
    Ok(Some(models))
}

/// The decision for one job; `allowed` is `None` when every model may run.
fn judge(job: &Job, allowed: Option<&[String]>) -> Verdict {
    if let Some(allowed) = allowed
        && !allowed.contains(&job.model)
    {
        return Verdict::Deny(format!(
            "model '{}' is not in {MODELS} ({})",
            job.model,
            allowed.join(",")
        ));
    }
    if job.source == JobSource::Market && !job.pre_approved {
        return Verdict::Ask(format!(
            "run market job {} from {} on {} with a budget of {} tokens?",
            job.id, job.requester, job.model, job.budget.tokens
        ));
    }
    Verdict::Allow
}

struct Policy;

impl ConfigCheck for Policy {
    fn validate_config(config: Vec<(String, String)>) -> Result<(), Vec<String>> {
        let raw = config
            .iter()
            .find(|(key, _)| key == MODELS)
            .map(|(_, value)| value.as_str());
        allowed_models(raw)
            .map(|_| ())
            .map_err(|problem| vec![problem])
    }
}

impl Approval for Policy {
    fn decide(job: Job) -> Verdict {
        match allowed_models(settings::get(MODELS).as_deref()) {
            Ok(allowed) => judge(&job, allowed.as_deref()),
            // The host only activates a plugin whose configuration
            // validated, so this should not happen; if it does, refuse
            // rather than guess.
            Err(problem) => Verdict::Deny(problem),
        }
    }
}

export!(Policy);
