//! Baselines for the decision benchmark: the default policies' rules written
//! as native Rust and as a cedar policy, plus the shared input they decide on.
//!
//! The native rules mirror `plugins/` closely enough to give the same answer
//! on the benchmark's inputs; `benches/decision.rs` checks that before it
//! measures, so the comparison is of the same decision.

use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, PolicySet, Request, RestrictedExpression,
};
use claude_max_market::policy::{
    Budget, ConfiguredLimits, CredentialKind, DecisionInput, Fact, FactStatus, Image, Job,
    JobSource, MarketContext, Usage, Workspace,
};

pub const ALLOWED_MODELS: [&str; 3] = ["claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"];
pub const MAX_PROMPT_BYTES: u64 = 200_000;
pub const BASE_PRICE: u64 = 10;
pub const PRICE_PER_KILO_TOKEN: u64 = 2;

/// A typical local job on a node with room to spare, all facts in order.
pub fn input() -> DecisionInput {
    DecisionInput {
        job: Arc::new(Job {
            id: "0123456789abcdef01234567".into(),
            requester: "local".into(),
            model: "claude-sonnet-4-5".into(),
            budget: Budget {
                tokens: 50_000,
                requests: 40,
                timeout_secs: 600,
            },
            prompt_bytes: 2048,
            prompt_sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .into(),
            image: Image {
                reference: "claude-max-market-agent:0.2.0".into(),
                digest: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                    .into(),
            },
            command: [
                "claude",
                "-p",
                "--output-format",
                "json",
                "Fix the failing test",
            ]
            .map(String::from)
            .to_vec(),
            agent: "claude-code".into(),
            workspace: Some(Workspace {
                bytes: 4_812_331,
                files: 214,
            }),
            egress: false,
            source: JobSource::Local,
            credential: CredentialKind::ApiKey,
            pre_approved: false,
            labels: vec![("project".into(), "billing".into())],
        }),
        usage: Usage {
            tasks_today: 3,
            tokens_today: 12_000,
            running_jobs: 0,
            limits: ConfiguredLimits {
                daily_tasks: 20,
                daily_tokens: 200_000,
                max_tokens_per_task: 100_000,
                requests_per_job: 200,
                concurrent_jobs: 2,
                timeout_secs: 3600,
            },
        },
        market: MarketContext {
            slots: 0,
            load: 0.0,
            reputation: 0.5,
            offered_price: None,
            asked_price: None,
        },
        facts: [
            "consent-recorded",
            "terms-current",
            "no-credentials-in-config",
            "no-credentials-in-logs",
            "audit-chain",
            "job-hardening",
        ]
        .into_iter()
        .map(|name| Fact {
            name: name.into(),
            value: "ok".into(),
            status: FactStatus::Ok,
        })
        .collect(),
        at: 1_796_000_000,
    }
}

/// The four roles as plain Rust: true when all allow, with the quote.
pub fn native_decision(input: &DecisionInput) -> (bool, u64) {
    let job = &input.job;
    let u = &input.usage;
    let l = &u.limits;
    let approved =
        ALLOWED_MODELS.contains(&job.model.as_str()) && job.prompt_bytes <= MAX_PROMPT_BYTES;
    let asked = &job.budget;
    let within = u.tasks_today < l.daily_tasks
        && u.tokens_today
            .checked_add(asked.tokens)
            .is_some_and(|after| after <= l.daily_tokens)
        && asked.tokens <= l.max_tokens_per_task
        && asked.requests <= l.requests_per_job
        && asked.timeout_secs <= l.timeout_secs
        && u.running_jobs < l.concurrent_jobs;
    let market = job.source == JobSource::Market;
    let paid_by_subscription = market && job.credential == CredentialKind::Subscription;
    let image_listed = !market || job.image.reference.starts_with("claude-max-market-job:");
    let compliant = input.facts.iter().all(|f| f.status != FactStatus::Failed)
        && !paid_by_subscription
        && !job.egress
        && image_listed;
    (approved && within && compliant, native_quote(input))
}

/// list price × (1 + load) × (1.5 − reputation / 2), rounded up, in
/// thousandths as the pricing plugin computes it.
pub fn native_quote(input: &DecisionInput) -> u64 {
    let list = BASE_PRICE + input.job.budget.tokens.div_ceil(1000) * PRICE_PER_KILO_TOKEN;
    let load = (input.market.load.clamp(0.0, 1.0) * 1000.0).round() as u64;
    let reputation = (input.market.reputation.clamp(0.0, 1.0) * 1000.0).round() as u64;
    (list * (1000 + load) * (3000 - reputation)).div_ceil(2_000_000)
}

/// Approval, limits and compliance as one cedar policy set. Cedar has no
/// arithmetic beyond + and comparisons, so the pricing quote is not part of it.
pub const CEDAR_POLICY: &str = r#"
permit (principal, action == Action::"execute", resource)
when {
    ["claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"].contains(context.model) &&
    context.prompt_bytes <= 200000 &&
    context.tasks_today < context.daily_tasks &&
    context.tokens_today + context.budget_tokens <= context.daily_tokens &&
    context.budget_tokens <= context.max_tokens_per_task &&
    context.budget_requests <= context.requests_per_job &&
    context.budget_timeout_secs <= context.timeout_secs &&
    context.running_jobs < context.concurrent_jobs &&
    context.facts_ok &&
    !context.egress
};
forbid (principal, action, resource)
when { context.source == "market" && context.credential == "subscription" };
forbid (principal, action, resource)
when { context.source == "market" && !(context.image like "claude-max-market-job:*") };
"#;

/// A parsed cedar policy and the fixed parts of its requests.
pub struct Cedar {
    pub policies: PolicySet,
    pub authorizer: Authorizer,
    pub entities: Entities,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
}

impl Cedar {
    pub fn new() -> Cedar {
        Cedar {
            policies: PolicySet::from_str(CEDAR_POLICY).expect("the cedar policy parses"),
            authorizer: Authorizer::new(),
            entities: Entities::empty(),
            principal: EntityUid::from_str(r#"Node::"local""#).expect("uid"),
            action: EntityUid::from_str(r#"Action::"execute""#).expect("uid"),
            resource: EntityUid::from_str(r#"Job::"bench""#).expect("uid"),
        }
    }

    /// Builds the request for `input`, as a host would per decision.
    pub fn request(&self, input: &DecisionInput) -> Request {
        let job = &input.job;
        let u = &input.usage;
        let long = |v: u64| RestrictedExpression::new_long(v as i64);
        let source = if job.source == JobSource::Market {
            "market"
        } else {
            "local"
        };
        let credential = if job.credential == CredentialKind::Subscription {
            "subscription"
        } else {
            "api-key"
        };
        let context = Context::from_pairs([
            (
                "model".to_string(),
                RestrictedExpression::new_string(job.model.clone()),
            ),
            ("prompt_bytes".to_string(), long(job.prompt_bytes)),
            ("budget_tokens".to_string(), long(job.budget.tokens)),
            (
                "budget_requests".to_string(),
                long(u64::from(job.budget.requests)),
            ),
            (
                "budget_timeout_secs".to_string(),
                long(u64::from(job.budget.timeout_secs)),
            ),
            (
                "image".to_string(),
                RestrictedExpression::new_string(job.image.reference.clone()),
            ),
            (
                "egress".to_string(),
                RestrictedExpression::new_bool(job.egress),
            ),
            ("tasks_today".to_string(), long(u64::from(u.tasks_today))),
            ("tokens_today".to_string(), long(u.tokens_today)),
            ("running_jobs".to_string(), long(u64::from(u.running_jobs))),
            (
                "daily_tasks".to_string(),
                long(u64::from(u.limits.daily_tasks)),
            ),
            ("daily_tokens".to_string(), long(u.limits.daily_tokens)),
            (
                "max_tokens_per_task".to_string(),
                long(u.limits.max_tokens_per_task),
            ),
            (
                "requests_per_job".to_string(),
                long(u64::from(u.limits.requests_per_job)),
            ),
            (
                "concurrent_jobs".to_string(),
                long(u64::from(u.limits.concurrent_jobs)),
            ),
            (
                "timeout_secs".to_string(),
                long(u64::from(u.limits.timeout_secs)),
            ),
            (
                "facts_ok".to_string(),
                RestrictedExpression::new_bool(
                    input.facts.iter().all(|f| f.status != FactStatus::Failed),
                ),
            ),
            (
                "source".to_string(),
                RestrictedExpression::new_string(source.into()),
            ),
            (
                "credential".to_string(),
                RestrictedExpression::new_string(credential.into()),
            ),
        ])
        .expect("context keys are unique");
        Request::new(
            self.principal.clone(),
            self.action.clone(),
            self.resource.clone(),
            context,
            None,
        )
        .expect("no schema to violate")
    }

    pub fn allows(&self, request: &Request) -> bool {
        self.authorizer
            .is_authorized(request, &self.policies, &self.entities)
            .decision()
            == Decision::Allow
    }
}

impl Default for Cedar {
    fn default() -> Self {
        Cedar::new()
    }
}
