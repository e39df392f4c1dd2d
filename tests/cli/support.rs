//! Test support: a temporary home, a command for the real binary, and the
//! adversarial fixture plugins, built once per test run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use tempfile::TempDir;

/// A temporary data folder and the binary pointed at it.
pub struct Home {
    dir: TempDir,
}

/// What one run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().expect("the binary exited, not killed"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// stdout parsed as the one JSON document `--json` promises.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Home {
    /// Every audit row, oldest first, as `audit --json` lists them.
    pub fn audit_entries(&self) -> Vec<Value> {
        let (code, mut doc) = self.json(&["audit"]);
        assert_eq!(code, 0, "{doc:#}");
        match doc["entries"].take() {
            Value::Array(entries) => entries,
            other => panic!("audit --json lists no entries: {other:#}"),
        }
    }

    /// The audit rows of one `kind`, oldest first.
    pub fn audit_of(&self, kind: &str) -> Vec<Value> {
        let mut entries = self.audit_entries();
        entries.retain(|e| e["kind"] == kind);
        entries
    }

    /// The `kind` of every audit row, oldest first.
    pub fn audit_kinds(&self) -> Vec<String> {
        self.audit_entries()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("creating a temporary home"),
        }
    }

    /// A home whose owner accepted the terms and opted in to Claude jobs.
    pub fn opted_in() -> Home {
        let home = Home::new();
        home.ok(&["opt-in", "--accept-terms", "--claude-jobs"]);
        home
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_claude-max-market"));
        // The caller's API key must not leak into tests that expect none.
        cmd.arg("--home")
            .arg(self.path())
            .env_remove("CMM_HOME")
            .env_remove("ANTHROPIC_API_KEY")
            .env("NO_COLOR", "1");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.command()
            .args(args)
            .output()
            .expect("running the binary")
            .into()
    }

    /// Runs and requires exit code 0.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(
            run.code, 0,
            "{args:?} failed:\nstdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        run
    }

    /// Runs with --json and returns the exit code and the document.
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        (run.code, run.json())
    }

    /// `execute --dry-run --json` with `args`: the exit code and the decision.
    pub fn dry_run(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["execute", "--dry-run"];
        all.extend_from_slice(args);
        self.json(&all)
    }

    /// Rewrites one audit row's details as an attacker holding the file
    /// would.
    pub fn forge_audit_row(&self, seq: i64) {
        self.tamper_audit(&format!(
            "UPDATE audit_log SET details = '{{\"forged\":true}}' WHERE seq = {seq}"
        ));
    }

    /// Runs `sql` on the state file as an attacker holding it would: around
    /// the audit log's append-only triggers, which they can drop.
    pub fn tamper_audit(&self, sql: &str) {
        let db = rusqlite::Connection::open(self.path().join("state.db")).unwrap();
        let triggers: Vec<String> = db
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for t in triggers {
            db.execute_batch(&format!("DROP TRIGGER {t}")).unwrap();
        }
        db.execute_batch(sql).unwrap();
    }

    /// Installs an example plugin (`examples/NAME`) as a signed bundle: its
    /// bundle.toml with `component`, the example built, as approval.wasm.
    pub fn install_example_bundle(&self, example: &Path, component: &Path) -> Run {
        let desk = tempfile::tempdir().unwrap();
        let src = desk.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::copy(example.join("bundle.toml"), src.join("bundle.toml")).unwrap();
        std::fs::copy(component, src.join("approval.wasm")).unwrap();
        self.install_signed_bundle(&src)
    }

    /// Builds the bundle from `source` (a folder holding bundle.toml, or the
    /// file), signs it with a new key, trusts that key and installs it, as
    /// an operator would; returns what `install` printed.
    pub fn install_signed_bundle(&self, source: &Path) -> Run {
        let desk = tempfile::tempdir().unwrap();
        let key = desk.path().join("ops").display().to_string();
        let bundle = desk.path().join("signed.cmmpol").display().to_string();
        self.ok(&["policy", "keygen", "--out", &key]);
        self.ok(&[
            "policy",
            "build",
            source.to_str().unwrap(),
            "--out",
            &bundle,
        ]);
        self.ok(&["policy", "sign", &bundle, "--key", &format!("{key}.pem")]);
        self.ok(&["policy", "trust", "add", &format!("{key}.pub")]);
        self.ok(&["policy", "install", &bundle])
    }

    pub fn set(&self, assignments: &[&str]) {
        let mut args = vec!["config"];
        for a in assignments {
            args.extend(["--set", a]);
        }
        self.ok(&args);
    }
}

/// The path of an adversarial fixture plugin (tests/fixtures/plugins), built
/// for wasm32-wasip2 on first use.
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(build_fixtures);
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "fixture {} was not built", path.display());
    path
}

fn build_fixtures() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/plugins");
    build_components(&workspace, "fixture-plugins")
}

/// Builds the plugin crate or workspace at `dir` for wasm32-wasip2 into a
/// target folder named `target_name` under the tests' temp dir, and returns
/// the folder the components land in.
pub fn build_components(dir: &Path, target_name: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join(target_name);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running cargo to build the fixture plugins");
    assert!(
        status.success(),
        "building the plugins in {} failed; is the target installed? (rustup target add wasm32-wasip2)",
        dir.display()
    );
    target.join("wasm32-wasip2/release")
}

/// A path in the repository, from its root.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The decision of one role in an `execute --dry-run --json` document.
pub fn role<'a>(doc: &'a Value, role: &str) -> &'a Value {
    doc["roles"]
        .as_array()
        .expect("roles is an array")
        .iter()
        .find(|r| r["role"] == role)
        .unwrap_or_else(|| panic!("no {role} decision in {doc:#}"))
}
