//! Support for the tests that run real jobs: the job image, built once per
//! test run through `docker:build`; a home wired to a faithful mock of the
//! Messages API with a test key; and `docker` CLI helpers for inspecting
//! what the host did. Every container and image a test makes is its own.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mock_anthropic::MockServer;
use serde_json::Value;

use crate::support::{Home, Run};

/// The key the tests give the host; it must reach the mock and nothing else.
pub const KEY: &str = "sk-ant-api03-test-key-that-must-never-enter-a-container";

/// The job image tag the tests build and run.
pub const IMAGE: &str = "claude-max-market-job:cli-tests";

/// Builds the job image once per test run.
pub fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        Home::new().ok(&["docker:build", "--tag", IMAGE]);
    });
    IMAGE
}

/// An opted-in home that runs jobs without asking, against a mock upstream.
pub struct JobHome {
    pub home: Home,
    pub mock: MockServer,
}

impl JobHome {
    pub fn new() -> JobHome {
        let home = Home::opted_in();
        let mock = MockServer::start(KEY);
        home.set(&[
            &format!("docker.image={}", image()),
            &format!("api.baseUrl={}", mock.url()),
            "compliance.allowAutoApprove=true",
            "api.maxRetries=2",
        ]);
        JobHome { home, mock }
    }

    /// `execute --approve-all` with the key in the environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.home.command();
        cmd.env("ANTHROPIC_API_KEY", KEY)
            .args(["execute", "--approve-all"])
            .args(args);
        cmd
    }

    pub fn execute(&self, args: &[&str]) -> Run {
        self.command(args).output().expect("running execute").into()
    }

    /// Starts `execute` in the background.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting execute")
    }

    /// The newest job, as `logs --json` reports it.
    pub fn newest_job(&self) -> Value {
        let (code, doc) = self.home.json(&["logs"]);
        assert_eq!(code, 0, "{doc:#}");
        doc["job"].clone()
    }

    /// Waits until a job of this home has a running container, and returns
    /// the container's id and the job id.
    pub fn wait_for_container(&self) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ids = docker(&[
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                "label=org.claude-max-market.home",
            ]);
            for id in ids.lines().filter(|l| !l.is_empty()) {
                let inspect = inspect(id);
                let mounts = inspect["Mounts"].to_string();
                if mounts.contains(&self.home.path().display().to_string()) {
                    let job = inspect["Config"]["Labels"]["org.claude-max-market.job-id"]
                        .as_str()
                        .expect("a job container names its job")
                        .to_owned();
                    return (id.to_owned(), job);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no job container started within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs the docker CLI and returns stdout; panics on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("running docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker inspect` of one container, or Null when it does not exist.
pub fn inspect(id: &str) -> Value {
    let out = Command::new("docker")
        .args(["inspect", id])
        .output()
        .expect("running docker inspect");
    if !out.status.success() {
        return Value::Null;
    }
    let all: Value = serde_json::from_slice(&out.stdout).expect("docker inspect prints JSON");
    all[0].clone()
}

/// Whether a container exists, in any state.
pub fn exists(id: &str) -> bool {
    !inspect(id).is_null()
}

/// Every line `execute --json` printed, as JSON events.
pub fn job_events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// The last line of `execute --json`: the job's report.
pub fn job_end(stdout: &str) -> Value {
    let doc = job_events(stdout).pop().expect("execute printed nothing");
    assert_eq!(doc["event"], "end", "{doc:#}");
    doc
}
