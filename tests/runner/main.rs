//! Runner tests against the real Docker Engine (no mocks): building the test
//! image, running hardened job containers, timeouts, cancellation, removal,
//! ownership filtering and pulling from a loopback registry.
//!
//! Needs: a Docker Engine on /var/run/docker.sock (or DOCKER_HOST=unix://),
//! `rustc` with the x86_64-unknown-linux-musl target (for the payload), the
//! `docker` CLI (for cleanup and for creating an unlabelled container), and
//! for the registry tests `/usr/bin/docker-registry` (Debian's package).
//! Every name includes this process id; everything created is removed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use claude_max_market::runner::labels::JOB_ID_LABEL;
use claude_max_market::runner::{
    BuildContext, BuildEvent, Docker, GATEWAY_MOUNT, JobContainer, JobEnd, MANAGED_LABEL, Program,
    RunnerError, Stream,
};
use tokio_util::sync::CancellationToken;

const TEST_UID_GID: &str = "4321:4321";
const IMAGE_USER: &str = "65532:65532";
const LONG: Duration = Duration::from_secs(120);

fn pid() -> u32 {
    std::process::id()
}

fn docker_cli(args: &[&str]) -> (bool, String) {
    match Command::new("docker").args(args).output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// The payload binary, compiled once per test process.
fn payload() -> &'static [u8] {
    static PAYLOAD: OnceLock<Vec<u8>> = OnceLock::new();
    PAYLOAD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cmm-runner-payload-{}", pid()));
        std::fs::create_dir_all(&dir).expect("payload dir");
        let out = dir.join("payload");
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/runner/payload/payload.rs");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let status = Command::new(rustc)
            .args([
                "--edition",
                "2024",
                "-C",
                "opt-level=2",
                "-C",
                "strip=symbols",
            ])
            .args(["--target", "x86_64-unknown-linux-musl", "-o"])
            .arg(&out)
            .arg(&source)
            .status()
            .expect("run rustc");
        assert!(status.success(), "compiling the musl payload failed");
        let bytes = std::fs::read(&out).expect("read payload");
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    })
}

/// The test image context. `unique` goes into the very first layer: the
/// engine deletes an image's untagged parent layers with it, and a parallel
/// build (in this or another test process) reusing those layers from the
/// cache then fails with "failed to get digest ... no such file". With no
/// layer shared between tests, removing one test's image cannot break
/// another's build.
fn context(unique: &str, extra_dockerfile: &str) -> BuildContext {
    let dockerfile = format!(
        "FROM scratch\nCOPY marker /marker\nCOPY payload /payload\n{extra_dockerfile}\
         USER {IMAGE_USER}\nENTRYPOINT [\"/payload\"]\n"
    );
    BuildContext::new()
        .file("Dockerfile", dockerfile.into_bytes(), 0o644)
        .file(
            "marker",
            format!("{} {unique}\n", pid()).into_bytes(),
            0o644,
        )
        .file("payload", payload().to_vec(), 0o755)
}

/// A locally built image, untagged (and removed once unused) on drop.
struct TestImage {
    tag: String,
    id: String,
}

impl TestImage {
    async fn build(docker: &Docker, name: &str, context: &BuildContext) -> TestImage {
        let tag = format!("cmm-runner-test-{}-{name}:latest", pid());
        let id = docker
            .build_image(&tag, false, context, |_| {})
            .await
            .expect("build test image");
        TestImage { tag, id }
    }

    async fn standard(docker: &Docker, name: &str) -> TestImage {
        TestImage::build(docker, name, &context(name, "")).await
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        // By tag, so an image shared (via the build cache) with a parallel
        // test only loses this test's name.
        let _ = docker_cli(&["rmi", "-f", &self.tag]);
    }
}

/// A gateway folder with one readable file in it.
struct Gateway(PathBuf);

impl Gateway {
    fn new(name: &str) -> Gateway {
        let dir = std::env::temp_dir().join(format!("cmm-runner-gw-{}-{name}", pid()));
        std::fs::create_dir_all(&dir).expect("gateway dir");
        std::fs::write(dir.join("hello.txt"), "hi from the host\n").expect("gateway file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Gateway(dir)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes a container by name on drop, in case a test fails half-way.
struct ContainerName(String);

impl Drop for ContainerName {
    fn drop(&mut self) {
        let _ = docker_cli(&["rm", "-f", "-v", &self.0]);
    }
}

fn spec(name: &str, image: &TestImage, gateway: &Gateway) -> (JobContainer, ContainerName) {
    let name = format!("cmm-runner-test-{}-{name}", pid());
    let spec = JobContainer {
        name: name.clone(),
        image: image.tag.clone(),
        user: TEST_UID_GID.into(),
        memory_bytes: 64 * 1024 * 1024,
        cpu_shares: 512,
        nano_cpus: Some(500_000_000),
        pids_limit: 32,
        tmpfs_bytes: 8 * 1024 * 1024,
        gateway_dir: gateway.0.clone(),
        labels: BTreeMap::from([(JOB_ID_LABEL.to_string(), name.clone())]),
        program: Program::Worker,
    };
    (spec, ContainerName(name))
}

#[derive(Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    chunks: usize,
}

impl Output {
    fn sink(&mut self) -> impl FnMut(Stream, &[u8]) + '_ {
        |stream, bytes| {
            self.chunks += 1;
            match stream {
                Stream::Stdout => self.stdout.extend_from_slice(bytes),
                Stream::Stderr => self.stderr.extend_from_slice(bytes),
            }
        }
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

async fn connect() -> Docker {
    Docker::connect()
        .await
        .expect("connect to the Docker Engine")
}

#[tokio::test]
async fn engine_version_is_negotiated() {
    let docker = connect().await;
    let version = docker.version().await.expect("version");
    println!("engine version: {version:?}");
    assert!(!version.engine.is_empty());
    assert!(!version.api.is_empty());
    // The client never speaks a newer API than the engine offers.
    let as_pair = |v: &str| -> (u32, u32) {
        let (a, b) = v.split_once('.').expect("major.minor");
        (a.parse().expect("major"), b.parse().expect("minor"))
    };
    assert!(as_pair(&version.client_api) <= as_pair(&version.api));
}

#[tokio::test]
async fn connect_to_a_missing_socket_says_what_to_do() {
    let missing = std::env::temp_dir().join(format!("cmm-no-such-{}.sock", pid()));
    let err = Docker::connect_to(&missing).await.expect_err("must fail");
    let text = err.to_string();
    println!("{text}");
    assert!(matches!(err, RunnerError::Connect { .. }));
    assert!(text.contains(&missing.display().to_string()));
    assert!(text.contains("is the daemon running"));
}

#[tokio::test]
async fn build_is_deterministic_and_reports_steps() {
    let docker = connect().await;
    // A context of its own (see `context`): the second build must reuse
    // exactly what the first one built. (Byte-identical tars are unit-tested.)
    let ctx = context("determinism", "");
    let mut events = Vec::new();
    let tag_a = format!("cmm-runner-test-{}-det-a:latest", pid());
    let tag_b = format!("cmm-runner-test-{}-det-b:latest", pid());
    let a = docker
        .build_image(&tag_a, false, &ctx, |e| events.push(e))
        .await;
    let b = docker.build_image(&tag_b, false, &ctx, |_| {}).await;
    let _ = docker_cli(&["rmi", "-f", &tag_a]);
    let _ = docker_cli(&["rmi", "-f", &tag_b]);
    let (a, b) = (a.expect("build a"), b.expect("build b"));
    println!("built {a}; events: {events:?}");
    assert!(a.starts_with("sha256:"));
    assert_eq!(a, b, "identical context must give the identical image");
    assert!(events.contains(&BuildEvent::Step("Step 1/5 : FROM scratch".into())));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BuildEvent::Step(s) if s.starts_with("Step 5/5 : ENTRYPOINT")))
    );
}

#[tokio::test]
async fn build_errors_carry_the_daemon_message() {
    let docker = connect().await;
    let tag = format!("cmm-runner-test-{}-broken:latest", pid());
    let ctx = BuildContext::new().file(
        "Dockerfile",
        b"FROM scratch\nCOPY does-not-exist /x\n".as_slice(),
        0o644,
    );
    let err = docker
        .build_image(&tag, true, &ctx, |_| {})
        .await
        .expect_err("must fail");
    let _ = docker_cli(&["rmi", "-f", &tag]);
    println!("{err}");
    match &err {
        RunnerError::Build { tag: t, message } => {
            assert_eq!(t, &tag);
            assert!(message.contains("does-not-exist"), "{message}");
        }
        other => panic!("expected Build, got {other:?}"),
    }
}

#[tokio::test]
async fn echo_roundtrip_then_removed() {
    let docker = connect().await;
    let image = TestImage::standard(&docker, "echo").await;
    let gateway = Gateway::new("echo");
    let (spec, _cleanup) = spec("echo", &image, &gateway);
    let body: Vec<u8> = (0..(1024 * 1024)).map(|i| (i % 251) as u8).collect();
    let mut stdin = b"stderr to stderr\ncat\n".to_vec();
    stdin.extend_from_slice(&body);
    let mut out = Output::default();
    let mut started = None;
    let run = docker
        .run_job(
            &spec,
            stdin,
            LONG,
            CancellationToken::new(),
            out.sink(),
            |id| started = Some(id.to_string()),
        )
        .await
        .expect("run_job");
    assert_eq!(run.end, JobEnd::Exited { code: 0 });
    assert_eq!(started.as_deref(), Some(run.container_id.as_str()));
    let mut expected = b"payload: started\n".to_vec();
    expected.extend_from_slice(&body);
    assert_eq!(out.stdout.len(), expected.len());
    assert!(out.stdout == expected, "stdout differs from stdin echo");
    assert_eq!(out.stderr, b"to stderr\n");
    println!("{} output chunks", out.chunks);
    assert!(
        !docker
            .container_exists(&run.container_id)
            .await
            .expect("exists?"),
        "container must be removed after success"
    );
}

#[tokio::test]
async fn exit_code_is_reported() {
    let docker = connect().await;
    let image = TestImage::standard(&docker, "exit").await;
    let gateway = Gateway::new("exit");
    let (spec, _cleanup) = spec("exit", &image, &gateway);
    let mut out = Output::default();
    let run = docker
        .run_job(
            &spec,
            b"big 100000\nexit 7\n".to_vec(),
            LONG,
            CancellationToken::new(),
            out.sink(),
            |_| {},
        )
        .await
        .expect("run_job");
    assert_eq!(run.end, JobEnd::Exited { code: 7 });
    assert_eq!(out.stdout.len(), "payload: started\n".len() + 100_000);
    assert!(!docker.container_exists(&spec.name).await.expect("exists?"));
}

fn info_map(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn credential_like(entry: &str) -> bool {
    let key = entry
        .split('=')
        .next()
        .unwrap_or(entry)
        .to_ascii_uppercase();
    [
        "KEY",
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "AUTH",
        "COOKIE",
        "SESSION",
        "ANTHROPIC",
        "CLAUDE",
    ]
    .iter()
    .any(|p| key.contains(p))
}

#[tokio::test]
async fn hardening_holds_while_running() {
    let docker = connect().await;
    let image = TestImage::standard(&docker, "hard").await;
    let gateway = Gateway::new("hard");
    let (spec, _cleanup) = spec("hard", &image, &gateway);
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let mut out = Output::default();
    let run = docker.run_job(
        &spec,
        b"info\nsleep 2\n".to_vec(),
        LONG,
        CancellationToken::new(),
        out.sink(),
        move |id| {
            let _ = tx.send(id.to_string());
        },
    );
    let inspect = async {
        let id = rx.await.expect("on_started fired");
        docker.inspect_raw(&id).await
    };
    let (run, inspect) = tokio::join!(run, inspect);
    let run = run.expect("run_job");
    let inspect = inspect.expect("inspect while running");
    assert_eq!(run.end, JobEnd::Exited { code: 0 });

    let hc = &inspect["HostConfig"];
    let config = &inspect["Config"];
    println!(
        "inspect while running:\n State.Running={}\n HostConfig={}\n Config.User={} Config.Env={} \
         Config.Labels={} Config.NetworkDisabled={}\n Config.OpenStdin={} StdinOnce={} \
         AttachStdin={} AttachStdout={} AttachStderr={} Tty={}\n Mounts={}",
        inspect["State"]["Running"],
        serde_json::to_string_pretty(&serde_json::json!({
            "ReadonlyRootfs": hc["ReadonlyRootfs"], "Tmpfs": hc["Tmpfs"], "CapDrop": hc["CapDrop"],
            "CapAdd": hc["CapAdd"], "SecurityOpt": hc["SecurityOpt"], "NetworkMode": hc["NetworkMode"],
            "PidsLimit": hc["PidsLimit"], "Memory": hc["Memory"], "MemorySwap": hc["MemorySwap"],
            "CpuShares": hc["CpuShares"], "NanoCpus": hc["NanoCpus"], "Init": hc["Init"],
            "Privileged": hc["Privileged"], "IpcMode": hc["IpcMode"], "AutoRemove": hc["AutoRemove"],
            "Binds": hc["Binds"], "Mounts": hc["Mounts"],
        }))
        .unwrap_or_default(),
        config["User"],
        config["Env"],
        config["Labels"],
        config["NetworkDisabled"],
        config["OpenStdin"],
        config["StdinOnce"],
        config["AttachStdin"],
        config["AttachStdout"],
        config["AttachStderr"],
        config["Tty"],
        inspect["Mounts"],
    );

    assert_eq!(inspect["State"]["Running"], true, "inspected while running");
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(
        hc["Tmpfs"],
        serde_json::json!({"/tmp": format!(
            "rw,noexec,nosuid,nodev,size={},uid=4321,gid=4321,mode=1777",
            8 * 1024 * 1024
        )})
    );
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
    assert!(hc["CapAdd"].is_null() || hc["CapAdd"] == serde_json::json!([]));
    assert_eq!(
        hc["SecurityOpt"],
        serde_json::json!(["no-new-privileges:true"])
    );
    assert_eq!(config["User"], TEST_UID_GID);
    assert_eq!(hc["NetworkMode"], "none");
    assert_eq!(config["NetworkDisabled"], true);
    assert_eq!(hc["PidsLimit"], 32);
    assert_eq!(hc["Memory"], 64 * 1024 * 1024);
    assert_eq!(hc["MemorySwap"], hc["Memory"]);
    assert_eq!(hc["CpuShares"], 512);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["Init"], true);
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["IpcMode"], "none");
    assert_eq!(hc["AutoRemove"], false);
    assert!(hc["Binds"].is_null() || hc["Binds"] == serde_json::json!([]));
    assert_eq!(config["OpenStdin"], true);
    assert_eq!(config["StdinOnce"], true);
    assert_eq!(config["AttachStdin"], true);
    assert_eq!(config["AttachStdout"], true);
    assert_eq!(config["AttachStderr"], true);
    assert_eq!(config["Tty"], false);
    let env = config["Env"].as_array().cloned().unwrap_or_default();
    for entry in &env {
        let entry = entry.as_str().unwrap_or_default();
        assert!(!credential_like(entry), "credential-like env entry {entry}");
        assert!(entry.starts_with("PATH="), "unexpected env entry {entry}");
    }
    assert_eq!(config["Labels"][MANAGED_LABEL], "true");
    assert_eq!(config["Labels"][JOB_ID_LABEL], spec.name.as_str());
    let mounts = inspect["Mounts"].as_array().cloned().unwrap_or_default();
    assert_eq!(mounts.len(), 1, "exactly one mount: {mounts:?}");
    assert_eq!(mounts[0]["Type"], "bind");
    assert_eq!(mounts[0]["Source"], gateway.0.display().to_string());
    assert_eq!(mounts[0]["Destination"], GATEWAY_MOUNT);
    assert_eq!(mounts[0]["RW"], false);
    assert_eq!(hc["Mounts"].as_array().map(Vec::len), Some(1));
    assert_eq!(hc["Mounts"][0]["ReadOnly"], true);

    // What the program itself sees.
    let stdout = out.stdout_text();
    println!("payload report:\n{stdout}");
    let info = info_map(&stdout);
    let get = |k: &str| {
        info.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    assert_eq!(get("status.Uid"), "4321 4321 4321 4321");
    assert_eq!(get("status.Gid"), "4321 4321 4321 4321");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(get(&format!("status.{cap}")), "0000000000000000", "{cap}");
    }
    assert_eq!(get("status.NoNewPrivs"), "1");
    assert_eq!(get("status.Seccomp"), "2");
    assert!(
        get("pid1").contains("docker-init"),
        "pid 1 is {}",
        get("pid1")
    );
    assert_eq!(get("net.ifaces"), "lo");
    assert_eq!(get("write./probe"), "err:30", "root fs must be read-only");
    assert_eq!(get("write./tmp/probe"), "ok");
    assert_eq!(
        get("write./run/cmm/probe"),
        "err:30",
        "gateway must be read-only"
    );
    assert_eq!(get("gateway.hello"), "hi from the host");
    let tmp_mount = info
        .iter()
        .find(|(k, v)| k == "mount" && v.starts_with("/tmp "))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    for opt in ["nosuid", "nodev", "noexec", "size=8192k"] {
        assert!(
            tmp_mount.contains(opt),
            "/tmp mount {tmp_mount:?} lacks {opt}"
        );
    }
    assert!(
        !info
            .iter()
            .any(|(k, v)| k == "mount" && v.starts_with("/dev/shm ")),
        "no /dev/shm: /tmp is the only scratch space"
    );
    for (k, v) in &info {
        if k == "env" {
            assert!(!credential_like(v), "credential-like process env {v}");
        }
    }
    assert!(
        !docker
            .container_exists(&run.container_id)
            .await
            .expect("exists?")
    );
}

#[tokio::test]
async fn timeout_kills_and_removes() {
    let docker = connect().await;
    let image = TestImage::standard(&docker, "timeout").await;
    let gateway = Gateway::new("timeout");
    let (spec, _cleanup) = spec("timeout", &image, &gateway);
    let begun = Instant::now();
    let mut out = Output::default();
    let run = docker
        .run_job(
            &spec,
            b"sleep 3600\n".to_vec(),
            Duration::from_secs(2),
            CancellationToken::new(),
            out.sink(),
            |_| {},
        )
        .await
        .expect("run_job");
    let took = begun.elapsed();
    println!("timed out after {took:?}");
    assert_eq!(run.end, JobEnd::TimedOut);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(out.stdout, b"payload: started\n");
    assert!(
        !docker
            .container_exists(&run.container_id)
            .await
            .expect("exists?")
    );
}

#[tokio::test]
async fn cancel_kills_and_removes() {
    let docker = connect().await;
    let image = TestImage::standard(&docker, "cancel").await;
    let gateway = Gateway::new("cancel");
    let (spec, _cleanup) = spec("cancel", &image, &gateway);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let run = docker
        .run_job(
            &spec,
            b"sleep 3600\n".to_vec(),
            LONG,
            cancel,
            |_, _| {},
            move |_| {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    trigger.cancel();
                });
            },
        )
        .await
        .expect("run_job");
    assert_eq!(run.end, JobEnd::Cancelled);
    assert!(
        !docker
            .container_exists(&run.container_id)
            .await
            .expect("exists?")
    );
}

#[tokio::test]
async fn dropped_future_still_removes() {
    let docker = connect().await;
    let image = TestImage::standard(&docker, "drop").await;
    let gateway = Gateway::new("drop");
    let (spec, _cleanup) = spec("drop", &image, &gateway);
    let started = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let record = started.clone();
    let abandoned = tokio::time::timeout(
        Duration::from_secs(3),
        docker.run_job(
            &spec,
            b"sleep 3600\n".to_vec(),
            LONG,
            CancellationToken::new(),
            |_, _| {},
            move |id| {
                if let Ok(mut slot) = record.lock() {
                    *slot = Some(id.to_string());
                }
            },
        ),
    )
    .await;
    assert!(abandoned.is_err(), "the job should still have been running");
    let id = started
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .expect("started");
    let deadline = Instant::now() + Duration::from_secs(20);
    while docker.container_exists(&id).await.expect("exists?") {
        assert!(
            Instant::now() < deadline,
            "abandoned container {id} not removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn start_failure_still_removes() {
    let docker = connect().await;
    // `/run` is a file in this image, so the gateway mount at /run/cmm
    // cannot be made and the start fails after a successful create.
    let ctx = context("startfail", "COPY runfile /run\n").file(
        "runfile",
        b"not a dir\n".as_slice(),
        0o644,
    );
    let image = TestImage::build(&docker, "startfail", &ctx).await;
    let gateway = Gateway::new("startfail");
    let (spec, _cleanup) = spec("startfail", &image, &gateway);
    let mut started = false;
    let err = docker
        .run_job(
            &spec,
            Vec::new(),
            LONG,
            CancellationToken::new(),
            |_, _| {},
            |_| started = true,
        )
        .await
        .expect_err("start must fail");
    println!("{err}");
    assert!(!started);
    assert!(
        matches!(err, RunnerError::Engine { during, .. } if during.contains("starting")),
        "{err:?}"
    );
    assert!(!docker.container_exists(&spec.name).await.expect("exists?"));
}

#[tokio::test]
async fn image_volumes_are_refused() {
    let docker = connect().await;
    let image = TestImage::build(&docker, "volume", &context("volume", "VOLUME /data\n")).await;
    let gateway = Gateway::new("volume");
    let (spec, _cleanup) = spec("volume", &image, &gateway);
    let err = docker
        .run_job(
            &spec,
            Vec::new(),
            LONG,
            CancellationToken::new(),
            |_, _| {},
            |_| panic!("must not start"),
        )
        .await
        .expect_err("must refuse");
    println!("{err}");
    assert!(
        matches!(err, RunnerError::Spec(ref m) if m.contains("/data")),
        "{err:?}"
    );
    assert!(!docker.container_exists(&spec.name).await.expect("exists?"));
}

#[tokio::test]
async fn missing_image_says_build_first() {
    let docker = connect().await;
    let gateway = Gateway::new("missing");
    let name = format!("cmm-runner-test-{}-missing", pid());
    let spec = JobContainer {
        name: name.clone(),
        image: format!("cmm-runner-test-{}-no-such-image:latest", pid()),
        user: TEST_UID_GID.into(),
        memory_bytes: 64 * 1024 * 1024,
        cpu_shares: 512,
        nano_cpus: None,
        pids_limit: 32,
        tmpfs_bytes: 1024 * 1024,
        gateway_dir: gateway.0.clone(),
        labels: BTreeMap::new(),
        program: Program::Worker,
    };
    let _cleanup = ContainerName(name);
    let err = docker
        .run_job(
            &spec,
            Vec::new(),
            LONG,
            CancellationToken::new(),
            |_, _| {},
            |_| {},
        )
        .await
        .expect_err("must fail");
    println!("{err}");
    assert!(matches!(err, RunnerError::ImageMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("docker:build"));
    assert!(
        docker
            .image(&spec.image)
            .await
            .expect("image lookup")
            .is_none()
    );
}

#[tokio::test]
async fn root_user_is_refused_before_the_engine() {
    let docker = connect().await;
    let image = TestImage::standard(&docker, "root").await;
    let gateway = Gateway::new("root");
    let (mut spec, _cleanup) = spec("root", &image, &gateway);
    spec.user = "0:0".into();
    let err = docker
        .run_job(
            &spec,
            Vec::new(),
            LONG,
            CancellationToken::new(),
            |_, _| {},
            |_| {},
        )
        .await
        .expect_err("must refuse");
    assert!(matches!(err, RunnerError::Spec(_)), "{err:?}");
    assert!(!docker.container_exists(&spec.name).await.expect("exists?"));
}

#[tokio::test]
async fn owned_containers_only_lists_ours() {
    let docker = connect().await;
    let image = TestImage::standard(&docker, "owned").await;
    let base = format!("cmm-runner-test-{}-owned", pid());
    let unlabelled = ContainerName(format!("{base}-plain"));
    let impostor = ContainerName(format!("{base}-impostor"));
    let ours = ContainerName(format!("{base}-ours"));
    let job_label = format!("{JOB_ID_LABEL}={base}");
    let create = |args: &[&str]| {
        let (ok, out) = docker_cli(args);
        assert!(ok, "docker create failed: {out}");
        out.trim().to_string()
    };
    create(&["create", "--name", &unlabelled.0, &image.tag]);
    // Carries our job label but not the managed label.
    create(&[
        "create",
        "--name",
        &impostor.0,
        "--label",
        &job_label,
        &image.tag,
    ]);
    let managed = format!("{MANAGED_LABEL}=true");
    let ours_id = create(&[
        "create", "--name", &ours.0, "--label", &managed, "--label", &job_label, &image.tag,
    ]);

    let all = docker.owned_containers(&[]).await.expect("list");
    let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    println!("owned: {names:?}");
    assert!(!names.contains(&unlabelled.0.as_str()));
    assert!(!names.contains(&impostor.0.as_str()));
    assert!(names.contains(&ours.0.as_str()));
    assert!(
        all.iter()
            .all(|c| c.labels.get(MANAGED_LABEL).map(String::as_str) == Some("true"))
    );

    let mine = docker
        .owned_containers(&[(JOB_ID_LABEL, base.as_str())])
        .await
        .expect("list by job");
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].id, ours_id);
    assert_eq!(mine[0].name, ours.0);
    assert_eq!(mine[0].state, "created");
    assert!(mine[0].created > 0);

    docker.kill_and_remove(&ours_id).await.expect("remove");
    docker
        .kill_and_remove(&ours_id)
        .await
        .expect("second remove is fine");
    assert!(!docker.container_exists(&ours_id).await.expect("exists?"));
    assert!(
        docker
            .container_exists(&unlabelled.0)
            .await
            .expect("exists?")
    );
}

/// A `docker-registry` listening on a loopback port, killed on drop.
struct Registry {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Registry {
    const BINARY: &str = "/usr/bin/docker-registry";

    fn start() -> Registry {
        assert!(
            Path::new(Self::BINARY).exists(),
            "{} is absent: install it with `apt-get install -y docker-registry` \
             (.ci/run does)",
            Self::BINARY
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cmm-runner-registry-{}-{n}", pid()));
        std::fs::create_dir_all(dir.join("data")).expect("registry dir");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .expect("registry config");
        let child = Command::new(Self::BINARY)
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = Registry { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registry.ready() {
            assert!(Instant::now() < deadline, "registry did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    fn ready(&self) -> bool {
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = conn.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes images by id or reference (force) on drop.
struct ImageIds(Vec<String>);

impl Drop for ImageIds {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = docker_cli(&["rmi", "-f", id]);
        }
    }
}

#[tokio::test]
async fn pull_from_loopback_registry_with_digest_pinning() {
    let registry = Registry::start();
    let docker = connect().await;
    let local = TestImage::build(&docker, "registry", &context("registry", "")).await;
    let mut ids = ImageIds(vec![local.id.clone()]);

    let repo = format!("127.0.0.1:{}/cmm-runner-test-{}", registry.port, pid());
    let remote_tag = format!("{repo}:v1");
    docker
        .tag_image(&local.tag, &repo, "v1")
        .await
        .expect("tag");
    docker.push_image(&remote_tag).await.expect("push");
    let pushed = docker
        .image(&remote_tag)
        .await
        .expect("inspect")
        .expect("present");
    let digest = pushed
        .repo_digests
        .iter()
        .find_map(|d| d.strip_prefix(&format!("{repo}@")))
        .expect("push recorded a repo digest")
        .to_string();
    println!("pushed {remote_tag} as {digest}");

    // Make the engine forget the image so the pull really fetches it.
    docker
        .remove_image(&remote_tag, false)
        .await
        .expect("untag");
    docker.remove_image(&local.tag, false).await.expect("untag");
    docker
        .remove_image(&format!("{repo}@{digest}"), false)
        .await
        .expect("drop digest ref");
    assert!(docker.image(&local.id).await.expect("lookup").is_none());

    let mut progress = Vec::new();
    let pulled = docker
        .pull_image(&remote_tag, |p| progress.push(p))
        .await
        .expect("pull by tag");
    println!("pull progress: {progress:?}");
    assert_eq!(pulled.id, local.id, "same image id after the round trip");
    assert!(pulled.repo_digests.contains(&format!("{repo}@{digest}")));
    assert!(progress.iter().any(|p| p.status.contains("Pull complete")));
    assert!(
        progress
            .iter()
            .any(|p| p.status.contains("Downloading") && p.total.is_some())
            || progress
                .iter()
                .any(|p| p.status.contains("Download complete"))
    );

    let pinned = format!("{repo}@{digest}");
    let again = docker
        .pull_image(&pinned, |_| {})
        .await
        .expect("pinned pull");
    assert_eq!(again.id, local.id);

    let pinned_with_tag = format!("{repo}:v1@{digest}");
    let tagged = docker
        .pull_image(&pinned_with_tag, |_| {})
        .await
        .expect("pinned pull with tag");
    assert_eq!(tagged.id, local.id);
    ids.0.push(pulled.id.clone());

    let wrong = format!("{repo}@sha256:{}", "0".repeat(64));
    let err = docker
        .pull_image(&wrong, |_| {})
        .await
        .expect_err("a digest the registry lacks must fail");
    println!("wrong digest: {err}");
    assert!(
        matches!(
            err,
            RunnerError::Pull { .. } | RunnerError::DigestMismatch { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&wrong));

    let nowhere = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        format!("127.0.0.1:{port}/nothing:v1")
    };
    let err = docker
        .pull_image(&nowhere, |_| {})
        .await
        .expect_err("no registry there");
    println!("no registry: {err}");
    assert!(matches!(err, RunnerError::Pull { .. }), "{err:?}");
    assert!(err.to_string().contains("may not be reachable"));

    let _ = docker.remove_image(&remote_tag, true).await;
    let _ = docker.remove_image(&pinned, true).await;
    drop(ids);
    drop(registry);
}

#[tokio::test]
async fn name_clash_leaves_the_other_container_alone() {
    let docker = connect().await;
    let image = TestImage::standard(&docker, "clash").await;
    let gateway = Gateway::new("clash");
    let (spec, cleanup) = spec("clash", &image, &gateway);
    let (ok, out) = docker_cli(&["create", "--name", &cleanup.0, &image.tag]);
    assert!(ok, "docker create failed: {out}");
    let err = docker
        .run_job(
            &spec,
            Vec::new(),
            LONG,
            CancellationToken::new(),
            |_, _| {},
            |_| {},
        )
        .await
        .expect_err("name is taken");
    println!("{err}");
    assert!(matches!(err, RunnerError::NameInUse { .. }), "{err:?}");
    assert!(
        docker.container_exists(&cleanup.0).await.expect("exists?"),
        "the existing container must not be touched"
    );
}

/// The commands, end to end: `docker:build` makes the job image from what
/// the binary carries, the test pushes it to a loopback registry and forgets
/// it, and `docker:pull` of the digest-pinned `docker.image` fetches exactly
/// that image; a pin to another digest fails.
#[test]
fn docker_pull_fetches_the_pinned_job_image_from_a_registry() {
    let registry = Registry::start();
    let home = tempfile::tempdir().expect("home");
    let cmm = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_claude-max-market"))
            .arg("--home")
            .arg(home.path())
            .args(args)
            .output()
            .expect("running claude-max-market");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let repo = format!("127.0.0.1:{}/cmm-job-{}", registry.port, pid());
    let tag = format!("{repo}:pull-test");
    let (code, stdout, stderr) = cmm(&["docker:build", "--tag", &tag]);
    assert_eq!(code, Some(0), "{stderr}");
    let built = stdout.trim().to_owned();
    assert!(
        built.starts_with("sha256:"),
        "docker:build prints the image id: {stdout}"
    );
    assert!(
        stderr.contains("Step 1/"),
        "build progress on stderr: {stderr}"
    );
    // By reference, never by id: the same content built elsewhere (the
    // CLI tests' tag, a real install's) shares the id and must survive.
    let mut refs = ImageIds(vec![tag.clone()]);
    let (ok, out) = docker_cli(&["push", &tag]);
    assert!(ok, "{out}");
    let (ok, out) = docker_cli(&["inspect", "--format", "{{json .RepoDigests}}", &tag]);
    assert!(ok, "{out}");
    let digests: Vec<String> = serde_json::from_str(out.trim()).expect("repo digests");
    let pinned = digests
        .into_iter()
        .find(|d| d.starts_with(&repo))
        .expect("pushed digest");
    let (ok, out) = docker_cli(&["rmi", &tag]);
    assert!(ok, "{out}");
    // Removing the last tag may already have removed the digest reference.
    let _ = docker_cli(&["rmi", &pinned]);
    let (gone, _) = docker_cli(&["inspect", &pinned]);
    assert!(!gone, "the pinned reference must be gone before the pull");

    let set = |image: &str| {
        let (code, _, stderr) = cmm(&["config", "--set", &format!("docker.image={image}")]);
        assert_eq!(code, Some(0), "{stderr}");
    };
    set(&pinned);
    let (code, stdout, stderr) = cmm(&["--json", "docker:pull"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("--json");
    assert_eq!(
        doc["id"],
        built.as_str(),
        "the pull brought back the built image"
    );
    assert_eq!(doc["pinned"], pinned.split_once('@').unwrap().1);
    refs.0.push(pinned.clone());

    let wrong = format!("{repo}@sha256:{}", "1".repeat(64));
    set(&wrong);
    let (code, _, stderr) = cmm(&["docker:pull"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&wrong),
        "the error names the reference: {stderr}"
    );
    drop(refs);
    drop(registry);
}
