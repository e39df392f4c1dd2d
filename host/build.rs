//! Builds the three things the host carries inside itself, each from its own
//! workspace and in its own target directory (so the nested cargo never waits
//! on the outer one's lock), and puts them in OUT_DIR:
//!
//! - the default policy plugins in `plugins/`, for `wasm32-wasip2`, which
//!   `policy::defaults` embeds;
//! - the in-container job worker in `docker/worker/`, a static binary for
//!   `x86_64-unknown-linux-musl`, which `runner::job_image` embeds with the
//!   Dockerfile so `docker:build` needs nothing from the network;
//! - the in-container relay in `docker/relay/`, another static musl binary,
//!   which `runner::relay` embeds and each command job gets a copy of.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGIN_TARGET: &str = "wasm32-wasip2";
const PLUGINS: [&str; 4] = ["approval", "limits", "pricing", "compliance"];
const WORKER_TARGET: &str = "x86_64-unknown-linux-musl";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    let plugins = manifest_dir.join("../plugins");
    let mut watched = vec![
        plugins.join("Cargo.toml"),
        plugins.join("Cargo.lock"),
        plugins.join(".cargo/config.toml"),
        plugins.join("sdk"),
        manifest_dir.join("../wit"),
    ];
    watched.extend(PLUGINS.map(|name| plugins.join(name)));
    let worker = manifest_dir.join("../docker/worker");
    let relay = manifest_dir.join("../docker/relay");
    for crate_dir in [&worker, &relay] {
        watched.extend(["Cargo.toml", "Cargo.lock", "src"].map(|part| crate_dir.join(part)));
    }
    for path in watched {
        println!("cargo::rerun-if-changed={}", path.display());
    }

    require_target(PLUGIN_TARGET, "the default policy plugins");
    require_target(WORKER_TARGET, "the in-container job worker and relay");

    let plugin_target_dir = out_dir.join("plugins-target");
    cargo_build(
        &plugins,
        PLUGIN_TARGET,
        &plugin_target_dir,
        "the default policy plugins",
    );
    let embedded = out_dir.join("plugins");
    std::fs::create_dir_all(&embedded).expect("creating OUT_DIR/plugins");
    for name in PLUGINS {
        let built = release_dir(&plugin_target_dir, PLUGIN_TARGET).join(format!("{name}.wasm"));
        copy(&built, &embedded.join(format!("{name}.wasm")));
    }

    for (crate_dir, binary, what) in [
        (&worker, "cmm-worker", "the job worker"),
        (&relay, "cmm-relay", "the job relay"),
    ] {
        let target_dir = out_dir.join(format!("{binary}-target"));
        cargo_build(crate_dir, WORKER_TARGET, &target_dir, what);
        copy(
            &release_dir(&target_dir, WORKER_TARGET).join(binary),
            &out_dir.join(binary),
        );
    }
}

fn release_dir(target_dir: &Path, target: &str) -> PathBuf {
    target_dir.join(target).join("release")
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
}

/// Adds a missing target with rustup (what `rustup target add` would do
/// by hand, for the toolchain building this), so `cargo install` is the
/// whole of installing. Without rustup, or when that fails, stops the build
/// with the exact fix instead of a wall of "can't find crate for `std`".
fn require_target(target: &str, what: &str) {
    if target_installed(target) {
        return;
    }
    let added = env::var("RUSTUP_TOOLCHAIN").ok().is_some_and(|toolchain| {
        Command::new("rustup")
            .args(["target", "add", "--toolchain", &toolchain, target])
            .status()
            .is_ok_and(|status| status.success())
    });
    if added && target_installed(target) {
        println!("cargo:warning=added the {target} target with rustup ({what} needs it)");
        return;
    }
    panic!(
        "\n\n{what} needs the {target} target, which is not installed.\n\
         Install it with:\n\n    rustup target add {target}\n\nthen build again.\n"
    );
}

fn target_installed(target: &str) -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("running rustc --print sysroot");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target)
        .exists()
}

fn cargo_build(workspace: &Path, target: &str, target_dir: &Path, what: &str) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            target,
            "--target-dir",
        ])
        .arg(target_dir);
    // The outer build's flags and wrappers are for the host target; the
    // nested workspaces set their own profiles.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_PROFILE_RELEASE_LTO",
        "CARGO_PROFILE_RELEASE_OPT_LEVEL",
        "CARGO_PROFILE_RELEASE_CODEGEN_UNITS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo for {what}: {e}"));
    if !status.success() {
        panic!(
            "building {what} in {} failed (see the errors above)",
            workspace.display()
        );
    }
}
