//! {{name}}: decides whether a job fits within this node's limits, and
//! with what budget.
//!
//! A job is denied once the node has admitted its `limits.dailyTasks` jobs
//! for the day. Otherwise it gets the budget it asked for, with its tokens
//! cut down to `limits.maxTokensPerTask` and to `plugin.maxTokens` when that
//! is set, and its requests and seconds to the node's `limits.requestsPerJob`
//! and `limits.timeoutSecs`. The node's limits and what it has used so far
//! arrive in the `usage` record. This starter checks nothing else; the
//! built-in limits policy also checks daily tokens and concurrent jobs.
//!
//! The plugin's own values (`[roles.limits.config]` in `bundle.toml`)
//! arrive as `plugin.<key>`, the node's settings as `section.key`: as a list
//! to `validate_config` before the plugin is activated, and one key at a
//! time through `settings::get` while it decides. Change the rules in
//! `judge`, then add a case for each to `cases.toml`.

wit_bindgen::generate!({ world: "{{world}}", path: "wit" });

use claude_max_market::policy::settings;
use claude_max_market::policy::types::{Job, Usage};
use exports::claude_max_market::policy::config_check::Guest as ConfigCheck;
use claude_max_market::policy::types::Budget;
use exports::claude_max_market::policy::limits::{Guest as Limits, Verdict};

/// The most tokens this plugin grants one job. Unset leaves the node's
/// `limits.maxTokensPerTask` as the only cap.
const MAX_TOKENS: &str = "plugin.maxTokens";

/// `plugin.maxTokens` as a number, or `None` when it is unset. Zero is
/// refused: a grant of no tokens would admit jobs that can do nothing.
fn max_tokens(raw: Option<&str>) -> Result<Option<u64>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    match raw.parse::<u64>() {
        Ok(tokens) if tokens > 0 => Ok(Some(tokens)),
        _ => Err(format!(
            "{MAX_TOKENS}: expected a whole number from 1 to {}, got '{raw}'",
            u64::MAX
        )),
    }
}

/// The decision for one job; `cap` is `plugin.maxTokens`, if set.
fn judge(job: &Job, usage: &Usage, cap: Option<u64>) -> Verdict {
    let limits = &usage.limits;
    if usage.tasks_today >= limits.daily_tasks {
        return Verdict::Deny(format!(
            "{} of {} jobs already admitted today (UTC); raise the cap with \
             `claude-max-market limits --daily <jobs>`",
            usage.tasks_today, limits.daily_tasks
        ));
    }
    // The plugin's cap can only lower the node's, never raise it.
    let cap = cap.map_or(limits.max_tokens_per_task, |cap| {
        cap.min(limits.max_tokens_per_task)
    });
    let asked = &job.budget;
    Verdict::Allow(Budget {
        tokens: asked.tokens.min(cap),
        requests: asked.requests.min(limits.requests_per_job),
        timeout_secs: asked.timeout_secs.min(limits.timeout_secs),
    })
}

struct Policy;

impl ConfigCheck for Policy {
    fn validate_config(config: Vec<(String, String)>) -> Result<(), Vec<String>> {
        let raw = config
            .iter()
            .find(|(key, _)| key == MAX_TOKENS)
            .map(|(_, value)| value.as_str());
        max_tokens(raw).map(|_| ()).map_err(|problem| vec![problem])
    }
}

impl Limits for Policy {
    fn check(job: Job, usage: Usage) -> Verdict {
        match max_tokens(settings::get(MAX_TOKENS).as_deref()) {
            Ok(cap) => judge(&job, &usage, cap),
            // The host only activates a plugin whose configuration
            // validated, so this should not happen; if it does, refuse
            // rather than guess.
            Err(problem) => Verdict::Deny(problem),
        }
    }
}

export!(Policy);
