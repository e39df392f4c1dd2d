//! What a long-running command counts, for Prometheus to scrape: decisions
//! by role and verdict, plugin failures by cause, jobs, gateway requests and
//! tokens, each running job's budget, and market tasks by state.
//!
//! The series are process-wide (one [`global`] registry) because a job's
//! decision, its gateway and the market loop that took it all run in the
//! same process, on different threads, and all add to the same counts.
//! Recording is a few atomic operations, so it happens whether or not a
//! command serves the registry; [`Exporter`] serves it over HTTP.
//!
//! Token usage and request duration follow the OpenTelemetry GenAI
//! semantic conventions (`gen_ai.client.token.usage`,
//! `gen_ai.client.operation.duration` and their attributes, with dots made
//! underscores as Prometheus names need); the rest are this tool's own,
//! under `cmm_`.

mod exporter;

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub use exporter::{Exporter, ExporterError};

/// The `gen_ai.provider.name` of every request the gateway forwards.
const PROVIDER: &str = "anthropic";

/// The registry every recording goes to.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    role: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    role: String,
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    model: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    gen_ai_operation_name: String,
    gen_ai_provider_name: String,
    gen_ai_request_model: String,
    gen_ai_token_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    gen_ai_operation_name: String,
    gen_ai_provider_name: String,
    gen_ai_request_model: String,
    /// Empty when the request succeeded: Prometheus stores an empty label
    /// as no label, which is what the convention asks for.
    error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// From 5 µs (a warm Rust plugin) to about 1.3 s (past any timeout a node
/// would set).
fn decision_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_005, 4.0, 10))
}

/// The boundaries the GenAI conventions advise for token counts.
fn token_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 14))
}

/// The boundaries the GenAI conventions advise for operation durations.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// Every series this process records.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    decision_seconds: Histograms<RoleLabels>,
    plugin_failures: Family<FailureLabels, Counter>,
    jobs_running: Gauge,
    jobs_finished: Family<OutcomeLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    refusals: Family<StatusLabels, Counter>,
    token_usage: Histograms<TokenLabels>,
    operation_duration: Histograms<OperationLabels>,
    budget_left: Family<JobLabels, Gauge>,
    market_tasks: Family<StateLabels, Counter>,
    market_running: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            decisions: Family::default(),
            decision_seconds: Family::new_with_constructor(decision_buckets),
            plugin_failures: Family::default(),
            jobs_running: Gauge::default(),
            jobs_finished: Family::default(),
            requests: Family::default(),
            refusals: Family::default(),
            token_usage: Family::new_with_constructor(token_buckets),
            operation_duration: Family::new_with_constructor(duration_buckets),
            budget_left: Family::default(),
            market_tasks: Family::default(),
            market_running: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "cmm_policy_decisions",
            "Role decisions by role and verdict (allow, deny, ask)",
            m.decisions.clone(),
        );
        r.register_with_unit(
            "cmm_policy_decision_duration",
            "Time one role took to decide, including a fresh instance",
            Unit::Seconds,
            m.decision_seconds.clone(),
        );
        r.register(
            "cmm_plugin_failures",
            "Plugin calls that gave no usable answer, by role and cause \
             (trap, out-of-fuel, timeout, memory, invalid-output, invalid-config, missing)",
            m.plugin_failures.clone(),
        );
        r.register(
            "cmm_jobs_running",
            "Jobs whose container is running in this process",
            m.jobs_running.clone(),
        );
        r.register(
            "cmm_jobs_finished",
            "Jobs that ended, by outcome",
            m.jobs_finished.clone(),
        );
        r.register(
            "cmm_gateway_requests",
            "Requests the gateway forwarded upstream, by endpoint, model and upstream status",
            m.requests.clone(),
        );
        r.register(
            "cmm_gateway_refusals",
            "Requests the gateway answered itself, by the status it answered",
            m.refusals.clone(),
        );
        r.register(
            "gen_ai_client_token_usage",
            "Tokens the upstream reported per request, by model and type; input includes \
             prompt-cache reads and writes (OpenTelemetry gen_ai.client.token.usage)",
            m.token_usage.clone(),
        );
        r.register_with_unit(
            "gen_ai_client_operation_duration",
            "Time from forwarding a request to the end of its reply \
             (OpenTelemetry gen_ai.client.operation.duration)",
            Unit::Seconds,
            m.operation_duration.clone(),
        );
        r.register(
            "cmm_job_budget_remaining_tokens",
            "Tokens a running job may still use of its grant",
            m.budget_left.clone(),
        );
        r.register(
            "cmm_market_tasks",
            "Market tasks this provider handled, by what became of them",
            m.market_tasks.clone(),
        );
        r.register(
            "cmm_market_tasks_running",
            "Market tasks this provider is running now",
            m.market_running.clone(),
        );
        m
    }

    /// One role's answer, `verdict` being `allow`, `deny` or `ask`; `cause`
    /// is the failure class when the plugin gave no usable answer.
    pub fn decision(&self, role: &str, verdict: &str, cause: Option<&str>, took: Duration) {
        self.decisions
            .get_or_create(&DecisionLabels {
                role: role.to_owned(),
                verdict: verdict.to_owned(),
            })
            .inc();
        self.decision_seconds
            .get_or_create(&RoleLabels {
                role: role.to_owned(),
            })
            .observe(took.as_secs_f64());
        if let Some(cause) = cause {
            self.plugin_failures
                .get_or_create(&FailureLabels {
                    role: role.to_owned(),
                    cause: cause.to_owned(),
                })
                .inc();
        }
    }

    /// A job's container started, granted `budget` tokens: it counts as
    /// running, with its budget shown, until the guard is dropped.
    pub fn job_started(&'static self, job_id: &str, budget: u64) -> RunningJob {
        self.jobs_running.inc();
        let labels = JobLabels {
            job_id: job_id.to_owned(),
        };
        self.budget_left
            .get_or_create(&labels)
            .set(i64::try_from(budget).unwrap_or(i64::MAX));
        RunningJob {
            metrics: self,
            labels,
        }
    }

    /// A running job has used `used` of its `budget` tokens so far. Usage
    /// reported after the job stopped running (a reply cut at shutdown)
    /// does not bring its series back.
    pub fn job_used(&self, job_id: &str, budget: u64, used: u64) {
        let labels = JobLabels {
            job_id: job_id.to_owned(),
        };
        if let Some(left) = self.budget_left.get(&labels) {
            left.set(i64::try_from(budget.saturating_sub(used)).unwrap_or(i64::MAX));
        }
    }

    /// A job ended as `outcome` (its stored state), whether or not its
    /// container ever ran.
    pub fn job_ended(&self, outcome: &str) {
        self.jobs_finished
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A request the gateway forwarded, once its reply has ended. Only
    /// `messages` requests are GenAI operations (`chat`); a token count is
    /// counted as a request and nothing else.
    pub fn request(&self, r: &GatewayRequest<'_>) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: r.endpoint.to_owned(),
                model: r.model.to_owned(),
                status: r.status.to_string(),
            })
            .inc();
        if r.endpoint != "messages" {
            return;
        }
        let error_type = match r.status {
            200..=299 => String::new(),
            502 => "connection_error".to_owned(),
            status => status.to_string(),
        };
        self.operation_duration
            .get_or_create(&OperationLabels {
                gen_ai_operation_name: "chat".to_owned(),
                gen_ai_provider_name: PROVIDER.to_owned(),
                gen_ai_request_model: r.model.to_owned(),
                error_type,
            })
            .observe(r.took.as_secs_f64());
        for (kind, tokens) in [("input", r.input_tokens), ("output", r.output_tokens)] {
            let labels = TokenLabels {
                gen_ai_operation_name: "chat".to_owned(),
                gen_ai_provider_name: PROVIDER.to_owned(),
                gen_ai_request_model: r.model.to_owned(),
                gen_ai_token_type: kind.to_owned(),
            };
            // Counts are whole and far below 2^53, so the float is exact.
            #[allow(clippy::cast_precision_loss)]
            self.token_usage
                .get_or_create(&labels)
                .observe(tokens as f64);
        }
    }

    /// A request the gateway refused itself with `status`.
    pub fn refusal(&self, status: u16) {
        self.refusals
            .get_or_create(&StatusLabels {
                status: status.to_string(),
            })
            .inc();
    }

    /// A market task became `state` (claimed, lost, skipped, finished, …).
    pub fn market_task(&self, state: &str) {
        self.market_tasks
            .get_or_create(&StateLabels {
                state: state.to_owned(),
            })
            .inc();
    }

    /// How many market tasks this provider runs now.
    pub fn market_running(&self, running: u32) {
        self.market_running.set(i64::from(running));
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// A job counted as running; dropping it stops counting it and removes its
/// budget series.
pub struct RunningJob {
    metrics: &'static Metrics,
    labels: JobLabels,
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.metrics.jobs_running.dec();
        self.metrics.budget_left.remove(&self.labels);
    }
}

/// One forwarded request, as [`Metrics::request`] counts it.
pub struct GatewayRequest<'a> {
    pub endpoint: &'a str,
    pub model: &'a str,
    pub status: u16,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub took: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start} in\n{text}"))
    }

    #[test]
    fn series_carry_the_genai_names_and_attributes() {
        let m = Metrics::new();
        m.request(&GatewayRequest {
            endpoint: "messages",
            model: "claude-sonnet-4-5",
            status: 200,
            input_tokens: 1200,
            output_tokens: 40,
            took: Duration::from_millis(150),
        });
        m.request(&GatewayRequest {
            endpoint: "count_tokens",
            model: "claude-sonnet-4-5",
            status: 200,
            input_tokens: 0,
            output_tokens: 0,
            took: Duration::from_millis(5),
        });
        let text = m.encode();
        let usage = "gen_ai_client_token_usage_sum{gen_ai_operation_name=\"chat\",\
                     gen_ai_provider_name=\"anthropic\",gen_ai_request_model=\"claude-sonnet-4-5\",\
                     gen_ai_token_type=\"input\"}";
        assert!(line(&text, usage).ends_with(" 1200.0"), "{text}");
        let count = line(
            &text,
            "gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name=\"chat\"",
        );
        assert!(
            count.ends_with(" 1"),
            "only messages are operations: {count}"
        );
        assert!(
            line(
                &text,
                "cmm_gateway_requests_total{endpoint=\"count_tokens\""
            )
            .ends_with(" 1")
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_jobs_budget_is_shown_while_it_runs_and_gone_after() {
        let m: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let running = m.job_started("job-1", 5000);
        m.job_used("job-1", 5000, 1240);
        let text = m.encode();
        assert!(
            line(&text, "cmm_job_budget_remaining_tokens{job_id=\"job-1\"}").ends_with(" 3760")
        );
        assert!(line(&text, "cmm_jobs_running ").ends_with(" 1"));
        drop(running);
        m.job_used("job-1", 5000, 1300);
        m.job_ended("finished");
        let text = m.encode();
        assert!(!text.contains("job_id=\"job-1\""), "{text}");
        assert!(line(&text, "cmm_jobs_running ").ends_with(" 0"));
        assert!(line(&text, "cmm_jobs_finished_total{outcome=\"finished\"}").ends_with(" 1"));
    }

    #[test]
    fn a_failed_call_counts_as_a_decision_and_a_failure() {
        let m = Metrics::new();
        m.decision(
            "limits",
            "deny",
            Some("out-of-fuel"),
            Duration::from_micros(40),
        );
        m.decision("limits", "allow", None, Duration::from_micros(20));
        let text = m.encode();
        assert!(
            line(
                &text,
                "cmm_plugin_failures_total{role=\"limits\",cause=\"out-of-fuel\"}"
            )
            .ends_with(" 1")
        );
        assert!(
            line(
                &text,
                "cmm_policy_decision_duration_seconds_count{role=\"limits\"}"
            )
            .ends_with(" 2")
        );
    }
}
