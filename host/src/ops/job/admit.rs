//! Admission: the four-role pipeline decides on a [`JobRequest`] inside the
//! store's admission transaction, and an allowed job becomes an
//! [`AdmittedJob`]. Only this module can make one, and only an admitted job
//! can run, so nothing starts a container for a job that was not admitted,
//! reserved and audited.
//!
//! Admission is one IMMEDIATE transaction in the store: the usage snapshot,
//! the pipeline's decision, the reservation and the audit row, so parallel
//! invocations can never together exceed a limit.

use std::time::Duration;

use serde::Serialize;

use crate::config::Settings;
use crate::metrics;
use crate::policy::{
    ConfiguredLimits, DecisionInput, Fact, FailureClass, MarketContext, Outcome, Pipeline,
    PipelineDecision, Role, RoleDecision, Usage,
};
use crate::store::{Admission, Budget, DecisionRecord, UsageSnapshot, Verdict};

use super::super::limits::today;
use super::super::{Context, OpsError, facts, policy};
use super::folder::JobFolder;
use super::request::{JobRequest, Work};

/// What the owner is shown when approval asks.
#[derive(Debug, Clone, Serialize)]
pub struct AskDetails {
    pub job_id: String,
    pub model: String,
    pub image: String,
    /// The command line; empty for the one-prompt worker.
    pub command: Vec<String>,
    pub budget: Budget,
    /// The workspace's files and bytes, if it has one.
    pub workspace: Option<(u32, u64)>,
    /// The first few hundred characters of the prompt, if there is one.
    pub prompt_start: String,
    /// Whether the prompt goes on past `prompt_start`.
    pub prompt_truncated: bool,
    pub reason: String,
}

/// The owner's answer to an ask: `None` when nobody is there to answer.
pub type Confirm<'a> = &'a mut dyn FnMut(&AskDetails) -> Option<bool>;

/// Characters of the prompt shown when asking.
const PROMPT_PREVIEW_CHARS: usize = 300;

/// A job the pipeline allowed: usage is reserved and the admission is on the
/// audit log. Only [`admit`] makes one.
pub struct AdmittedJob {
    request: JobRequest,
    folder: JobFolder,
    grant: Budget,
    policies: Vec<(String, String)>,
    usage_before: UsageSnapshot,
}

impl std::fmt::Debug for AdmittedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmittedJob")
            .field("id", &self.request.id)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

impl AdmittedJob {
    pub fn request(&self) -> &JobRequest {
        &self.request
    }

    /// What limits granted: what the gateway and the runner hold it to.
    pub fn grant(&self) -> Budget {
        self.grant
    }

    /// The digest of the plugin each role ran, by role.
    pub fn policies(&self) -> &[(String, String)] {
        &self.policies
    }

    pub fn usage_before(&self) -> UsageSnapshot {
        self.usage_before
    }

    /// Shortens the wall-time grant, e.g. to what a market lock allows; a
    /// grant is only ever narrowed after admission.
    pub fn narrow_timeout(&mut self, secs: u32) {
        self.grant.timeout_secs = self.grant.timeout_secs.min(secs);
    }

    /// The job's folder: the copy of its workspace, among the rest.
    pub(crate) fn folder(&self) -> &JobFolder {
        &self.folder
    }

    /// Takes the job apart for running; the folder goes with it.
    pub(crate) fn into_parts(self) -> (JobRequest, JobFolder, Budget, Vec<(String, String)>) {
        (self.request, self.folder, self.grant, self.policies)
    }
}

/// Runs the pipeline on `request` and admits it when allowed. When approval
/// asks, `confirm` gets the question, and a yes admits it in a second
/// admission (limits are decided again under the lock: time passed while
/// the owner read). A deny or an unanswered ask is an error.
pub fn admit(
    ctx: &mut Context,
    request: JobRequest,
    folder: JobFolder,
    confirm: Confirm<'_>,
) -> Result<AdmittedJob, OpsError> {
    let (admission, decision) = admit_with(ctx, &request, false)?;
    let reason = match admission {
        Admission::Admitted { snapshot, .. } => {
            return admitted(request, folder, snapshot, &decision);
        }
        Admission::Refused {
            outcome: Outcome::Ask,
            ..
        } => reasons(&decision),
        Admission::Refused { .. } => {
            return Err(OpsError::Denied {
                reason: reasons(&decision),
            });
        }
    };
    let details = ask_details(&request, reason.clone());
    match confirm(&details) {
        None => Err(OpsError::NoOneToAsk {
            job_id: request.id.clone(),
            reason,
        }),
        Some(false) => Err(OpsError::Denied {
            reason: "the owner declined at the prompt".into(),
        }),
        Some(true) => match admit_with(ctx, &request, true)? {
            (Admission::Admitted { snapshot, .. }, decision) => {
                admitted(request, folder, snapshot, &decision)
            }
            (Admission::Refused { .. }, decision) => Err(OpsError::Denied {
                reason: reasons(&decision),
            }),
        },
    }
}

/// What a market task's decision adds: the counterpart as pricing sees it,
/// and the price to ask against the requester's bid.
#[derive(Debug, Clone, Copy)]
pub struct MarketTerms {
    pub market: MarketContext,
    /// The owner's fixed price, if set; pricing's quote otherwise.
    pub fixed: Option<u64>,
    pub bid: u64,
}

/// Admission for a market task, with pricing's answer to the bid: the
/// asking price when the bid covers it, else the bid if pricing accepts
/// it. Nobody is at a prompt while serving, so an ask is a no. `Ok(Err)`
/// carries the roles' reasons when any refuses (recorded as a refusal).
pub fn admit_market(
    ctx: &mut Context,
    request: JobRequest,
    folder: JobFolder,
    terms: MarketTerms,
) -> Result<Result<(AdmittedJob, u64), String>, OpsError> {
    let engine = ctx.engine()?;
    let mut pipeline = policy::pipeline(ctx, &engine)?;
    let facts = facts::gather(ctx)?;
    let limits = limits_of(&ctx.settings);
    let record = request.record();
    let mut decision: Option<PipelineDecision> = None;
    let mut price = None;
    let (_, admission) = ctx.store.admit(&record, today(), |snapshot| {
        let input = DecisionInput {
            job: request.policy_job().into(),
            usage: usage_of(snapshot, limits),
            market: terms.market,
            facts,
            at: crate::policy::unix_now(),
        };
        let mut d = pipeline.decide(input);
        count(&d);
        if d.decision == Outcome::Allow {
            let ask = asking_price(terms.fixed, d.quote().map(|q| q.price), terms.market);
            price = ask.and_then(|ask| accept_bid(&mut pipeline, &d.input, ask, terms.bid));
            if price.is_none() {
                refuse_bid(&mut d, terms.bid, ask);
            }
        }
        if d.decision == Outcome::Ask {
            d.decision = Outcome::Deny;
        }
        let v = verdict(&d);
        decision = Some(d);
        v
    })?;
    let decision = decision.expect("admission runs the pipeline unless it fails");
    match (admission, price) {
        (Admission::Admitted { snapshot, .. }, Some(price)) => {
            Ok(Ok((admitted(request, folder, snapshot, &decision)?, price)))
        }
        _ => Ok(Err(reasons(&decision))),
    }
}

/// What this node asks for a market job: the owner's fixed price, else
/// pricing's quote, else (pricing has no opinion) the offer's price. `None`
/// when there is none of them to ask.
fn asking_price(fixed: Option<u64>, quote: Option<u64>, market: MarketContext) -> Option<u64> {
    fixed.or(quote).or(market.offered_price)
}

/// The price of a market job whose requester bid `bid`: the asking price
/// when the bid covers it, else the bid if pricing accepts it.
fn accept_bid(pipeline: &mut Pipeline, input: &DecisionInput, ask: u64, bid: u64) -> Option<u64> {
    if ask <= bid {
        return Some(ask);
    }
    match pipeline.consider_bid(input, bid) {
        Ok(None) => Some(bid),
        _ => None,
    }
}

/// Marks pricing's part of `decision` as a refusal of `bid`.
fn refuse_bid(decision: &mut PipelineDecision, bid: u64, ask: Option<u64>) {
    decision.decision = Outcome::Deny;
    if let Some(role) = decision.roles.iter_mut().find(|r| r.role == Role::Pricing) {
        role.outcome = Outcome::Deny;
        role.reason = Some(match ask {
            Some(ask) => format!("the bid of {bid} RUV is below the asking price of {ask}"),
            None => "pricing has no opinion on the price and no price is set: serve with --price"
                .to_owned(),
        });
    }
}

/// Runs the pipeline without admitting anything; the decision is audited.
pub fn dry_run(
    ctx: &mut Context,
    request: &JobRequest,
) -> Result<(UsageSnapshot, PipelineDecision), OpsError> {
    let engine = ctx.engine()?;
    let mut pipeline = policy::pipeline(ctx, &engine)?;
    let facts = facts::gather(ctx)?;
    let usage = ctx.store.usage_snapshot(today())?;
    let decision = pipeline.decide(decision_input(
        request,
        &usage,
        limits_of(&ctx.settings),
        facts,
    ));
    count(&decision);
    ctx.store
        .record_verdict(&request.record(), "job.dry-run", &verdict(&decision))?;
    Ok((usage, decision))
}

fn admitted(
    request: JobRequest,
    folder: JobFolder,
    usage_before: UsageSnapshot,
    decision: &PipelineDecision,
) -> Result<AdmittedJob, OpsError> {
    let grant = verdict(decision).grant.ok_or_else(|| OpsError::Denied {
        reason: "limits allowed the job without granting it a budget".into(),
    })?;
    Ok(AdmittedJob {
        request,
        folder,
        grant,
        policies: policies(&decision.roles),
        usage_before,
    })
}

fn policies(roles: &[RoleDecision]) -> Vec<(String, String)> {
    roles
        .iter()
        .map(|r| (r.role.as_str().to_owned(), r.plugin.digest.clone()))
        .collect()
}

fn ask_details(request: &JobRequest, reason: String) -> AskDetails {
    let job = request.policy_job();
    let prompt = match &request.work {
        Work::Prompt { text, .. } => Some(text.as_str()),
        Work::Command(c) => c.stdin.as_deref(),
    }
    .unwrap_or_default();
    AskDetails {
        job_id: request.id.clone(),
        model: request.model.clone(),
        image: request.image.reference.clone(),
        command: job.command,
        budget: request.budget,
        workspace: job.workspace.map(|w| (w.files, w.bytes)),
        prompt_start: prompt.chars().take(PROMPT_PREVIEW_CHARS).collect(),
        prompt_truncated: prompt.chars().nth(PROMPT_PREVIEW_CHARS).is_some(),
        reason,
    }
}

/// Runs the pipeline inside the admission transaction. `owner_approved`
/// turns approval's ask into an allow: the owner said yes at the prompt.
pub(crate) fn admit_with(
    ctx: &mut Context,
    request: &JobRequest,
    owner_approved: bool,
) -> Result<(Admission, PipelineDecision), OpsError> {
    let engine = ctx.engine()?;
    let mut pipeline = policy::pipeline(ctx, &engine)?;
    let facts = facts::gather(ctx)?;
    let limits = limits_of(&ctx.settings);
    let record = request.record();
    let mut decision = None;
    // The pipeline runs inside the store's IMMEDIATE transaction, on the
    // usage snapshot taken under the same lock.
    let (_, admission) = ctx.store.admit(&record, today(), |snapshot| {
        let mut d = pipeline.decide(decision_input(request, snapshot, limits, facts));
        count(&d);
        if owner_approved {
            approve_at_prompt(&mut d);
        }
        let v = verdict(&d);
        decision = Some(d);
        v
    })?;
    let decision = decision.expect("admission runs the pipeline unless it fails");
    Ok((admission, decision))
}

/// The owner answered approval's ask with yes: approval's part becomes an
/// allow that says so. Denials by any role stand.
fn approve_at_prompt(decision: &mut PipelineDecision) {
    for role in &mut decision.roles {
        if role.outcome == Outcome::Ask {
            role.outcome = Outcome::Allow;
            role.reason = Some(format!(
                "approved by the owner at the prompt ({})",
                role.reason.as_deref().unwrap_or("approval asked")
            ));
        }
    }
    if decision.roles.iter().all(|r| r.outcome == Outcome::Allow) {
        decision.decision = Outcome::Allow;
    }
}

/// What the roles are told about a job, given usage as of the decision. A
/// local job has no counterpart: pricing quotes what it would cost on the
/// market, at neutral reputation and no load.
fn decision_input(
    request: &JobRequest,
    usage: &UsageSnapshot,
    limits: ConfiguredLimits,
    facts: Vec<Fact>,
) -> DecisionInput {
    DecisionInput {
        job: request.policy_job().into(),
        usage: usage_of(usage, limits),
        market: MarketContext {
            slots: 0,
            load: 0.0,
            reputation: 0.5,
            offered_price: None,
            asked_price: None,
        },
        facts,
        at: crate::policy::unix_now(),
    }
}

/// The node's limits as the policies are told them.
pub(crate) fn limits_of(settings: &Settings) -> ConfiguredLimits {
    let l = &settings.limits;
    ConfiguredLimits {
        daily_tasks: l.daily_tasks,
        daily_tokens: l.daily_tokens,
        max_tokens_per_task: l.max_tokens_per_task,
        requests_per_job: l.requests_per_job,
        concurrent_jobs: l.concurrent_jobs,
        timeout_secs: l.timeout_secs,
    }
}

pub(crate) fn usage_of(snapshot: &UsageSnapshot, limits: ConfiguredLimits) -> Usage {
    Usage {
        tasks_today: snapshot.tasks_today,
        tokens_today: snapshot.tokens_today,
        running_jobs: snapshot.running_jobs,
        limits,
    }
}

/// The pipeline's decision in the store's terms. An `ask` is not an admission:
/// only the CLI's interactive prompt can turn it into one.
/// Adds each role's answer, as the plugins (and the node's rules) gave it,
/// to the process's metrics.
fn count(decision: &PipelineDecision) {
    for role in &decision.roles {
        metrics::global().decision(
            role.role.as_str(),
            role.outcome.as_str(),
            role.error_class.map(FailureClass::as_str),
            Duration::from_micros(role.elapsed_us),
        );
    }
}

pub(crate) fn verdict(decision: &PipelineDecision) -> Verdict {
    Verdict {
        replay: Some(serde_json::json!({
            "wit": crate::wit::WIT_PACKAGE,
            "input": decision.input,
        })),
        outcome: decision.decision,
        grant: decision.grant().map(|g| Budget {
            tokens: g.tokens,
            requests: g.requests,
            timeout_secs: g.timeout_secs,
        }),
        decisions: decision
            .roles
            .iter()
            .map(|r| DecisionRecord {
                role: r.role.as_str().into(),
                plugin: r.plugin.name.clone(),
                digest: r.plugin.digest.clone(),
                origin: r.plugin.origin.as_str().into(),
                bundle: r.plugin.bundle.clone(),
                outcome: r.outcome,
                reason: r.reason.clone(),
                error_class: r.error_class.map(|c| c.to_string()),
                elapsed_us: r.elapsed_us,
            })
            .collect(),
    }
}

/// The reasons of every role that did not allow, for the error message.
pub(crate) fn reasons(decision: &PipelineDecision) -> String {
    decision
        .roles
        .iter()
        .filter(|r| r.outcome != Outcome::Allow)
        .map(|r| {
            format!(
                "{}: {}",
                r.role,
                r.reason.as_deref().unwrap_or("no reason given")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offering(price: Option<u64>) -> MarketContext {
        MarketContext {
            slots: 1,
            load: 0.0,
            reputation: 0.5,
            offered_price: price,
            asked_price: None,
        }
    }

    #[test]
    fn the_owner_then_pricing_then_the_offer_set_the_asking_price() {
        assert_eq!(
            asking_price(Some(12), Some(30), offering(Some(20))),
            Some(12)
        );
        assert_eq!(asking_price(None, Some(30), offering(Some(20))), Some(30));
        assert_eq!(
            asking_price(None, None, offering(Some(20))),
            Some(20),
            "no opinion: the offer's price"
        );
        assert_eq!(asking_price(None, None, offering(None)), None);
    }
}
