//! Test images, built offline from this machine's own programs (no
//! registry is reachable) and kept in the Docker Engine between runs: each
//! is tagged with a hash of what went into it and built only when no image
//! of that tag exists. Downloads from PyPI (the official `anthropic` SDK,
//! the wheel that carries Claude Code) are pinned and kept in
//! `~/.cache/claude-max-market-tests` (or `$CMM_TEST_CACHE`). A missing tool
//! or an unreachable PyPI fails the test with what to install; it never
//! skips it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use claude_max_market::agent::rootfs::{Rootfs, Source};
use claude_max_market::runner::{BuildContext, Docker};
use sha2::{Digest, Sha256};

use crate::support::Home;

/// The versions the tests pin, so a new release upstream cannot change
/// what they run against.
const ANTHROPIC_SDK: &str = "anthropic==2.17.0";
const CLAUDE_AGENT_SDK: &str = "claude-agent-sdk==0.2.189";

/// Programs the command-job tests run: a shell and the basics.
const TOOLS: [&str; 16] = [
    "sh", "cat", "ls", "echo", "rm", "mkdir", "dd", "sleep", "seq", "wc", "head", "touch", "ln",
    "test", "true", "printf",
];

/// Outside the checkout, so a fresh clone on the same machine (as CI makes)
/// downloads nothing again; `CMM_TEST_CACHE` moves it.
pub fn cache() -> PathBuf {
    let dir = std::env::var_os("CMM_TEST_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| Path::new(&home).join(".cache/claude-max-market-tests"))
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("../cmm-test-cache"));
    std::fs::create_dir_all(&dir).expect("creating the test cache");
    dir
}

/// An image of this machine's shell and core tools.
pub fn tools() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let mut fs = Rootfs::default();
        for name in TOOLS {
            fs.program(name).expect("the tools the job tests need");
        }
        build_cached("cmm-test-tools", &fs, "")
    })
}

/// An image with Debian's python3 and the official `anthropic` SDK.
pub fn python_sdk() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let packages = pip_install(ANTHROPIC_SDK);
        let mut fs = Rootfs::default();
        let python = Path::new("/usr/bin/python3.11");
        assert!(
            python.exists(),
            "the Python SDK image is built from Debian's python3.11: apt-get install python3"
        );
        fs.executable(python, "/usr/bin/python3.11").unwrap();
        fs.symlink("/usr/bin/python3", "python3.11");
        let keep = |path: &Path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            !matches!(
                name.as_ref(),
                "__pycache__"
                    | "test"
                    | "tests"
                    | "idlelib"
                    | "tkinter"
                    | "turtledemo"
                    | "ensurepip"
                    | "lib2to3"
                    | "pydoc_data"
            )
        };
        fs.tree(
            Path::new("/usr/lib/python3.11"),
            "/usr/lib/python3.11",
            &keep,
        )
        .unwrap();
        fs.tree(&packages, "/usr/lib/python3/dist-packages", &keep)
            .unwrap();
        build_cached(
            "cmm-test-python-sdk",
            &fs,
            "ENV PYTHONDONTWRITEBYTECODE=1\n",
        )
    })
}

/// Claude Code's image, as `docker:build --agent claude-code` makes it,
/// from the pinned wheel.
pub fn claude_code() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let wheel = pip_download(CLAUDE_AGENT_SDK, "manylinux_2_17_x86_64");
        let bytes = std::fs::read(&wheel).expect("reading the cached wheel");
        let digest = hex::encode(&Sha256::digest(&bytes)[..6]);
        let tag = format!("cmm-test-claude-code:{digest}");
        if !exists(&tag) {
            Home::new().ok(&[
                "docker:build",
                "--agent",
                "claude-code",
                "--wheel",
                wheel.to_str().unwrap(),
                "--tag",
                &tag,
            ]);
        }
        tag
    })
}

/// `package` installed for Python 3.11 on x86_64 into a cached folder.
fn pip_install(package: &str) -> PathBuf {
    let dir = cache().join(format!("pip-{}", package.replace(['=', '.'], "_")));
    if dir.join(".complete").exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let target = dir.to_str().expect("a UTF-8 cache path");
    pip(
        &[
            "install",
            "--quiet",
            "--no-compile",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux2014_x86_64",
            "--target",
            target,
        ],
        package,
    );
    std::fs::write(dir.join(".complete"), "").unwrap();
    dir
}

/// The wheel of `package` for `platform`, downloaded once.
fn pip_download(package: &str, platform: &str) -> PathBuf {
    let dir = cache().join("wheels");
    let name = package.split("==").next().unwrap().replace('-', "_");
    let version = package.split("==").nth(1).unwrap();
    let found = |dir: &Path| {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let file = p.file_name().unwrap_or_default().to_string_lossy();
                file.starts_with(&format!("{name}-{version}-")) && file.ends_with(".whl")
            })
    };
    if let Some(wheel) = found(&dir) {
        return wheel;
    }
    let target = dir.to_str().expect("a UTF-8 cache path");
    pip(
        &[
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            platform,
            "-d",
            target,
        ],
        package,
    );
    found(&dir).expect("pip downloaded the wheel")
}

/// `python3 -m pip ARGS PACKAGE`, which must succeed.
fn pip(args: &[&str], package: &str) {
    let status = Command::new("python3")
        .args(["-m", "pip"])
        .args(args)
        .arg(package)
        .status()
        .expect("running python3 -m pip (install python3-pip)");
    assert!(
        status.success(),
        "pip {} {package} failed; is PyPI reachable?",
        args[0]
    );
}

fn exists(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", tag])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds `fs` as `<name>:<hash of its contents>` unless that image exists.
fn build_cached(name: &str, fs: &Rootfs, extra: &str) -> String {
    let dockerfile = format!(
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/bin:/usr/bin:/bin\n{extra}USER 65532:65532\n"
    );
    let mut hasher = Sha256::new();
    hasher.update(&dockerfile);
    let mut context = BuildContext::new().file("Dockerfile", dockerfile.into_bytes(), 0o644);
    for (path, item) in fs.items() {
        hasher.update(format!("{path} {:o}\n", item.mode));
        let inside = format!("rootfs{path}");
        context = match &item.source {
            Source::Host(host) => {
                let meta = std::fs::metadata(host).unwrap();
                hasher.update(format!("{} {:?}\n", meta.len(), meta.modified().ok()));
                context.host_file(inside, host.clone(), item.mode)
            }
            Source::Bytes(bytes) => {
                hasher.update(bytes);
                context.file(inside, bytes.clone(), item.mode)
            }
            Source::Symlink(target) => {
                hasher.update(target);
                context.symlink(inside, target.clone())
            }
        };
    }
    let tag = format!("{name}:{}", &hex::encode(hasher.finalize())[..12]);
    if exists(&tag) {
        return tag;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(async {
            let docker = Docker::connect().await?;
            docker.build_image(&tag, false, &context, |_| {}).await
        })
        .unwrap_or_else(|e| panic!("building {tag}: {e}"));
    tag
}
