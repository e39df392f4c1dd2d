//! `policy test` and `policy bench`: what a plugin author runs before
//! bundling. A subject is a component (its role found from the world it
//! implements) or a bundle (each of its roles, with the bundle's own
//! limits and configuration). Both run on the host's real sandbox, so a
//! case that passes here decides the same way on a node.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::config::Settings;
use crate::policy::{
    Budget, CredentialKind, DecisionInput, Fact, FactStatus, Image, Isolation, Job, JobSource,
    MarketContext, Outcome, Pipeline, PluginMeta, PluginOrigin, PluginPre, PolicyEngine, Role,
    Slot, Usage, Workspace,
};

use super::bundle_fetch::read_bundle_file;
use super::job::admit::limits_of;
use super::policy_bundle::load_plugin;
use super::{Context, OpsError};

/// A cases file: `[[case]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    case: Vec<Case>,
}

/// One table-driven case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// Which role to ask; needed only when the subject fills several.
    role: Option<Role>,
    #[serde(default)]
    job: JobSpec,
    #[serde(default)]
    usage: UsageSpec,
    #[serde(default)]
    market: MarketSpec,
    /// Flattened settings (`limits.dailyTasks`) and the plugin's own values
    /// (`plugin.models`), as strings.
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    facts: Vec<FactSpec>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct JobSpec {
    model: String,
    /// The token budget the job asks for.
    tokens: u64,
    requests: u32,
    timeout_secs: u32,
    prompt_bytes: u64,
    /// Defaults to the node's `docker.image`.
    image: Option<String>,
    image_digest: String,
    command: Vec<String>,
    agent: String,
    workspace_bytes: Option<u64>,
    workspace_files: Option<u32>,
    egress: bool,
    source: Source,
    credential: Credential,
    pre_approved: bool,
    requester: String,
    labels: BTreeMap<String, String>,
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            model: "claude-sonnet-4-5".into(),
            tokens: 1024,
            requests: 1,
            timeout_secs: 300,
            prompt_bytes: 100,
            image: None,
            image_digest: format!("sha256:{}", "0".repeat(64)),
            command: Vec::new(),
            agent: String::new(),
            workspace_bytes: None,
            workspace_files: None,
            egress: false,
            source: Source::Local,
            credential: Credential::ApiKey,
            pre_approved: false,
            requester: "local".into(),
            labels: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Source {
    #[default]
    Local,
    Market,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Credential {
    #[default]
    ApiKey,
    Subscription,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct UsageSpec {
    tasks_today: u32,
    tokens_today: u64,
    running_jobs: u32,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MarketSpec {
    slots: u32,
    load: f64,
    reputation: f64,
    offered_price: Option<u64>,
    asked_price: Option<u64>,
}

impl Default for MarketSpec {
    fn default() -> Self {
        MarketSpec {
            slots: 1,
            load: 0.0,
            reputation: 0.5,
            offered_price: None,
            asked_price: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FactSpec {
    name: String,
    #[serde(default)]
    value: String,
    status: Status,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Failed,
    Unknown,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: Outcome,
    reason_contains: Option<String>,
    /// The failure class when the plugin fails closed (e.g. "invalid-config").
    error_class: Option<String>,
    /// What limits grants.
    tokens: Option<u64>,
    requests: Option<u32>,
    timeout_secs: Option<u32>,
    price: Option<u64>,
    /// Pricing answers "no opinion" (no quote) rather than a price.
    #[serde(default)]
    no_opinion: bool,
    bid: Option<u64>,
    bid_accepted: Option<bool>,
}

/// One case's result.
#[derive(Debug, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub role: Role,
    pub passed: bool,
    /// What differed from the expectation, one item per difference.
    pub failures: Vec<String>,
    pub elapsed_us: u64,
}

/// Every case's result.
#[derive(Debug, Serialize)]
pub struct TestReport {
    pub subject: String,
    pub cases: Vec<CaseResult>,
    pub passed: usize,
    pub failed: usize,
}

/// Latency of one role, per call.
#[derive(Debug, Serialize)]
pub struct RoleBench {
    pub role: Role,
    pub iterations: usize,
    pub fresh_p50_us: f64,
    pub fresh_p99_us: f64,
    pub warm_p50_us: f64,
    pub warm_p99_us: f64,
}

/// The plugins under test, one per role they fill.
pub(super) struct Subject {
    pub plugins: Vec<PluginPre>,
}

/// Runs every case in `cases` against `subject`.
pub fn test(ctx: &Context, subject: &Path, cases: &Path) -> Result<TestReport, OpsError> {
    let text = std::fs::read_to_string(cases).map_err(|source| OpsError::Read {
        path: cases.to_path_buf(),
        source,
    })?;
    let file: CaseFile = toml::from_str(&text).map_err(|e| OpsError::InvalidInput {
        what: format!("{}: {e}", cases.display()),
    })?;
    let engine = ctx.engine_with(Isolation::Fresh)?;
    let loaded = load_subject(ctx, &engine, subject)?;
    let mut results = Vec::new();
    for case in &file.case {
        results.push(run_case(&engine, &loaded, case)?);
    }
    let passed = results.iter().filter(|r| r.passed).count();
    Ok(TestReport {
        subject: subject.display().to_string(),
        failed: results.len() - passed,
        passed,
        cases: results,
    })
}

/// Times `iterations` decisions per role, on a fresh instance per call and
/// on one warm instance, with the node's default settings.
pub fn bench(ctx: &Context, subject: &Path, iterations: usize) -> Result<Vec<RoleBench>, OpsError> {
    let fresh = ctx.engine_with(Isolation::Fresh)?;
    let warm = ctx.engine_with(Isolation::Reuse)?;
    let loaded = load_subject(ctx, &fresh, subject)?;
    let warm_loaded = load_subject(ctx, &warm, subject)?;
    let input = input_for(
        &Settings::default(),
        &JobSpec::default(),
        &UsageSpec::default(),
        &MarketSpec::default(),
        &[],
    );
    let settings = Settings::default().flatten();
    let mut out = Vec::new();
    for (plugin, warm_plugin) in loaded.plugins.iter().zip(&warm_loaded.plugins) {
        let role = plugin.role();
        let mut fresh_pipeline = pipeline_with(&fresh, plugin.clone(), settings.clone());
        let mut warm_pipeline = pipeline_with(&warm, warm_plugin.clone(), settings.clone());
        let time = |pipeline: &mut Pipeline| -> Result<Vec<f64>, OpsError> {
            // One untimed call: the warm instance is made on first use.
            check_decision(pipeline.decide_role(role, &input))?;
            let mut samples = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                let started = Instant::now();
                let decision = pipeline.decide_role(role, &input);
                samples.push(started.elapsed().as_secs_f64() * 1e6);
                check_decision(decision)?;
            }
            samples.sort_by(f64::total_cmp);
            Ok(samples)
        };
        let fresh_samples = time(&mut fresh_pipeline)?;
        let warm_samples = time(&mut warm_pipeline)?;
        out.push(RoleBench {
            role,
            iterations,
            fresh_p50_us: percentile(&fresh_samples, 0.50),
            fresh_p99_us: percentile(&fresh_samples, 0.99),
            warm_p50_us: percentile(&warm_samples, 0.50),
            warm_p99_us: percentile(&warm_samples, 0.99),
        });
    }
    Ok(out)
}

fn check_decision(decision: crate::policy::RoleDecision) -> Result<(), OpsError> {
    match decision.error_class {
        None => Ok(()),
        Some(class) => Err(OpsError::InvalidInput {
            what: format!(
                "the {} plugin failed ({class}) while being timed: {}",
                decision.role,
                decision.reason.unwrap_or_default()
            ),
        }),
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// Loads a component (trying each role's world) or every role of a bundle.
/// Bundle files are recognised by their content, not their name.
pub(super) fn load_subject(
    ctx: &Context,
    engine: &Arc<PolicyEngine>,
    path: &Path,
) -> Result<Subject, OpsError> {
    let bytes = read_bundle_file(path)?;
    let cache = ctx.compile_cache();
    if bytes.starts_with(b"\0asm") {
        let wasm = bytes;
        let name = path
            .file_stem()
            .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
        let mut errors = Vec::new();
        for role in Role::ALL {
            match PluginPre::load(
                engine,
                cache.as_ref(),
                role,
                &name,
                PluginOrigin::File,
                &wasm,
            ) {
                Ok(plugin) => {
                    return Ok(Subject {
                        plugins: vec![plugin],
                    });
                }
                Err(e) => errors.push(e),
            }
        }
        // Every role failed; the first error names the approval world, so
        // show why it would not compile if that was it, else a summary.
        let detail = errors
            .iter()
            .find(|e| {
                matches!(
                    e,
                    crate::policy::LoadError::Compile { .. }
                        | crate::policy::LoadError::StartingMemory { .. }
                )
            })
            .map_or_else(
                || format!("{} implements none of the role worlds (approval-policy, limits-policy, pricing-policy, compliance-policy)", path.display()),
                ToString::to_string,
            );
        return Err(OpsError::InvalidInput { what: detail });
    }
    let bundle = Bundle::read(&bytes)?;
    bundle.check_digests()?;
    let plugins = bundle
        .manifest
        .roles
        .iter()
        .map(|entry| load_plugin(engine, cache.as_ref(), &bundle, entry))
        .collect::<Result<_, _>>()?;
    Ok(Subject { plugins })
}

/// A pipeline whose only usable slot is `plugin`: the other roles are
/// never asked.
fn pipeline_with(
    engine: &Arc<PolicyEngine>,
    plugin: PluginPre,
    settings: Vec<(String, String)>,
) -> Pipeline {
    let role = plugin.role();
    let slots = Role::ALL
        .into_iter()
        .map(|r| {
            if r == role {
                Slot::ready(plugin.clone())
            } else {
                Slot::missing(
                    r,
                    PluginMeta {
                        name: "unused".into(),
                        digest: String::new(),
                        origin: PluginOrigin::Default,
                        bundle: None,
                    },
                    "not under test".into(),
                )
            }
        })
        .collect();
    Pipeline::new(engine.clone(), slots, settings)
}

fn run_case(
    engine: &Arc<PolicyEngine>,
    subject: &Subject,
    case: &Case,
) -> Result<CaseResult, OpsError> {
    let bad_case = |what: String| OpsError::InvalidInput {
        what: format!("case '{}': {what}", case.name),
    };
    let plugin = match case.role {
        Some(role) => subject
            .plugins
            .iter()
            .find(|p| p.role() == role)
            .ok_or_else(|| bad_case(format!("the subject has no {role} plugin")))?,
        None if subject.plugins.len() == 1 => &subject.plugins[0],
        None => {
            return Err(bad_case(
                "the subject fills several roles; say which with `role = \"...\"`".into(),
            ));
        }
    };
    let role = plugin.role();
    let mut settings = Settings::default();
    let mut own = Vec::new();
    for (key, value) in &case.config {
        if key.starts_with(crate::policy::OWN_CONFIG_PREFIX) {
            own.push((key.clone(), value.clone()));
        } else {
            settings
                .set(key, value)
                .map_err(|e| bad_case(e.to_string()))?;
        }
    }
    let mut pairs = settings.flatten();
    pairs.extend(own);
    let input = input_for(&settings, &case.job, &case.usage, &case.market, &case.facts);
    let started = Instant::now();
    let mut pipeline = pipeline_with(engine, plugin.clone(), pairs);
    let decision = pipeline.decide_role(role, &input);
    let mut failures = Vec::new();
    let e = &case.expect;
    if decision.outcome != e.decision {
        failures.push(format!(
            "expected {}, got {}{}",
            e.decision,
            decision.outcome,
            decision
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }
    if let Some(needle) = &e.reason_contains {
        let text = decision
            .reason
            .clone()
            .or_else(|| decision.quote.as_ref().map(|q| q.explanation.clone()))
            .unwrap_or_default();
        if !text.contains(needle.as_str()) {
            failures.push(format!(
                "expected the reason to contain {needle:?}, got {text:?}"
            ));
        }
    }
    if let Some(class) = &e.error_class {
        let got = decision.error_class.map(|c| c.to_string());
        if got.as_deref() != Some(class.as_str()) {
            failures.push(format!(
                "expected error class {class}, got {}",
                got.unwrap_or_else(|| "none".into())
            ));
        }
    }
    let grant = decision.grant;
    if let Some(want) = e.tokens
        && grant.map(|g| g.tokens) != Some(want)
    {
        failures.push(format!(
            "expected a grant of {want} tokens, got {}",
            describe(grant.map(|g| g.tokens))
        ));
    }
    if let Some(want) = e.requests
        && grant.map(|g| g.requests) != Some(want)
    {
        failures.push(format!(
            "expected a grant of {want} requests, got {}",
            describe(grant.map(|g| g.requests))
        ));
    }
    if let Some(want) = e.timeout_secs
        && grant.map(|g| g.timeout_secs) != Some(want)
    {
        failures.push(format!(
            "expected a {want} s timeout, got {}",
            describe(grant.map(|g| g.timeout_secs))
        ));
    }
    if let Some(want) = e.price
        && decision.quote.as_ref().map(|q| q.price) != Some(want)
    {
        failures.push(format!(
            "expected price {want}, got {}",
            describe(decision.quote.as_ref().map(|q| q.price))
        ));
    }
    if let (true, Some(quote)) = (e.no_opinion, &decision.quote) {
        failures.push(format!(
            "expected no opinion on the price, got a quote of {}",
            quote.price
        ));
    }
    match (e.bid, e.bid_accepted) {
        (Some(bid), Some(want)) => {
            if role != Role::Pricing {
                return Err(bad_case("bid applies to pricing plugins only".into()));
            }
            match pipeline.consider_bid(&input, bid) {
                Ok(verdict) if verdict.is_none() != want => failures.push(format!(
                    "expected a bid of {bid} to be {}, it was {}",
                    if want { "accepted" } else { "rejected" },
                    verdict.map_or_else(|| "accepted".to_string(), |r| format!("rejected ({r})"))
                )),
                Ok(_) => {}
                Err(f) => failures.push(format!("consider-bid failed: {}", f.message)),
            }
        }
        (None, None) => {}
        _ => return Err(bad_case("set both bid and bid_accepted, or neither".into())),
    }
    Ok(CaseResult {
        name: case.name.clone(),
        role,
        passed: failures.is_empty(),
        failures,
        elapsed_us: started.elapsed().as_micros() as u64,
    })
}

fn describe<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "none".into(), |v| v.to_string())
}

fn input_for(
    settings: &Settings,
    job: &JobSpec,
    usage: &UsageSpec,
    market: &MarketSpec,
    facts: &[FactSpec],
) -> DecisionInput {
    DecisionInput {
        job: Arc::new(Job {
            id: "policy-test".into(),
            requester: job.requester.clone(),
            model: job.model.clone(),
            budget: Budget {
                tokens: job.tokens,
                requests: job.requests,
                timeout_secs: job.timeout_secs,
            },
            prompt_bytes: job.prompt_bytes,
            prompt_sha256: "0".repeat(64),
            image: Image {
                reference: job
                    .image
                    .clone()
                    .unwrap_or_else(|| settings.docker.image.clone()),
                digest: job.image_digest.clone(),
            },
            command: job.command.clone(),
            agent: job.agent.clone(),
            workspace: match (job.workspace_bytes, job.workspace_files) {
                (None, None) => None,
                (bytes, files) => Some(Workspace {
                    bytes: bytes.unwrap_or(0),
                    files: files.unwrap_or(0),
                }),
            },
            egress: job.egress,
            source: match job.source {
                Source::Local => JobSource::Local,
                Source::Market => JobSource::Market,
            },
            credential: match job.credential {
                Credential::ApiKey => CredentialKind::ApiKey,
                Credential::Subscription => CredentialKind::Subscription,
            },
            pre_approved: job.pre_approved,
            labels: job.labels.clone().into_iter().collect(),
        }),
        usage: Usage {
            tasks_today: usage.tasks_today,
            tokens_today: usage.tokens_today,
            running_jobs: usage.running_jobs,
            limits: limits_of(settings),
        },
        market: MarketContext {
            slots: market.slots,
            load: market.load,
            reputation: market.reputation,
            offered_price: market.offered_price,
            asked_price: market.asked_price,
        },
        facts: facts
            .iter()
            .map(|f| Fact {
                name: f.name.clone(),
                value: f.value.clone(),
                status: match f.status {
                    Status::Ok => FactStatus::Ok,
                    Status::Failed => FactStatus::Failed,
                    Status::Unknown => FactStatus::Unknown,
                },
            })
            .collect(),
        at: crate::policy::unix_now(),
    }
}
