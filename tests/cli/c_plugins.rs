//! Policies written in C, built as an author would: Debian's clang-19 with
//! its wasm32 target and wasi-libc, and tools/c-plugin (wit-bindgen's C
//! generator and wit-component with the WASI preview1 adapter). The example
//! in examples/c-approval goes through its cases, a signed bundle, install
//! and decisions by the real binary under the node's default limits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::images::cache;
use crate::support::{Home, repo, role};

/// Debian bookworm's clang that knows wasm32 and finds wasi-libc's sysroot.
const CLANG: &str = "clang-19";
const PACKAGES: &str = "clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc";

/// The flags examples/c-approval/README.md gives: a reactor (a library the
/// host calls into, not a program with a main), small, warnings as errors,
/// and without DWARF, which would triple the size.
const CFLAGS: &[&str] = &[
    "--target=wasm32-wasi",
    "-mexec-model=reactor",
    "-Os",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wl,--strip-debug",
];

fn hash_files(hash: &mut Sha256, dir: &Path, names: &[&str]) {
    for name in names {
        hash.update(name);
        hash.update(
            std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}")),
        );
    }
}

/// The hex digest of tools/c-plugin's sources and lock file: what decides
/// what the tool does.
fn tool_digest() -> String {
    let mut hash = Sha256::new();
    hash_files(
        &mut hash,
        &repo("tools/c-plugin"),
        &["Cargo.toml", "Cargo.lock", "src/main.rs"],
    );
    hex::encode(&hash.finalize()[..8])
}

/// tools/c-plugin, built once per content and kept in the test cache: a
/// fresh clone on the same machine, as CI makes, does not build it again.
fn tool() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = cache().join("c-plugin").join(tool_digest());
        if bin.exists() {
            return bin;
        }
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-plugin-tool");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Unoptimised: it builds in a third of the time, and runs in
        // milliseconds on a plugin all the same.
        let status = Command::new(cargo)
            .current_dir(repo("tools/c-plugin"))
            .args(["build", "--locked", "--target-dir"])
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("running cargo to build tools/c-plugin");
        assert!(status.success(), "building tools/c-plugin failed");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        let partial = bin.with_extension("partial");
        std::fs::copy(target.join("debug/cmm-c-plugin"), &partial).unwrap();
        std::fs::rename(&partial, &bin).unwrap();
        bin
    })
}

fn clang_version() -> String {
    let out = Command::new(CLANG)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {CLANG} ({e}); install {PACKAGES}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed (are {PACKAGES} installed?): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The component for `app.c` in `dir` targeting `world`, built as the
/// example's README says, once per content (sources, WIT, flags, clang and
/// tool versions) and kept in the cache.
pub(crate) fn component(dir: &Path, world: &str) -> PathBuf {
    let wit = repo("wit");
    let mut hash = Sha256::new();
    hash.update(tool_digest());
    hash.update(clang_version());
    hash.update(CFLAGS.join(" "));
    hash.update(world);
    hash_files(&mut hash, dir, &["app.c"]);
    hash_files(&mut hash, &wit, &["policy.wit"]);
    let out = cache()
        .join("c-components")
        .join(format!("{}.wasm", hex::encode(&hash.finalize()[..8])));
    if out.exists() {
        return out;
    }
    let work = tempfile::tempdir().unwrap();
    let gen_dir = work.path().join("gen");
    run(
        Command::new(tool())
            .arg("bindings")
            .arg(&wit)
            .arg(world)
            .arg(&gen_dir),
        "cmm-c-plugin bindings",
    );
    let stem = world.replace('-', "_");
    let module = work.path().join("app.wasm");
    run(
        Command::new(CLANG)
            .args(CFLAGS)
            .arg("-I")
            .arg(&gen_dir)
            .arg("-o")
            .arg(&module)
            .arg(dir.join("app.c"))
            .arg(gen_dir.join(format!("{stem}.c")))
            .arg(gen_dir.join(format!("{stem}_component_type.o"))),
        CLANG,
    );
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let partial = out.with_extension("partial");
    run(
        Command::new(tool())
            .arg("component")
            .arg(&module)
            .arg(&partial),
        "cmm-c-plugin component",
    );
    std::fs::rename(&partial, &out).unwrap();
    out
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_c_approval_policy_passes_its_cases_and_decides_from_a_signed_bundle() {
    let example = repo("examples/c-approval");
    let wasm = component(&example, "approval-policy");
    let home = Home::opted_in();
    let cases = example.join("cases.toml");

    let tested = home.run(&["policy", "test", arg(&wasm), "--cases", arg(&cases)]);
    assert_eq!(tested.code, 0, "{}{}", tested.stdout, tested.stderr);
    assert!(
        tested.stdout.contains("9 passed, 0 failed"),
        "{}",
        tested.stdout
    );

    let installed = home.install_example_bundle(&example, &wasm);
    assert!(
        installed.stdout.contains("installed c-approval@1"),
        "{}",
        installed.stdout
    );

    let (code, doc) = home.dry_run(&["--prompt", "hi", "--budget-tokens", "5000"]);
    assert_eq!(code, 0, "{doc:#}");
    let approval = role(&doc, "approval");
    assert_eq!(approval["plugin"]["bundle"], "c-approval@1", "{approval}");
    assert_eq!(approval["outcome"], "allow", "{approval}");

    let (code, doc) = home.dry_run(&["--prompt", "hi", "--budget-tokens", "150000"]);
    assert_eq!(code, 0, "{doc:#}");
    let approval = role(&doc, "approval");
    assert_eq!(approval["outcome"], "ask", "{approval}");
    assert!(
        approval["reason"]
            .as_str()
            .unwrap()
            .contains("asks for 150000 tokens, more than 100000 (plugin.askAboveTokens)"),
        "{approval}"
    );

    // The bundle's plugin.images lets in only the job image.
    let (code, doc) = home.dry_run(&["--image", "someone-else/agent:1", "--", "true"]);
    assert_eq!(code, 3, "a denied job exits 3: {doc:#}");
    let approval = role(&doc, "approval");
    assert_eq!(approval["outcome"], "deny", "{approval}");
    assert_eq!(
        approval["reason"],
        "image someone-else/agent:1 is not one of claude-max-market-job (plugin.images)",
        "{approval}"
    );
}
