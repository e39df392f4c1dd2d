//! Jobs run for real: the job image on the real Docker Engine, the gateway
//! in front of a faithful mock of the Messages API, and the store settling
//! what the gateway metered.

use std::time::Duration;

use mock_anthropic::Scenario;
use serde_json::Value;

use crate::docker_support::{JobHome, KEY, docker, exists, inspect};
use crate::support::Home;

const PROMPT: &str = "Say hello to the gateway in a few words";

#[test]
fn a_job_runs_hardened_without_the_key_and_its_tokens_are_metered() {
    let env = JobHome::new();
    env.mock.set_delta_delay(Duration::from_millis(150));
    env.home.set(&["docker.memory=256m", "docker.pidsLimit=32"]);
    let child = env.spawn(&["--prompt", PROMPT]);
    let (container, job) = env.wait_for_container();

    let c = inspect(&container);
    let host = &c["HostConfig"];
    assert_eq!(host["ReadonlyRootfs"], true);
    let tmpfs = host["Tmpfs"]["/tmp"].as_str().expect("a tmpfs on /tmp");
    for option in ["rw", "noexec", "nosuid", "nodev", "size="] {
        assert!(
            tmpfs.contains(option),
            "tmpfs options {tmpfs} lack {option}"
        );
    }
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert!(host["CapAdd"].is_null() || host["CapAdd"] == serde_json::json!([]));
    assert!(
        host["SecurityOpt"]
            .to_string()
            .contains("no-new-privileges")
    );
    assert_eq!(host["NetworkMode"], "none");
    assert_eq!(host["PidsLimit"], 32);
    assert_eq!(host["Memory"], 256 << 20);
    assert_eq!(host["MemorySwap"], host["Memory"]);
    assert_eq!(host["CpuShares"], 512);
    assert_eq!(host["Init"], true);
    assert_eq!(host["Privileged"], false);
    assert_eq!(host["IpcMode"], "none", "no /dev/shm beside /tmp");
    let user = c["Config"]["User"].as_str().expect("a user is set");
    let (uid, gid) = user.split_once(':').expect("user is uid:gid");
    assert!(uid.parse::<u32>().unwrap() > 0 && gid.parse::<u32>().is_ok());
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["org.claude-max-market.job-id"], job.as_str());
    for role in ["approval", "limits", "compliance", "pricing"] {
        let digest = labels[format!("org.claude-max-market.policy.{role}")]
            .as_str()
            .unwrap_or_default();
        assert_eq!(digest.len(), 64, "the {role} policy digest is labelled");
    }
    let mounts = c["Mounts"].as_array().expect("mounts");
    assert_eq!(
        mounts.len(),
        1,
        "the gateway folder is the only mount: {mounts:?}"
    );
    assert_eq!(mounts[0]["Destination"], "/run/cmm");
    assert_eq!(mounts[0]["RW"], false);
    // The key is nowhere in the container: not its config, not its mount,
    // not its filesystem.
    assert!(!c.to_string().contains(KEY), "the key is in docker inspect");
    let mounted = std::fs::read_dir(mounts[0]["Source"].as_str().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(mounted, ["gateway.sock"]);
    let exported = std::process::Command::new("docker")
        .args(["export", &container])
        .output()
        .expect("docker export");
    assert!(exported.status.success());
    assert!(
        !contains(&exported.stdout, KEY.as_bytes()),
        "the key is in the container's files"
    );

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "execute failed: {stdout}\n{stderr}");
    assert!(stdout.contains("Mock reply to: Say hello"), "{stdout}");
    assert!(stderr.contains(&format!("job {job} finished")), "{stderr}");
    assert!(
        !exists(&container),
        "the container is removed after the job"
    );

    // The key reached the upstream, and what it reported is what was stored.
    let requests = env.mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("x-api-key"), Some(KEY));
    assert_eq!(requests[0].header("anthropic-version"), Some("2023-06-01"));
    let reported = env.mock.reported();
    let stored = env.newest_job();
    assert_eq!(stored["id"], job.as_str());
    assert_eq!(stored["state"], "finished");
    assert_eq!(stored["input_tokens"], reported.input_tokens);
    assert_eq!(stored["output_tokens"], reported.output_tokens);
    assert_eq!(stored["requests"], 1);
    let (_, usage) = env.home.json(&["limits"]);
    assert_eq!(
        usage["usage_today"]["tokens_today"],
        reported.input_tokens + reported.output_tokens,
        "the day's reservation is settled to what was used: {usage:#}"
    );
    // Neither the database, the config nor the log holds the key.
    for file in ["state.db", "config.toml", &format!("logs/{job}.log")] {
        let bytes = std::fs::read(env.home.path().join(file)).unwrap();
        assert!(!contains(&bytes, KEY.as_bytes()), "the key is in {file}");
    }
    let kinds = env.home.audit_kinds();
    for kind in ["job.admitted", "job.started", "job.finished"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    // The spec recorded at the start is what compliance judges later.
    let (_, compliance) = env.home.json(&["compliance-check"]);
    let hardening = compliance["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "job-hardening")
        .expect("a job-hardening finding");
    assert_eq!(hardening["passed"], true, "{hardening}");
}

#[test]
fn without_a_key_nothing_is_admitted_and_no_container_starts() {
    let env = JobHome::new();
    let run = env
        .home
        .run(&["execute", "--approve-all", "--prompt", PROMPT]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("ANTHROPIC_API_KEY"), "{}", run.stderr);
    assert!(run.stderr.contains("security.apiKeyFile"), "{}", run.stderr);
    assert!(!env.home.audit_kinds().iter().any(|k| k.starts_with("job.")));
    assert!(env.mock.requests().is_empty());
}

#[test]
fn a_key_file_open_to_others_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let env = JobHome::new();
    let file = env.home.path().join("api-key");
    std::fs::write(&file, KEY).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.home
        .set(&[&format!("security.apiKeyFile={}", file.display())]);
    let run = env
        .home
        .run(&["execute", "--approve-all", "--prompt", PROMPT]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = env
        .home
        .run(&["execute", "--approve-all", "--prompt", PROMPT]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(env.mock.requests()[0].header("x-api-key"), Some(KEY));
}

#[test]
fn an_ask_without_a_terminal_is_denied_with_how_to_approve() {
    let env = JobHome::new();
    let run = env
        .home
        .command()
        .env("ANTHROPIC_API_KEY", KEY)
        .args(["execute", "--prompt", PROMPT])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(3), "a denial's code: {stderr}");
    assert!(stderr.contains("--approve-all"), "{stderr}");
    assert!(stderr.contains("no terminal"), "{stderr}");
    assert!(env.mock.requests().is_empty());
}

/// On a terminal (a pty from util-linux `script`), an ask shows the job and
/// takes the owner's answer: yes runs it, an empty answer is a no.
#[test]
fn an_ask_on_a_terminal_shows_the_job_and_takes_the_answer() {
    let env = JobHome::new();
    let ask = |answer: &str| {
        let command = format!(
            "{} --home {} execute --max-tokens 77 --prompt '{PROMPT}'",
            env!("CARGO_BIN_EXE_claude-max-market"),
            env.home.path().display()
        );
        on_terminal(&command, answer)
    };
    let (code, screen) = ask("y\n");
    assert_eq!(code, Some(0), "{screen}");
    for shown in [
        "claude-sonnet-4-5",
        "image      claude-max-market-job:cli-tests",
        "1 requests",
        PROMPT,
        "[y/N]",
        "Mock reply to",
    ] {
        assert!(screen.contains(shown), "{shown:?} not on screen:\n{screen}");
    }
    let (code, screen) = ask("\n");
    assert_eq!(code, Some(3), "{screen}");
    assert!(screen.contains("declined"), "{screen}");
    assert_eq!(env.mock.requests().len(), 1, "only the approved job ran");
}

/// Runs `command` on a pty (util-linux `script`) with the mock's key,
/// `input` typed at it: its exit code and everything the terminal showed.
fn on_terminal(command: &str, input: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .env("ANTHROPIC_API_KEY", KEY)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs the command on a pty");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// On a terminal the budget is a bar that fills as tokens are used; the
/// job image's build, when a job needs it, is a bar of its steps.
#[test]
fn on_a_terminal_the_budget_and_the_image_build_are_bars() {
    let env = JobHome::new();
    env.mock.set_delta_delay(Duration::from_millis(300));
    let command = format!(
        "{} --home {} execute --approve-all --budget-tokens 400 --prompt '{PROMPT}'",
        env!("CARGO_BIN_EXE_claude-max-market"),
        env.home.path().display()
    );
    let (code, screen) = on_terminal(&command, "");
    assert_eq!(code, Some(0), "{screen}");
    let job = env.newest_job();
    let used = job["input_tokens"].as_u64().unwrap() + job["output_tokens"].as_u64().unwrap();
    assert!(
        screen.contains(&format!("{used}/400 tokens")),
        "the final count is on the bar's line:\n{screen}"
    );
    assert!(
        screen.contains("[=") || screen.contains("[>"),
        "the bar fills as tokens are used:\n{screen}"
    );

    let tag = format!("claude-max-market-job:bars-{}", std::process::id());
    env.home.set(&[&format!("docker.image={tag}")]);
    let (code, screen) = on_terminal(&command, "");
    docker(&["rmi", "-f", &tag]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("building it once"), "{screen}");
    assert!(
        screen.contains("building [") && screen.contains("step 1/"),
        "the build's steps are a bar:\n{screen}"
    );
    assert!(
        !screen.contains("Step 1/"),
        "on a terminal the builder's lines give way to the bar:\n{screen}"
    );
}

#[test]
fn the_wall_clock_limit_kills_the_container_and_records_a_timeout() {
    let env = JobHome::new();
    env.mock.push(Scenario::Hang);
    let run = env.execute(&["--prompt", PROMPT, "--timeout", "2"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    let job = env.newest_job();
    assert_eq!(job["state"], "timed_out");
    let container = job["container_id"]
        .as_str()
        .expect("the container was recorded");
    assert!(!exists(container), "the killed container is removed");
}

#[test]
fn rate_limits_are_retried_and_a_mid_stream_error_fails_the_job() {
    let env = JobHome::new();
    env.mock.push(Scenario::RateLimited { retry_after: 1 });
    let run = env.execute(&["--prompt", PROMPT]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(env.mock.requests().len(), 2);
    assert!(
        env.home
            .audit_kinds()
            .iter()
            .any(|k| k == "gateway.retried")
    );

    env.mock.push(Scenario::MidStreamError { after_deltas: 2 });
    let run = env.execute(&["--prompt", PROMPT]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("Overloaded"), "{}", run.stderr);
    let job = env.newest_job();
    assert_eq!(job["state"], "failed");
    assert_eq!(job["exit_code"], 4);
    assert!(
        job["input_tokens"].as_u64().unwrap() > 0,
        "tokens metered before the error are kept"
    );

    // Usage analytics see both jobs, in every format.
    let (code, usage) = env.home.json(&["usage", "--days", "2"]);
    assert_eq!(code, 0, "{usage:#}");
    let totals = &usage["totals"];
    assert_eq!(totals["tasks"], 2);
    assert_eq!(
        (totals["succeeded"].clone(), totals["failed"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(totals["success_rate"], 0.5);
    assert_eq!(usage["days"].as_array().unwrap().len(), 2);
    assert_eq!(usage["models"][0]["model"], "claude-sonnet-4-5");
    let csv = env.home.ok(&["usage", "--days", "2", "--csv"]).stdout;
    let csv = crate::reports::parse_csv(&csv);
    assert_eq!(csv.len(), 3, "a header and a row per day: {csv:?}");
    assert_eq!(csv[2][1], "2", "today's tasks");
    let text = env.home.ok(&["usage"]).stdout;
    assert!(text.contains('█'), "a bar chart: {text}");
    let page = env.home.path().join("usage.html");
    env.home.ok(&["usage", "--html", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && !html.contains("<script"), "{html}");
}

#[test]
fn logs_show_the_stored_output_and_follow_a_running_job() {
    let env = JobHome::new();
    env.mock.set_delta_delay(Duration::from_millis(100));
    let child = env.spawn(&["--prompt", PROMPT]);
    let (_, job) = env.wait_for_container();
    let follow = env.home.run(&["logs", "--job", &job, "--follow"]);
    assert_eq!(follow.code, 0, "{}", follow.stderr);
    assert!(
        follow.stdout.contains("Mock reply to: Say hello"),
        "{}",
        follow.stdout
    );
    assert!(child.wait_with_output().unwrap().status.success());

    let all = env.home.ok(&["logs"]);
    assert!(all.stdout.contains("Mock reply to: Say hello"));
    assert!(
        all.stdout.lines().any(|l| l.starts_with("worker: ")),
        "the worker's status line stands on its own: {}",
        all.stdout
    );
    let last = env.home.ok(&["logs", "--tail", "1"]);
    assert_eq!(last.stdout.lines().count(), 1, "{}", last.stdout);
    let unknown = env.home.run(&["logs", "--job", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("no job with id nope"));
}

#[test]
fn a_host_killed_mid_job_is_reconciled_by_the_next_invocation() {
    let env = JobHome::new();
    env.mock.set_delta_delay(Duration::from_millis(400));
    let mut child = env.spawn(&["--prompt", PROMPT]);
    let (container, job) = env.wait_for_container();
    // Wait for the gateway to meter message_start before the kill.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while env.mock.requests().is_empty() || metered_input(&env, &job) == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing was metered");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(exists(&container), "the orphan outlives its host");

    let cleaned = env.home.ok(&["clean"]);
    assert!(
        cleaned.stdout.contains(&format!("aborted job {job}")),
        "{}",
        cleaned.stdout
    );
    assert!(!exists(&container), "the orphan is killed and removed");
    let (_, doc) = env.home.json(&["logs", "--job", &job]);
    assert_eq!(doc["job"]["state"], "aborted");
    assert!(
        doc["job"]["input_tokens"].as_u64().unwrap() > 0,
        "metered tokens are kept"
    );
    assert!(!env.home.path().join("jobs").join(&job).exists());
}

#[test]
fn the_concurrent_jobs_limit_holds_across_processes() {
    let env = JobHome::new();
    env.home.set(&["limits.concurrentJobs=2"]);
    env.mock.set_delta_delay(Duration::from_millis(400));
    let children: Vec<_> = (0..5).map(|_| env.spawn(&["--prompt", PROMPT])).collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code().unwrap())
        .collect();
    let ran = codes.iter().filter(|c| **c == 0).count();
    let denied = codes.iter().filter(|c| **c == 3).count();
    assert_eq!((ran, denied), (2, 3), "exit codes {codes:?}");
}

#[test]
fn opting_out_stops_running_jobs_at_once() {
    let env = JobHome::new();
    env.mock.set_delta_delay(Duration::from_millis(500));
    let child = env.spawn(&["--prompt", PROMPT]);
    let (container, job) = env.wait_for_container();
    let (code, doc) = env.home.json(&["opt-out", "--yes"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["stopped_jobs"], serde_json::json!([job]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!exists(&container));
    let (_, logs) = env.home.json(&["logs", "--job", &job]);
    assert_eq!(logs["job"]["state"], "cancelled");
    assert_eq!(logs["job"]["end_reason"], "the owner opted out");
}

#[test]
fn sigterm_cancels_the_job_and_removes_its_container() {
    let env = JobHome::new();
    env.mock.set_delta_delay(Duration::from_millis(500));
    let child = env.spawn(&["--prompt", PROMPT]);
    let (container, job) = env.wait_for_container();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");
    assert!(!exists(&container), "the container is removed");
    let (_, logs) = env.home.json(&["logs", "--job", &job]);
    assert_eq!(logs["job"]["state"], "cancelled");
    let output = logs["job"]["output_tokens"].as_u64().unwrap_or(0);
    assert!(
        output < 100,
        "charged what the upstream made, not the 8192 it might have: {logs:#}"
    );
    let (_, usage) = env.home.json(&["usage"]);
    let totals = &usage["totals"];
    assert_eq!(
        (&totals["tasks"], &totals["cancelled"], &totals["failed"]),
        (&1.into(), &1.into(), &0.into()),
        "{usage:#}"
    );
}

#[test]
fn clean_removes_only_what_this_tool_made() {
    let env = JobHome::new();
    let stranger = format!("cmm-test-stranger-{}", std::process::id());
    docker(&[
        "create",
        "--name",
        &stranger,
        crate::docker_support::image(),
    ]);
    let stale = env
        .home
        .path()
        .join("jobs")
        .join("0123456789abcdef01234567");
    std::fs::create_dir_all(&stale).unwrap();
    let cleaned = env.home.ok(&["--json", "clean", "--force"]).json();
    assert_eq!(
        cleaned["removed_folders"],
        serde_json::json!(["0123456789abcdef01234567"])
    );
    assert!(
        exists(&stranger),
        "clean touched a container it did not make"
    );
    docker(&["rm", &stranger]);
}

#[test]
fn health_says_what_is_wrong_and_how_to_fix_it() {
    let env = JobHome::new();
    let ok = env
        .home
        .command()
        .env("ANTHROPIC_API_KEY", KEY)
        .args(["--json", "health"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(ok.status.code(), Some(0), "{doc:#}");
    assert_eq!(doc["healthy"], true);
    let names: Vec<_> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    for name in [
        "docker",
        "image",
        "data folder",
        "database",
        "policies",
        "gateway upstream",
    ] {
        assert!(
            names.contains(&Value::from(name)),
            "no {name} check in {doc:#}"
        );
    }

    let sick = Home::opted_in();
    sick.set(&["docker.image=claude-max-market-job:never-built"]);
    let run = sick.run(&["health"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("docker:build"), "{}", run.stdout);
    assert!(run.stdout.contains("ANTHROPIC_API_KEY"), "{}", run.stdout);
}

#[test]
fn health_asks_the_upstream_whether_it_answers_and_takes_the_key() {
    let env = JobHome::new();
    let upstream = |key: &str| -> Value {
        let out = env
            .home
            .command()
            .env("ANTHROPIC_API_KEY", key)
            .args(["--json", "health"])
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "gateway upstream")
            .cloned()
            .unwrap()
    };
    assert_eq!(upstream(KEY)["status"], "ok");
    assert_eq!(
        env.mock.requests().len(),
        1,
        "one token count, nothing billed"
    );

    let refused = upstream("sk-ant-api03-not-the-owners-key");
    assert_eq!(refused["status"], "fail", "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("401"),
        "{refused}"
    );

    // Nothing listens on the discard port of loopback.
    env.home.set(&["api.baseUrl=http://127.0.0.1:9"]);
    let down = upstream(KEY);
    assert_eq!(down["status"], "fail", "{down}");
    assert!(
        down["detail"].as_str().unwrap().contains("unreachable"),
        "{down}"
    );
}

fn metered_input(env: &JobHome, job: &str) -> u64 {
    let (_, doc) = env.home.json(&["logs", "--job", job]);
    doc["job"]["input_tokens"].as_u64().unwrap_or(0)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_job_and_no_day_goes_past_its_tokens_whatever_the_prompt_holds() {
    let env = JobHome::new();
    env.home.set(&[
        "limits.dailyTokens=200000",
        "limits.maxTokensPerTask=1000000",
        "compliance.maxPromptBytes=2000000",
    ]);
    // 600,000 characters: the mock counts 150,008 input tokens.
    let prompt = env.home.path().join("big-prompt.txt");
    std::fs::write(&prompt, "word ".repeat(120_000)).unwrap();
    let prompt = prompt.to_str().unwrap();
    let used = |job: &Value| {
        job["input_tokens"].as_u64().unwrap_or(0) + job["output_tokens"].as_u64().unwrap_or(0)
    };

    let small = env.execute(&["--file", prompt, "--budget-tokens", "100"]);
    assert_eq!(small.code, 1, "{small:?}");
    assert!(small.stderr.contains("out of budget"), "{small:?}");
    assert!(used(&env.newest_job()) <= 100);
    assert_eq!(
        env.mock.reported().input_tokens,
        0,
        "the upstream never ran the prompt for a 100-token job"
    );

    let big = env.execute(&["--file", prompt, "--budget-tokens", "190000"]);
    assert_eq!(big.code, 0, "{big:?}");
    // What the day has left is admitted, and the gateway holds it there.
    let rest = env.execute(&["--file", prompt, "--budget-tokens", "40000"]);
    assert_eq!(rest.code, 1, "{rest:?}");
    assert!(rest.stderr.contains("out of budget"), "{rest:?}");
    assert!(used(&env.newest_job()) <= 40_000);

    let (_, usage) = env.home.json(&["usage", "--days", "1"]);
    let totals = &usage["totals"];
    let day = totals["input_tokens"].as_u64().unwrap() + totals["output_tokens"].as_u64().unwrap();
    assert!(day > 150_000, "one job ran: {usage:#}");
    assert!(day <= 200_000, "the day's cap held: {usage:#}");
    assert_eq!(
        (&totals["tasks"], &totals["succeeded"]),
        (&3.into(), &1.into()),
        "{usage:#}"
    );
}

#[test]
fn absurd_upstream_usage_is_saturated_and_the_job_still_settles() {
    let env = JobHome::new();
    env.mock.push(Scenario::Reply {
        text: "counted wrong".into(),
        input_tokens: (1u64 << 63) + 5,
        output_tokens: 3,
    });
    env.execute(&["--prompt", PROMPT]);
    let job = env.newest_job();
    assert!(
        !matches!(job["state"].as_str(), Some("admitted" | "running")),
        "{job:#}"
    );
    assert_eq!(job["input_tokens"], i64::MAX, "{job:#}");
    let (code, usage) = env.home.json(&["usage"]);
    assert_eq!(code, 0, "{usage:#}");
    assert_eq!(usage["totals"]["tasks"], 1);
}

#[test]
fn the_first_prompt_job_builds_a_missing_job_image_and_says_so() {
    /// The image this test makes goes again, whatever happens.
    struct Removed(String);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", &self.0])
                .output();
        }
    }
    let env = JobHome::new();
    let tag = Removed(format!("cmm-test-first-run:{}", std::process::id()));
    env.home.set(&[&format!("docker.image={}", tag.0)]);

    let run = env.execute(&["--prompt", PROMPT]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("building it once"), "{}", run.stderr);
    assert!(run.stdout.contains("Mock reply to"), "{}", run.stdout);
    let built = env.home.audit_of("docker.build");
    assert_eq!(built.len(), 1);
    assert_eq!(built[0]["subject"], tag.0.as_str());

    let again = env.execute(&["--prompt", PROMPT]);
    assert!(
        !again.stderr.contains("building it once"),
        "{}",
        again.stderr
    );
    assert_eq!(env.home.audit_of("docker.build").len(), 1);

    // An image a command names stays the owner's to provide.
    let theirs = env.execute(&["--image", "cmm-test-never-built:1", "--", "true"]);
    assert_eq!(theirs.code, 1, "{theirs:?}");
    assert!(
        theirs.stderr.contains("is not present"),
        "{}",
        theirs.stderr
    );
}
