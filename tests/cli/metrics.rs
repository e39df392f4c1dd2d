//! Metrics end to end: a provider serving the market exposes what it
//! counts, Debian's Prometheus scrapes it on loopback, and the series are
//! read back through Prometheus's own HTTP API; a local job shows its
//! budget while it runs.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::docker_support::JobHome;
use crate::market::{
    funded_requester, market_execute, provider_home, serve, stop, wait_for_offers,
};
use crate::nats::{NatsServer, free_ports, http_get};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A plain HTTP/1.0 GET on loopback: the status and the body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get(addr.port(), path)
}

/// Percent-encodes a PromQL query for a URL.
fn encoded(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus scraping one target every second, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is absent: install it with `apt-get install -y prometheus` (.ci/run does)"
        );
        let [port] = free_ports::<1>();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: cmm\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        Prometheus { child, addr }
    }

    /// The instant vector `query` evaluates to, once it is not empty.
    fn query(&self, query: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let path = format!("/api/v1/query?query={}", encoded(query));
        loop {
            if let Some((200, body)) = get(self.addr, &path) {
                let doc: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(doc["status"], "success", "{doc:#}");
                let result = doc["data"]["result"].as_array().unwrap().clone();
                if !result.is_empty() {
                    return result;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus has no series for {query}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The one value `query` evaluates to.
    fn value(&self, query: &str) -> f64 {
        let result = self.query(query);
        assert_eq!(result.len(), 1, "{query}: {result:#?}");
        result[0]["value"][1].as_str().unwrap().parse().unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_reads_back_what_a_provider_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(&dir.path().join("nats"));
    let url = server.url();
    let requester = funded_requester(&url, 40, &[]);
    let provider = provider_home(&url, &requester.id, &[]);
    let [port] = free_ports::<1>();
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let serving = serve(
        &provider,
        &["--price", "12", "--metrics", &metrics.to_string()],
    );
    wait_for_offers(&requester, 1);
    let (code, done) = market_execute(&requester, &[]);
    assert_eq!(code, 0, "{done:#}");

    std::fs::create_dir_all(dir.path().join("prometheus")).unwrap();
    let prometheus = Prometheus::start(&dir.path().join("prometheus"), metrics);
    let reported = provider.mock.reported();
    let model = "gen_ai_request_model=\"claude-sonnet-4-5\",gen_ai_operation_name=\"chat\"";
    assert_eq!(
        prometheus.value(&format!(
            "gen_ai_client_token_usage_sum{{{model},gen_ai_token_type=\"output\"}}"
        )),
        reported.output_tokens as f64
    );
    assert_eq!(
        prometheus.value(&format!(
            "gen_ai_client_token_usage_sum{{{model},gen_ai_token_type=\"input\"}}"
        )),
        reported.input_tokens as f64
    );
    assert_eq!(
        prometheus.value(&format!(
            "gen_ai_client_operation_duration_seconds_count{{{model}}}"
        )),
        1.0
    );
    assert_eq!(
        prometheus.value(
            "cmm_gateway_requests_total{endpoint=\"messages\",model=\"claude-sonnet-4-5\",status=\"200\"}"
        ),
        1.0
    );
    assert_eq!(
        prometheus.value("cmm_jobs_finished_total{outcome=\"finished\"}"),
        1.0
    );
    assert_eq!(prometheus.value("cmm_jobs_running"), 0.0);
    assert_eq!(
        prometheus.value("cmm_market_tasks_total{state=\"claimed\"}"),
        1.0
    );
    assert_eq!(
        prometheus.value("cmm_market_tasks_total{state=\"finished\"}"),
        1.0
    );
    for role in ["approval", "limits", "compliance", "pricing"] {
        let decided = prometheus.value(&format!(
            "sum(cmm_policy_decisions_total{{role=\"{role}\"}})"
        ));
        assert!(decided >= 1.0, "{role} decided {decided} times");
        let timed = prometheus.value(&format!(
            "cmm_policy_decision_duration_seconds_count{{role=\"{role}\"}}"
        ));
        assert_eq!(timed, decided, "{role}: every decision is timed");
    }
    assert_eq!(stop(serving).code, 0);
}

#[test]
fn a_running_job_shows_the_budget_it_has_left() {
    let env = JobHome::new();
    env.mock.set_delta_delay(Duration::from_millis(400));
    let [port] = free_ports::<1>();
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = env.spawn(&[
        "--prompt",
        "Count slowly to twenty",
        "--budget-tokens",
        "5000",
        "--metrics",
        &metrics.to_string(),
    ]);
    let (_, job) = env.wait_for_container();
    let series = format!("cmm_job_budget_remaining_tokens{{job_id=\"{job}\"}} ");
    let deadline = Instant::now() + Duration::from_secs(30);
    let left = loop {
        let (status, text) = get(metrics, "/metrics").expect("the job serves its metrics");
        assert_eq!(status, 200, "{text}");
        let left: Option<u64> = text
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map(|v| v.parse().unwrap());
        // Input is metered when the reply starts: the budget has moved.
        if let Some(left) = left.filter(|&l| l < 5000) {
            assert!(text.lines().any(|l| l == "cmm_jobs_running 1"), "{text}");
            break left;
        }
        assert!(Instant::now() < deadline, "no budget shown:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(left > 0, "a slow reply does not use up 5000 tokens");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = env.newest_job();
    let used = done["input_tokens"].as_u64().unwrap() + done["output_tokens"].as_u64().unwrap();
    assert!(5000 - left <= used, "{done:#}");
}
