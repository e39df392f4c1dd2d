//! Command jobs: any image, any command, on a copy of a folder, under the
//! relay. Real containers from an image of this machine's own tools, the
//! mock upstream behind the gateway, and the owner's folder checked to be
//! untouched until `result --apply`.

use std::path::Path;

use crate::docker_support::{JobHome, KEY, docker, inspect, job_end};
use crate::images;

pub(crate) fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "one\ntwo\n").unwrap();
    std::fs::write(dir.path().join("gone.txt"), "bye\n").unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/main.sh"), "echo hi\n").unwrap();
    dir
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn a_command_works_on_a_copy_and_its_changes_land_only_on_request() {
    let env = JobHome::new();
    let dir = folder();
    let script = "printf 'one\\nthree\\n' > notes.txt && rm gone.txt && echo new > added.txt \
                  && echo \"$ANTHROPIC_BASE_URL $HOME\" && ls /run/cmm";
    let run = env.execute(&[
        "--json",
        "--image",
        images::tools(),
        "--workspace",
        dir.path().to_str().unwrap(),
        "--env",
        "GREETING=hello",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let doc = job_end(&run.stdout);
    let job = &doc["job"];
    assert_eq!(job["state"], "finished", "{doc:#}");
    assert_eq!(job["exit_code"], 0);
    assert!(
        doc["output"]
            .as_str()
            .unwrap()
            .contains("http://127.0.0.1:4141 /tmp/home"),
        "{doc:#}"
    );
    let ws = &job["workspace"];
    assert_eq!(ws["added"], serde_json::json!(["added.txt"]), "{ws:#}");
    assert_eq!(ws["changed"], serde_json::json!(["notes.txt"]));
    assert_eq!(ws["removed"], serde_json::json!(["gone.txt"]));
    // The owner's folder is as it was.
    assert_eq!(read(dir.path(), "notes.txt"), "one\ntwo\n");
    assert!(dir.path().join("gone.txt").exists());
    assert!(!dir.path().join("added.txt").exists());

    let id = job["job_id"].as_str().unwrap();
    let shown = env.home.ok(&["result", id, "--diff"]).stdout;
    assert!(shown.contains("-two\n+three"), "{shown}");
    assert!(
        shown.contains("A added.txt") && shown.contains("D gone.txt"),
        "{shown}"
    );

    // An edit made meanwhile stops the apply; --force overrides it.
    std::fs::write(dir.path().join("notes.txt"), "mine\n").unwrap();
    let refused = env.home.run(&["result", id, "--apply"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("notes.txt"), "{}", refused.stderr);
    assert!(dir.path().join("gone.txt").exists(), "nothing was written");
    env.home.ok(&["result", id, "--apply", "--force"]);
    assert_eq!(read(dir.path(), "notes.txt"), "one\nthree\n");
    assert_eq!(read(dir.path(), "added.txt"), "new\n");
    assert!(!dir.path().join("gone.txt").exists());
    assert_eq!(
        read(dir.path(), "src/main.sh"),
        "echo hi\n",
        "untouched files stay"
    );

    assert_eq!(
        env.home.audit_of("job.result-applied").len(),
        2,
        "the refusal and the apply are both on the record"
    );
    let admitted = env.home.audit_of("job.admitted").remove(0);
    let recorded = &admitted["details"]["job"];
    assert!(
        recorded["image_id"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(recorded["command"][0], "sh");
    assert_eq!(recorded["workspace"]["files"], 4);
}

#[test]
fn the_container_has_no_network_no_key_and_a_placeholder_in_its_environment() {
    let env = JobHome::new();
    let child = env.spawn(&["--image", images::tools(), "--", "sleep", "30"]);
    let (container, _) = env.wait_for_container();
    let c = inspect(&container);
    assert_eq!(c["HostConfig"]["NetworkMode"], "none");
    assert!(!c.to_string().contains(KEY), "the key is in docker inspect");
    let env_vars = c["Config"]["Env"].to_string();
    assert!(
        env_vars.contains("ANTHROPIC_API_KEY=cmm-placeholder-"),
        "{env_vars}"
    );
    assert!(
        env_vars.contains("ANTHROPIC_BASE_URL=http://127.0.0.1:4141"),
        "{env_vars}"
    );
    assert_eq!(
        c["Config"]["Entrypoint"],
        serde_json::json!(["/run/cmm/relay"])
    );
    let mounts = c["Mounts"].as_array().unwrap();
    assert_eq!(
        mounts.len(),
        1,
        "only the read-only gateway folder: {mounts:?}"
    );
    assert_eq!(mounts[0]["RW"], false);
    let listening = docker(&["exec", &container, "cat", "/proc/net/tcp"]);
    let ports: Vec<&str> = listening
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        ports,
        ["0100007F:102D"],
        "only the relay, on 127.0.0.1:4141"
    );
    docker(&["kill", "--signal", "TERM", &container]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn bad_input_is_refused_before_anything_starts() {
    let env = JobHome::new();
    let missing = env.execute(&["--image", "cmm-no-such-image:1", "--", "true"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("never pull"), "{}", missing.stderr);
    assert!(missing.stderr.contains("docker:pull"), "{}", missing.stderr);

    let dir = folder();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("src/passwd")).unwrap();
    let linked = env.execute(&[
        "--image",
        images::tools(),
        "--workspace",
        dir.path().to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(linked.code, 1);
    assert!(
        linked.stderr.contains("src/passwd") && linked.stderr.contains("leaves the workspace"),
        "{}",
        linked.stderr
    );
    std::fs::remove_file(dir.path().join("src/passwd")).unwrap();

    env.home.set(&["workspace.maxBytes=1m"]);
    std::fs::write(dir.path().join("big.bin"), vec![0u8; 2 << 20]).unwrap();
    let big = env.execute(&[
        "--image",
        images::tools(),
        "--workspace",
        dir.path().to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(big.code, 1);
    assert!(big.stderr.contains("workspace.maxBytes"), "{}", big.stderr);

    // None of these admitted a job or left a folder behind.
    let (_, status) = env.home.json(&["status"]);
    assert_eq!(status["usage_today"]["tasks_today"], 0, "{status:#}");
    let jobs = env.home.path().join("jobs");
    let left = std::fs::read_dir(&jobs).map_or(0, |d| d.count());
    assert_eq!(left, 0, "job folders left in {}", jobs.display());
}

#[test]
fn a_command_that_is_not_in_the_image_fails_with_its_name() {
    let env = JobHome::new();
    let run = env.execute(&[
        "--json",
        "--image",
        images::tools(),
        "--",
        "no-such-tool",
        "x",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let job = &job_end(&run.stdout)["job"];
    assert_eq!(job["state"], "failed");
    assert_eq!(job["exit_code"], 127);
    let detail = job["detail"].as_str().unwrap();
    assert!(
        detail.contains("`no-such-tool` was not found in the image"),
        "{detail}"
    );
}

#[test]
fn a_command_filling_its_workspace_is_stopped_at_the_cap() {
    let env = JobHome::new();
    env.home.set(&["workspace.maxBytes=4m"]);
    let dir = folder();
    let run = env.execute(&[
        "--json",
        "--image",
        images::tools(),
        "--workspace",
        dir.path().to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=fill bs=65536 count=1000; sleep 30",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let job = &job_end(&run.stdout)["job"];
    assert_eq!(job["state"], "failed", "{job:#}");
    let detail = job["detail"].as_str().unwrap();
    assert!(detail.contains("workspace filled its cap"), "{detail}");
    assert!(
        job["elapsed_ms"].as_u64().unwrap() < 20_000,
        "stopped, not timed out"
    );
    let kept = Path::new(job["workspace"]["result"].as_str().unwrap()).join("workspace/fill");
    let size = std::fs::metadata(&kept).map_or(0, |m| m.len());
    assert!(size <= 4 << 20, "what came back is within the cap: {size}");
}

#[test]
fn a_fork_bomb_meets_the_pids_cap_and_the_job_still_ends() {
    let env = JobHome::new();
    env.home.set(&["docker.pidsLimit=32"]);
    let run = env.execute(&[
        "--json",
        "--timeout",
        "5",
        "--image",
        images::tools(),
        "--",
        "sh",
        "-c",
        "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived",
    ]);
    let job = &job_end(&run.stdout)["job"];
    assert!(
        matches!(
            job["state"].as_str(),
            Some("finished" | "failed" | "timed_out")
        ),
        "{job:#}"
    );
    let container = job["container_id"].as_str().unwrap();
    assert!(inspect(container).is_null(), "the container is gone");
    let log = env
        .home
        .ok(&["logs", "--job", job["job_id"].as_str().unwrap()])
        .stdout;
    assert!(log.contains("Cannot fork"), "the pids cap held: {log}");
}

#[test]
fn a_command_ignoring_sigterm_is_killed_at_its_timeout_and_its_workspace_kept() {
    let env = JobHome::new();
    let dir = folder();
    let run = env.execute(&[
        "--json",
        "--timeout",
        "2",
        "--image",
        images::tools(),
        "--workspace",
        dir.path().to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo started > progress.txt; while :; do sleep 1; done",
    ]);
    assert_eq!(run.code, 1);
    let job = &job_end(&run.stdout)["job"];
    assert_eq!(job["state"], "timed_out", "{job:#}");
    let elapsed = job["elapsed_ms"].as_u64().unwrap();
    assert!((2_000..20_000).contains(&elapsed), "{elapsed}");
    assert_eq!(job["workspace"]["returned"], true, "{job:#}");
    assert_eq!(
        job["workspace"]["added"],
        serde_json::json!(["progress.txt"])
    );
}

#[test]
fn logs_follow_a_running_command_and_keep_both_streams() {
    let env = JobHome::new();
    let child = env.spawn(&[
        "--image",
        images::tools(),
        "--",
        "sh",
        "-c",
        "echo first; sleep 2; echo oops >&2; echo second",
    ]);
    let (_, job) = env.wait_for_container();
    let follow = env.home.run(&["logs", "--job", &job, "--follow"]);
    assert_eq!(follow.code, 0, "{}", follow.stderr);
    let all = format!("{}{}", follow.stdout, follow.stderr);
    for line in ["first", "oops", "second"] {
        assert!(all.contains(line), "{line} missing from: {all}");
    }
    assert!(child.wait_with_output().unwrap().status.success());
    let stored = env.home.ok(&["logs", "--job", &job]).stdout;
    assert!(
        stored.contains("first") && stored.contains("second"),
        "{stored}"
    );
}

#[test]
fn docker_cpu_millis_is_a_hard_cpu_cap_on_the_container() {
    let env = JobHome::new();
    env.home.set(&["docker.cpuMillis=1500"]);
    let child = env.spawn(&["--image", images::tools(), "--", "sleep", "2"]);
    let (container, _) = env.wait_for_container();
    let host_config = &inspect(&container)["HostConfig"];
    assert_eq!(host_config["NanoCpus"], 1_500_000_000u64, "{host_config:#}");
    assert_eq!(host_config["CpuShares"], 512);
    assert!(child.wait_with_output().unwrap().status.success());
}

#[test]
fn jobs_lists_the_newest_first_with_what_they_ran() {
    let env = JobHome::new();
    let empty = env.home.ok(&["jobs"]).stdout;
    assert!(empty.contains("no jobs yet"), "{empty}");
    env.execute(&["--image", images::tools(), "--", "true"]);
    env.execute(&["--image", images::tools(), "--", "sh", "-c", "exit 4"]);
    let (code, doc) = env.home.json(&["jobs"]);
    assert_eq!(code, 0, "{doc:#}");
    let jobs = doc.as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{doc:#}");
    assert_eq!(jobs[0]["state"], "failed", "newest first: {doc:#}");
    assert_eq!(jobs[0]["exit_code"], 4);
    assert_eq!(jobs[1]["state"], "finished");
    let text = env.home.ok(&["jobs", "--limit", "1"]).stdout;
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("sh -c exit 4"), "{text}");
    let unknown = env.home.run(&["logs", "--job", "nope"]);
    assert!(
        unknown.stderr.contains("`claude-max-market jobs`"),
        "{}",
        unknown.stderr
    );
}
