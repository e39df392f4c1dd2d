//! The four-role decision: ask approval, limits, compliance and pricing about
//! one job and combine their answers.
//!
//! Combination is fail-closed: any deny (including any plugin failure) makes
//! the job denied; otherwise any ask makes it ask; only four clean answers
//! allow it. Every role is asked even after a deny, so a dry run shows all.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use wasmtime::Store;
use wasmtime::component::Resource;

use super::bindings::{Budget, Fact, MarketContext, Usage, approval, compliance, limits, pricing};
use super::call::{Live, RoleGuest};
use super::engine::{Isolation, PolicyEngine};
use super::failure::{Failure, FailureClass};
use super::job::{Job, LentJob};
use super::node_rules::NodeRules;
use super::outcome::{
    ComplianceFinding, Grant, Outcome, Quote, RoleDecision, RoleResult, Severity,
};
use super::plugin::{PluginMeta, PluginPre};
use super::role::Role;
use super::sandbox::{PluginSettings, PluginState};

/// The most findings a compliance plugin may report: far more than there
/// are facts to judge, far fewer than a report can show.
pub const MAX_FINDINGS: usize = 256;

/// Everything the roles are told about one job. It is recorded with the
/// decision (serialized as the WIT records are), which is what replays it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct DecisionInput {
    /// Shared with the plugins' stores while they are asked, not copied.
    pub job: Arc<Job>,
    pub usage: Usage,
    pub market: MarketContext,
    pub facts: Vec<Fact>,
    /// When the decision was asked for, in Unix seconds: what the `clock`
    /// import answers during it, so a replay sees the same time.
    #[serde(default)]
    pub at: u64,
}

/// The current time in Unix seconds, for [`DecisionInput::at`].
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The combined decision and each role's part in it.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineDecision {
    pub decision: Outcome,
    pub roles: Vec<RoleDecision>,
    /// What the roles were asked.
    #[serde(skip)]
    pub input: DecisionInput,
}

impl PipelineDecision {
    /// The budget granted by limits, when the decision allows the job.
    pub fn grant(&self) -> Option<Grant> {
        self.roles.iter().find_map(|r| r.grant)
    }

    pub fn quote(&self) -> Option<&Quote> {
        self.roles.iter().find_map(|r| r.quote.as_ref())
    }
}

/// One role's plugin, or the reason there is none usable.
pub struct Slot {
    role: Role,
    /// Shared with every decision this slot makes.
    meta: Arc<PluginMeta>,
    plugin: Result<PluginPre, Failure>,
    /// The node's settings plus the plugin's own, set by the pipeline.
    settings: Arc<PluginSettings>,
    warm: Option<Live>,
}

impl Slot {
    pub fn ready(plugin: PluginPre) -> Slot {
        Slot {
            role: plugin.role(),
            meta: Arc::new(plugin.meta().clone()),
            plugin: Ok(plugin),
            settings: Arc::default(),
            warm: None,
        }
    }

    /// A role whose plugin could not be loaded: every decision denies with
    /// class `missing`.
    pub fn missing(role: Role, meta: PluginMeta, message: String) -> Slot {
        Slot {
            role,
            meta: Arc::new(meta),
            plugin: Err(Failure::new(FailureClass::Missing, message)),
            settings: Arc::default(),
            warm: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn meta(&self) -> &PluginMeta {
        &self.meta
    }

    /// The failure every decision of this role will give, if any.
    pub fn failure(&self) -> Option<&Failure> {
        self.plugin.as_ref().err()
    }
}

/// The active plugin per role, validated against the current settings,
/// and the node's own rules around them.
pub struct Pipeline {
    engine: Arc<PolicyEngine>,
    slots: Vec<Slot>,
    rules: NodeRules,
}

impl Pipeline {
    /// Builds the pipeline and asks each plugin to validate `settings`; a
    /// plugin that refuses them fails every decision with `invalid-config`.
    /// `slots` must hold one slot per role.
    pub fn new(
        engine: Arc<PolicyEngine>,
        mut slots: Vec<Slot>,
        settings: Vec<(String, String)>,
    ) -> Pipeline {
        slots.sort_by_key(|s| s.role.index());
        assert!(
            slots.iter().map(|s| s.role).eq(Role::ALL),
            "a pipeline needs exactly one slot per role"
        );
        for slot in &mut slots {
            if let Ok(plugin) = &slot.plugin {
                slot.settings = plugin.settings(&settings);
                if let Err(failure) = validate(&engine, plugin, &slot.settings) {
                    slot.plugin = Err(failure);
                }
            }
        }
        Pipeline {
            engine,
            slots,
            rules: NodeRules::default(),
        }
    }

    /// Holds every decision to the node's own rules, whatever the plugins
    /// answer.
    pub fn with_node_rules(mut self, rules: NodeRules) -> Pipeline {
        self.rules = rules;
        self
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Asks every role about `input` and combines the answers.
    #[tracing::instrument(skip_all, fields(job_id = %input.job.id))]
    pub fn decide(&mut self, input: DecisionInput) -> PipelineDecision {
        // One record for the four roles, each lent a handle to it.
        let shown = match self.rules.shown(&input.job) {
            Cow::Borrowed(_) => input.job.clone(),
            Cow::Owned(job) => Arc::new(job),
        };
        let mut roles: Vec<RoleDecision> = (0..self.slots.len())
            .map(|i| self.ask(i, &input, &shown))
            .collect();
        self.rules.enforce(&input.job, &mut roles);
        let decision = if roles.iter().any(|r| r.outcome == Outcome::Deny) {
            Outcome::Deny
        } else if roles.iter().any(|r| r.outcome == Outcome::Ask) {
            Outcome::Ask
        } else {
            Outcome::Allow
        };
        PipelineDecision {
            decision,
            roles,
            input,
        }
    }

    /// Asks the compliance plugin to judge `facts` on their own, outside
    /// any job: what `compliance-check` reports. A plugin that fails,
    /// answers more than `policy.maxAnswerBytes` in one message or more
    /// than [`MAX_FINDINGS`] findings, is a `Failure` like any decision's.
    pub fn findings(&mut self, facts: &[Fact]) -> Result<Vec<ComplianceFinding>, Failure> {
        let reuse = self.engine.isolation() == Isolation::Reuse;
        let max = self.engine.limits().max_answer_bytes;
        let slot = &mut self.slots[Role::Compliance.index()];
        let plugin = slot.plugin.as_ref().map_err(Clone::clone)?;
        let warm = if reuse { Some(&mut slot.warm) } else { None };
        let found = plugin.run(
            &self.engine,
            &slot.settings,
            warm,
            |store, guests| match &guests.role {
                RoleGuest::Compliance(g) => g.call_findings(store, facts),
                _ => unreachable!("the compliance slot holds a compliance plugin"),
            },
        )?;
        if found.len() > MAX_FINDINGS {
            return Err(Failure::invalid_output(
                plugin.role,
                &plugin.meta.name,
                &format!("{} findings, over the cap of {MAX_FINDINGS}", found.len()),
            ));
        }
        if let Some(long) = found.iter().find(|f| f.message.len() + f.id.len() > max) {
            return Err(Failure::invalid_output(
                plugin.role,
                &plugin.meta.name,
                &format!(
                    "a {} byte finding '{}', over the {max} byte cap (policy.maxAnswerBytes)",
                    long.message.len() + long.id.len(),
                    long.id.chars().take(40).collect::<String>()
                ),
            ));
        }
        Ok(found
            .into_iter()
            .map(|f| ComplianceFinding {
                id: f.id,
                severity: match f.severity {
                    compliance::Severity::Critical => Severity::Critical,
                    compliance::Severity::Warning => Severity::Warning,
                    compliance::Severity::Info => Severity::Info,
                },
                passed: f.passed,
                message: f.message,
            })
            .collect())
    }

    /// Asks one role alone (what `policy test` and `policy bench` do).
    pub fn decide_role(&mut self, role: Role, input: &DecisionInput) -> RoleDecision {
        self.ask(role.index(), input, &input.job)
    }

    /// Asks pricing whether a bid of `bid` RUV for the job is acceptable:
    /// `Ok(None)` to accept, `Ok(Some(reason))` to reject.
    pub fn consider_bid(
        &mut self,
        input: &DecisionInput,
        bid: u64,
    ) -> Result<Option<String>, Failure> {
        let reuse = self.engine.isolation() == Isolation::Reuse;
        let slot = &mut self.slots[Role::Pricing.index()];
        let plugin = slot.plugin.as_ref().map_err(Clone::clone)?;
        let warm = if reuse { Some(&mut slot.warm) } else { None };
        let verdict = plugin.run(
            &self.engine,
            &slot.settings,
            warm,
            |store, guests| match &guests.role {
                RoleGuest::Pricing(g) => {
                    store.data_mut().clock = Some(input.at);
                    LentJob::during(store, &input.job, |store, job| {
                        g.call_consider_bid(store, job, input.market, bid)
                    })
                }
                _ => unreachable!("the pricing slot holds a pricing plugin"),
            },
        )?;
        Ok(match verdict {
            pricing::BidVerdict::Accept => None,
            pricing::BidVerdict::Reject(reason) => Some(reason),
        })
    }

    /// Asks one role about `job`, the input's job as the plugins are shown it.
    fn ask(&mut self, index: usize, input: &DecisionInput, job: &Arc<Job>) -> RoleDecision {
        let started = Instant::now();
        let reuse = self.engine.isolation() == Isolation::Reuse;
        let slot = &mut self.slots[index];
        let result = match &slot.plugin {
            Err(failure) => RoleResult::Failed(failure.clone()),
            Ok(plugin) => {
                let warm = if reuse { Some(&mut slot.warm) } else { None };
                let max = self.engine.limits().max_answer_bytes;
                let answer = plugin.run(&self.engine, &slot.settings, warm, |store, guests| {
                    store.data_mut().clock = Some(input.at);
                    LentJob::during(store, job, |store, job| {
                        call_role(&guests.role, store, job, input)
                    })
                });
                answer
                    .and_then(|result| check_answer(plugin, result, &input.job, max))
                    .unwrap_or_else(RoleResult::Failed)
            }
        };
        let elapsed = started.elapsed().as_micros() as u64;
        let decision = RoleDecision::new(slot.role, slot.meta.clone(), result, elapsed);
        tracing::debug!(role = %decision.role, outcome = %decision.outcome, error_class = ?decision.error_class, elapsed_us = elapsed, "role decided");
        decision
    }
}

/// Asks one plugin its role's question about the lent `job`.
fn call_role(
    guest: &RoleGuest,
    store: &mut Store<PluginState>,
    job: Resource<LentJob>,
    input: &DecisionInput,
) -> wasmtime::Result<RoleResult> {
    match guest {
        RoleGuest::Approval(g) => ask_approval(g, store, job),
        RoleGuest::Limits(g) => ask_limits(g, store, job, input),
        RoleGuest::Compliance(g) => ask_compliance(g, store, job, input),
        RoleGuest::Pricing(g) => ask_pricing(g, store, job, input),
    }
}

fn ask_approval(
    guest: &approval::Guest,
    store: &mut Store<PluginState>,
    job: Resource<LentJob>,
) -> wasmtime::Result<RoleResult> {
    Ok(match guest.call_decide(store, job)? {
        approval::Verdict::Allow => RoleResult::Allow,
        approval::Verdict::Deny(reason) => RoleResult::Deny(reason),
        approval::Verdict::Ask(reason) => RoleResult::Ask(reason),
    })
}

fn ask_limits(
    guest: &limits::Guest,
    store: &mut Store<PluginState>,
    job: Resource<LentJob>,
    input: &DecisionInput,
) -> wasmtime::Result<RoleResult> {
    Ok(match guest.call_check(store, job, input.usage)? {
        limits::Verdict::Allow(g) => RoleResult::Granted(Grant {
            tokens: g.tokens,
            requests: g.requests,
            timeout_secs: g.timeout_secs,
        }),
        limits::Verdict::Deny(reason) => RoleResult::Deny(reason),
    })
}

fn ask_compliance(
    guest: &compliance::Guest,
    store: &mut Store<PluginState>,
    job: Resource<LentJob>,
    input: &DecisionInput,
) -> wasmtime::Result<RoleResult> {
    Ok(match guest.call_check_job(store, job, &input.facts)? {
        compliance::Verdict::Allow => RoleResult::Allow,
        compliance::Verdict::Deny(reason) => RoleResult::Deny(reason),
    })
}

fn ask_pricing(
    guest: &pricing::Guest,
    store: &mut Store<PluginState>,
    job: Resource<LentJob>,
    input: &DecisionInput,
) -> wasmtime::Result<RoleResult> {
    Ok(match guest.call_quote_job(store, job, input.market)? {
        Some(quote) => RoleResult::Quoted(Quote {
            price: quote.price,
            explanation: quote.explanation,
        }),
        None => RoleResult::NoQuote,
    })
}

/// Refuses answers the host will not carry: oversized text (the guest
/// controls its size) and grants larger than what the job asked for.
fn check_answer(
    plugin: &PluginPre,
    result: RoleResult,
    job: &Job,
    max: usize,
) -> Result<RoleResult, Failure> {
    let invalid = |what: String| {
        Err(Failure::invalid_output(
            plugin.role,
            &plugin.meta.name,
            &what,
        ))
    };
    match &result {
        RoleResult::Deny(text)
        | RoleResult::Ask(text)
        | RoleResult::Quoted(Quote {
            explanation: text, ..
        }) if text.len() > max => invalid(format!(
            "a {} byte reason, over the {max} byte cap (policy.maxAnswerBytes)",
            text.len()
        )),
        RoleResult::Granted(g) if !within(g, &job.budget) => invalid(format!(
            "a grant of {} tokens, {} requests and {} s for a job that asked for {} tokens, \
             {} requests and {} s (each part must be at least 1 and at most what was asked)",
            g.tokens,
            g.requests,
            g.timeout_secs,
            job.budget.tokens,
            job.budget.requests,
            job.budget.timeout_secs
        )),
        _ => Ok(result),
    }
}

/// A grant may only narrow what the job asked for, and a zero would be a
/// denial dressed up as an allow.
fn within(grant: &Grant, asked: &Budget) -> bool {
    (1..=asked.tokens).contains(&grant.tokens)
        && (1..=asked.requests).contains(&grant.requests)
        && (1..=asked.timeout_secs).contains(&grant.timeout_secs)
}

/// Calls a plugin's `validate-config` under the same sandbox as decisions.
pub(crate) fn validate(
    engine: &PolicyEngine,
    plugin: &PluginPre,
    settings: &Arc<PluginSettings>,
) -> Result<(), Failure> {
    let answer = plugin.run(engine, settings, None, |store, guests| {
        guests.config.call_validate_config(store, settings.pairs())
    })?;
    answer.map_err(|problems| {
        let max = engine.limits().max_answer_bytes;
        let mut text = problems.join("; ");
        text.truncate(text.floor_char_boundary(max));
        Failure::new(
            FailureClass::InvalidConfig,
            format!(
                "{} plugin '{}' refuses the configuration: {text}; fix it with `config --set` or run `policy reset {}`",
                plugin.role, plugin.meta.name, plugin.role
            ),
        )
    })
}
