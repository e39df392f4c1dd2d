//! Builds the default policy plugins in `plugins/` for `wasm32-wasip2` and
//! puts them in OUT_DIR, where `policy::defaults` embeds them. They get their
//! own target directory so the nested cargo never waits on the outer one's lock.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PLUGINS: [&str; 4] = ["approval", "limits", "pricing", "compliance"];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let plugins = manifest_dir.join("../plugins");
    println!(
        "cargo::rerun-if-changed={}",
        plugins.join("Cargo.toml").display()
    );
    println!(
        "cargo::rerun-if-changed={}",
        plugins.join("Cargo.lock").display()
    );
    for name in PLUGINS {
        println!("cargo::rerun-if-changed={}", plugins.join(name).display());
    }
    println!(
        "cargo::rerun-if-changed={}",
        manifest_dir.join("../wit").display()
    );

    require_target();
    let target_dir = out_dir.join("plugins-target");
    build_plugins(&plugins, &target_dir);
    let embedded = out_dir.join("plugins");
    std::fs::create_dir_all(&embedded).expect("creating OUT_DIR/plugins");
    for name in PLUGINS {
        let built = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{name}.wasm"));
        std::fs::copy(&built, embedded.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    }
}

/// Stops the build with the exact fix when the wasm target is not installed,
/// instead of a wall of "can't find crate for `std`" errors.
fn require_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("running rustc --print sysroot");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if !Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .exists()
    {
        panic!(
            "\n\nThe default policy plugins are built for {TARGET}, which is not installed.\n\
             Install it with:\n\n    rustup target add {TARGET}\n\nthen build again.\n"
        );
    }
}

fn build_plugins(plugins: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(plugins)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(target_dir);
    // The outer build's flags and wrappers are for the host target, not wasm.
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
    let status = cmd.status().expect("running cargo for the policy plugins");
    if !status.success() {
        panic!(
            "building the default policy plugins in {} failed (see the errors above)",
            plugins.display()
        );
    }
}
