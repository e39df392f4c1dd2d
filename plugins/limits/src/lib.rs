//! The default limits policy: decides whether a job fits within this node's
//! daily, per-job and concurrency limits, and what budget it gets.
//!
//! The limits and the usage so far both arrive in the `usage` record, already
//! validated by the host, so this plugin reads no settings. A job that fits
//! is granted exactly the budget it asked for (tokens, requests, wall time);
//! asking for more than one job may have is refused with the setting that
//! raises it, rather than silently cut. The decision itself is the plain
//! function `judge`, so it can be tested without a host.

cmm_policy_sdk::bindings!("limits-policy");

use claude_max_market::policy::types::{Job, Usage};
use exports::claude_max_market::policy::config_check::Guest as ConfigCheck;
use exports::claude_max_market::policy::limits::{Guest as Limits, Verdict};

/// The limits decision for one job. The numbers come from the host, but a
/// plugin must not trap or wrap on any input it is given. The token sum is
/// checked rather than saturated: a saturated sum equals `u64::MAX` and would
/// slip under a daily cap of `u64::MAX`, whereas a sum that overflows is
/// over any cap.
fn judge(job: &impl JobFacts, usage: &Usage) -> Verdict {
    let limits = &usage.limits;
    let asked = job.budget();
    if usage.tasks_today >= limits.daily_tasks {
        return Verdict::Deny(format!(
            "{} of {} jobs already admitted today (UTC); raise the cap with \
             `claude-max-market limits --daily <jobs>`",
            usage.tasks_today, limits.daily_tasks
        ));
    }
    let tokens_after = usage.tokens_today.checked_add(asked.tokens);
    if tokens_after.is_none_or(|after| after > limits.daily_tokens) {
        return Verdict::Deny(format!(
            "{} tokens used or reserved today (UTC) plus this job's budget of {} would pass \
             the daily {}; ask for less with --budget-tokens, or raise it with \
             `claude-max-market limits --tokens <tokens>`",
            usage.tokens_today, asked.tokens, limits.daily_tokens
        ));
    }
    if asked.tokens > limits.max_tokens_per_task {
        return Verdict::Deny(format!(
            "the job asks for a budget of {} tokens but one job may have at most {}; ask for \
             less with --budget-tokens, or raise limits.maxTokensPerTask with \
             `claude-max-market config --set limits.maxTokensPerTask=<tokens>`",
            asked.tokens, limits.max_tokens_per_task
        ));
    }
    if asked.requests > limits.requests_per_job {
        return Verdict::Deny(format!(
            "the job asks for {} requests but one job may make at most {}; ask for fewer with \
             --max-requests, or raise limits.requestsPerJob with \
             `claude-max-market config --set limits.requestsPerJob=<requests>`",
            asked.requests, limits.requests_per_job
        ));
    }
    if asked.timeout_secs > limits.timeout_secs {
        return Verdict::Deny(format!(
            "the job asks to run for {} s but one job may run at most {} s; ask for less with \
             --timeout, or raise limits.timeoutSecs with \
             `claude-max-market config --set limits.timeoutSecs=<seconds>`",
            asked.timeout_secs, limits.timeout_secs
        ));
    }
    if usage.running_jobs >= limits.concurrent_jobs {
        return Verdict::Deny(format!(
            "{} of {} job slots are busy; wait for one to finish or raise the cap with \
             `claude-max-market limits --concurrent <jobs>`",
            usage.running_jobs, limits.concurrent_jobs
        ));
    }
    Verdict::Allow(asked)
}

struct LimitsPolicy;

impl ConfigCheck for LimitsPolicy {
    /// Nothing to check: this policy reads no settings, and it must not
    /// refuse keys that belong to other plugins.
    fn validate_config(_config: Vec<(String, String)>) -> Result<(), Vec<String>> {
        Ok(())
    }
}

impl Limits for LimitsPolicy {
    fn check(job: &Job, usage: Usage) -> Verdict {
        judge(job, &usage)
    }
}

export!(LimitsPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use claude_max_market::policy::types::{
        Budget, ConfiguredLimits, CredentialKind, Image, JobSource,
    };

    fn job(tokens: u64) -> JobRecord {
        cmm_policy_sdk::job! {
            budget: Budget {
                tokens,
                requests: 10,
                timeout_secs: 600,
            },
        }
    }

    fn idle() -> Usage {
        cmm_policy_sdk::usage! {
            limits: ConfiguredLimits {
                daily_tasks: 10,
                daily_tokens: 100_000,
                max_tokens_per_task: 8_000,
                requests_per_job: 10,
                concurrent_jobs: 2,
                timeout_secs: 600,
            },
        }
    }

    fn denial(job: &JobRecord, usage: &Usage) -> String {
        match judge(job, usage) {
            Verdict::Deny(reason) => reason,
            Verdict::Allow(grant) => panic!("expected deny, got {grant:?}"),
        }
    }

    #[test]
    fn a_job_within_limits_gets_what_it_asked_for() {
        let Verdict::Allow(grant) = judge(&job(4_000), &idle()) else {
            panic!("expected allow");
        };
        assert_eq!(
            (grant.tokens, grant.requests, grant.timeout_secs),
            (4_000, 10, 600)
        );
    }

    #[test]
    fn each_limit_names_the_flag_that_raises_it() {
        let mut usage = idle();
        usage.tasks_today = 10;
        assert!(denial(&job(1), &usage).contains("limits --daily"));

        let mut usage = idle();
        usage.tokens_today = 99_000;
        assert!(denial(&job(4_000), &usage).contains("limits --tokens"));

        assert!(denial(&job(9_000), &idle()).contains("limits.maxTokensPerTask"));

        let mut chatty = job(1);
        chatty.budget.requests = 11;
        assert!(denial(&chatty, &idle()).contains("limits.requestsPerJob"));

        let mut slow = job(1);
        slow.budget.timeout_secs = 601;
        assert!(denial(&slow, &idle()).contains("limits.timeoutSecs"));

        let mut usage = idle();
        usage.running_jobs = 2;
        assert!(denial(&job(1), &usage).contains("limits --concurrent"));
    }

    #[test]
    fn extreme_token_counts_neither_wrap_nor_slip_through() {
        let mut usage = idle();
        usage.limits.daily_tokens = u64::MAX;
        usage.tokens_today = u64::MAX;
        assert!(denial(&job(1), &usage).contains("limits --tokens"));
        usage.tokens_today = u64::MAX - 1;
        assert!(matches!(judge(&job(1), &usage), Verdict::Allow(_)));
        usage.limits.daily_tokens = 5;
        assert!(denial(&job(0), &usage).contains("limits --tokens"));
    }
}
