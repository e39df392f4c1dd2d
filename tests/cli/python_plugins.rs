//! Policies written in Python, built with componentize-py from PyPI as an
//! author would, and run by the real binary under the node's default limits:
//! the example in examples/python-approval through test, bundle, signature,
//! install and a decision; a Python exception reported with its traceback;
//! and the limit that was hit named for what it is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::images::cache;
use crate::support::{Home, repo, role};

/// Pinned, so a new release cannot change what the tests build.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// componentize-py installed once into the test cache.
fn componentize_py() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = cache().join(format!("pip-{}", COMPONENTIZE_PY.replace(['=', '.'], "_")));
        if !dir.join(".complete").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            let status = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--target"])
                .arg(&dir)
                .arg(COMPONENTIZE_PY)
                .status()
                .expect("running python3 -m pip (install python3-pip)");
            assert!(
                status.success(),
                "pip install {COMPONENTIZE_PY} failed; is PyPI reachable?"
            );
            std::fs::write(dir.join(".complete"), "").unwrap();
        }
        dir
    })
}

/// The component for `app.py` in `dir` targeting `world`, built once per
/// content (sources, WIT, componentize-py version) and kept in the cache.
pub(crate) fn component(dir: &Path, world: &str) -> PathBuf {
    let wit = repo("wit");
    let mut hash = Sha256::new();
    hash.update(COMPONENTIZE_PY);
    hash.update(world);
    hash.update(std::fs::read(dir.join("app.py")).unwrap());
    hash.update(std::fs::read(wit.join("policy.wit")).unwrap());
    let out = cache()
        .join("python-components")
        .join(format!("{}.wasm", hex::encode(&hash.finalize()[..8])));
    if out.exists() {
        return out;
    }
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let partial = out.with_extension("partial");
    let built = Command::new("python3")
        .env("PYTHONPATH", componentize_py())
        .args([
            "-c",
            "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
            "-d",
        ])
        .arg(&wit)
        .args(["-w", world, "componentize", "-p"])
        .arg(dir)
        .args(["app", "-o"])
        .arg(&partial)
        .output()
        .expect("running componentize-py");
    assert!(
        built.status.success(),
        "componentize-py failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::rename(&partial, &out).unwrap();
    out
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_python_approval_policy_passes_its_cases_and_decides_from_a_signed_bundle() {
    let example = repo("examples/python-approval");
    let wasm = component(&example, "approval-policy");
    let home = Home::opted_in();
    let cases = example.join("cases.toml");

    // The node's default limits fit an ordinary Python policy.
    let tested = home.run(&["policy", "test", arg(&wasm), "--cases", arg(&cases)]);
    assert_eq!(tested.code, 0, "{}{}", tested.stdout, tested.stderr);
    assert!(
        tested.stdout.contains("5 passed, 0 failed"),
        "{}",
        tested.stdout
    );

    let installed = home.install_example_bundle(&example, &wasm);
    assert!(
        installed.stdout.contains("installed python-approval@1"),
        "{}",
        installed.stdout
    );

    let (code, doc) = home.dry_run(&["--prompt", "hi", "--budget-tokens", "5000"]);
    assert_eq!(code, 0, "{doc:#}");
    let approval = role(&doc, "approval");
    assert_eq!(
        approval["plugin"]["bundle"], "python-approval@1",
        "{approval}"
    );
    assert_eq!(approval["outcome"], "allow", "{approval}");
    let (code, doc) = home.dry_run(&["--prompt", "hi", "--budget-tokens", "150000"]);
    assert_eq!(code, 0, "{doc:#}");
    let approval = role(&doc, "approval");
    assert_eq!(approval["outcome"], "ask", "{approval}");
    assert!(
        approval["reason"]
            .as_str()
            .unwrap()
            .contains("more than 100000"),
        "{approval}"
    );

    // Below what the interpreter starts with, the cap is named as such.
    home.set(&["policy.memoryMiB=4"]);
    let squeezed = home.run(&["policy", "test", arg(&wasm), "--cases", arg(&cases)]);
    assert_eq!(squeezed.code, 1);
    assert!(
        squeezed
            .stderr
            .contains("MiB of memory, more than the 4 MiB policy.memoryMiB allows"),
        "{}",
        squeezed.stderr
    );
}

#[test]
fn a_python_exception_is_reported_with_its_traceback() {
    let wasm = component(&repo("tests/fixtures/python/raises"), "approval-policy");
    let home = Home::opted_in();
    let cases = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cases.path(),
        "[[case]]\nname = \"any job\"\n[case.expect]\ndecision = \"deny\"\nerror_class = \"trap\"\nreason_contains = \"ValueError: the allow-list is unreadable\"\n",
    )
    .unwrap();
    let run = home.run(&["policy", "test", arg(&wasm), "--cases", arg(cases.path())]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}
