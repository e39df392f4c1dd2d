//! Test helpers, so a policy's own `cargo test` runs its decisions natively
//! without the host: a job, usage and market context to start each test
//! from, and settings given as pairs.
//!
//! The macros build the records of the calling plugin's own bindings (each
//! plugin generates its own): [`job!`](crate::job!) a `JobRecord`, which the
//! rules read through `JobFacts` as they read the host's job handle. The
//! record types must be in scope where they are used, e.g.
//! `use claude_max_market::policy::types::{Budget, CredentialKind, Image, JobSource};`.
//! A field the contract adds makes them fail to compile until this crate
//! knows it, rather than leaving it at some default nobody chose.
//!
//! ```ignore
//! let job = cmm_policy_sdk::job! { model: "claude-opus-4-1".into(), source: JobSource::Market };
//! let rules = Rules::from_pairs(&cmm_policy_sdk::testing::pairs(&[("plugin.models", "claude-haiku-4-5")]));
//! ```

/// Settings as `validate-config` would get them.
pub fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A local job on the built-in image asking for 1000 tokens, one request
/// and a minute, paid with an API key; the fields given replace those.
/// Builds the plugin's `JobRecord`; needs it, `Budget`, `Image`,
/// `JobSource` and `CredentialKind` in scope.
#[macro_export]
macro_rules! job {
    ($($field:ident : $value:expr),* $(,)?) => {
        #[allow(clippy::needless_update)]
        JobRecord {
            $($field: $value,)*
            ..JobRecord {
                id: "job-1".into(),
                requester: "local".into(),
                model: "claude-sonnet-4-5".into(),
                budget: Budget {
                    tokens: 1000,
                    requests: 1,
                    timeout_secs: 60,
                },
                prompt_bytes: 100,
                prompt_sha256: String::new(),
                image: Image {
                    reference: "claude-max-market-job:latest".into(),
                    digest: format!("sha256:{}", "0".repeat(64)),
                },
                command: Vec::new(),
                agent: String::new(),
                workspace: None,
                egress: false,
                source: JobSource::Local,
                credential: CredentialKind::ApiKey,
                pre_approved: false,
                labels: Vec::new(),
            }
        }
    };
}

/// Nothing used yet today under roomy limits (100 jobs and a million
/// tokens a day, 100,000 tokens, 50 requests and an hour per job, two at a
/// time); the fields given replace those. Needs `Usage` and
/// `ConfiguredLimits` in scope.
#[macro_export]
macro_rules! usage {
    ($($field:ident : $value:expr),* $(,)?) => {
        #[allow(clippy::needless_update)]
        Usage {
            $($field: $value,)*
            ..Usage {
                tasks_today: 0,
                tokens_today: 0,
                running_jobs: 0,
                limits: ConfiguredLimits {
                    daily_tasks: 100,
                    daily_tokens: 1_000_000,
                    max_tokens_per_task: 100_000,
                    requests_per_job: 50,
                    concurrent_jobs: 2,
                    timeout_secs: 3600,
                },
            }
        }
    };
}

/// One idle slot and a neutral counterpart, no prices named; the fields
/// given replace those. Needs `MarketContext` in scope.
#[macro_export]
macro_rules! market {
    ($($field:ident : $value:expr),* $(,)?) => {
        #[allow(clippy::needless_update)]
        MarketContext {
            $($field: $value,)*
            ..MarketContext {
                slots: 1,
                load: 0.0,
                reputation: 0.5,
                offered_price: None,
                asked_price: None,
            }
        }
    };
}
