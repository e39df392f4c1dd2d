//! Signed policy bundles end to end through the binary: an author's first
//! hour (scaffold → build → test → bundle → sign → trust → install → a
//! decision changes), every refusal leaving the active policy in place, and
//! installing and updating over HTTP from a loopback server with ETags.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::support::{Home, build_components, fixture, role};

/// A folder for an author's files (keys, sources, bundles).
struct Desk {
    dir: tempfile::TempDir,
    home: Home,
}

impl Desk {
    fn new() -> Desk {
        Desk {
            dir: tempfile::tempdir().unwrap(),
            home: Home::opted_in(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A signing key pair NAME.pem / NAME.pub.
    fn keygen(&self, name: &str) {
        self.home
            .ok(&["policy", "keygen", "--out", &self.arg(name)]);
    }

    /// Builds bundle `out` holding `component` for `role`, with extra
    /// bundle.toml lines, and signs it with each of `keys`.
    fn bundle(
        &self,
        out: &str,
        name: &str,
        revision: u32,
        parts: &[(&str, &Path)],
        extra: &str,
        keys: &[&str],
    ) {
        let src = self.path(&format!("{out}.src"));
        std::fs::create_dir_all(&src).unwrap();
        let mut toml = format!("name = \"{name}\"\nrevision = {revision}\n{extra}\n");
        for (role, component) in parts {
            toml.push_str(&format!(
                "[roles.{role}]\ncomponent = \"{}\"\n",
                component.display()
            ));
        }
        std::fs::write(src.join("bundle.toml"), toml).unwrap();
        self.home.ok(&[
            "policy",
            "build",
            &src.display().to_string(),
            "--out",
            &self.arg(out),
        ]);
        for key in keys {
            self.home.ok(&[
                "policy",
                "sign",
                &self.arg(out),
                "--key",
                &self.arg(&format!("{key}.pem")),
            ]);
        }
    }

    /// `policy install` that must be refused at `check`; returns stderr.
    fn refused(&self, source: &str, check: &str) -> String {
        let run = self.home.run(&["policy", "install", source]);
        assert_eq!(
            run.code, 1,
            "install of {source} should fail:\n{}",
            run.stdout
        );
        let needle = format!("refused at the {check} check");
        assert!(
            run.stderr.contains(&needle),
            "{needle:?} not in:\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("the active policy is unchanged"),
            "{}",
            run.stderr
        );
        run.stderr
    }

    /// The active limits plugin's bundle label and digest.
    fn active_limits(&self) -> (Value, Value) {
        let (code, doc) = self.home.json(&["policy", "list"]);
        assert_eq!(code, 0);
        let limits = doc
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["role"] == "limits")
            .unwrap()
            .clone();
        assert_eq!(limits["state"], "ok", "{limits:#}");
        (
            limits["plugin"]["bundle"].clone(),
            limits["plugin"]["digest"].clone(),
        )
    }
}

#[test]
fn an_authors_first_hour_changes_a_decision() {
    let desk = Desk::new();
    let crate_dir = desk.path("gatekeeper");
    desk.home.ok(&[
        "policy",
        "new",
        "approval",
        "gatekeeper",
        "--dir",
        &crate_dir.display().to_string(),
    ]);
    // The author's change: haiku only, whatever the node allows.
    let lib = crate_dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let rule = "if !rules.allowed_models.contains(&model) {";
    assert!(source.contains(rule), "the template is the default plugin");
    std::fs::write(
        &lib,
        source.replace(
            rule,
            "if !rules.allowed_models.contains(&model) || model != \"claude-haiku-4-5\" {",
        ),
    )
    .unwrap();

    let component = build_components(&crate_dir, "scaffolded-plugins").join("gatekeeper.wasm");
    let component_arg = component.display().to_string();

    let wrong = desk.path("wrong.toml");
    std::fs::write(
        &wrong,
        "[[case]]\nname = \"sonnet still runs\"\n[case.config]\n\"compliance.requireApproval\" = \"false\"\n[case.expect]\ndecision = \"allow\"\n",
    )
    .unwrap();
    let failed = desk.home.run(&[
        "policy",
        "test",
        &component_arg,
        "--cases",
        &wrong.display().to_string(),
    ]);
    assert_eq!(failed.code, 1, "{}", failed.stdout);
    assert!(
        failed.stdout.contains("FAIL sonnet still runs"),
        "{}",
        failed.stdout
    );
    assert!(
        failed.stdout.contains("expected allow, got deny"),
        "{}",
        failed.stdout
    );

    let bench = desk.home.ok(&[
        "--json",
        "policy",
        "bench",
        &component_arg,
        "--iterations",
        "20",
    ]);
    let bench: Value = serde_json::from_str(&bench.stdout).unwrap();
    assert_eq!(bench[0]["role"], "approval");
    assert!(bench[0]["warm_p50_us"].as_f64().unwrap() > 0.0);

    let (_, before) = desk
        .home
        .dry_run(&["--prompt", "hi", "--model", "claude-sonnet-4-5"]);
    assert_eq!(role(&before, "approval")["outcome"], "ask", "{before:#}");

    desk.keygen("ops");
    desk.bundle(
        "gatekeeper.cmmpol",
        "gatekeeper",
        1,
        &[("approval", &component)],
        "",
        &["ops"],
    );
    desk.home
        .ok(&["policy", "trust", "add", &desk.arg("ops.pub")]);
    let installed = desk
        .home
        .ok(&["policy", "install", &desk.arg("gatekeeper.cmmpol")]);
    assert!(
        installed.stdout.contains("installed gatekeeper@1"),
        "{}",
        installed.stdout
    );

    let (code, after) = desk
        .home
        .dry_run(&["--prompt", "hi", "--model", "claude-sonnet-4-5"]);
    assert_eq!(code, 3, "{after:#}");
    let approval = role(&after, "approval");
    assert_eq!(approval["outcome"], "deny");
    assert!(
        approval["reason"]
            .as_str()
            .unwrap()
            .contains("'claude-sonnet-4-5' is not allowed"),
        "{approval:#}"
    );
    assert_eq!(approval["plugin"]["bundle"], "gatekeeper@1");
    assert_eq!(approval["plugin"]["origin"], "bundle");
    let (_, haiku) = desk
        .home
        .dry_run(&["--prompt", "hi", "--model", "claude-haiku-4-5"]);
    assert_ne!(role(&haiku, "approval")["outcome"], "deny", "{haiku:#}");

    let kinds = desk.home.audit_kinds();
    assert!(kinds.contains(&"trust.added".to_string()));
    assert!(kinds.contains(&"policy.installed".to_string()));
}

/// `policy new` starts from the real plugins, so every template builds and
/// passes its own cases as generated: the default plugin of each role in
/// Rust, and the Python and C examples.
#[test]
fn every_template_builds_and_passes_its_own_cases() {
    let desk = Desk::new();
    let mut components = Vec::new();
    for role in ["approval", "limits", "pricing", "compliance"] {
        let name = format!("my-{role}");
        let dir = desk.path(&name);
        let made = desk.home.ok(&[
            "--json",
            "policy",
            "new",
            "--lang",
            "rust",
            role,
            &name,
            "--dir",
            &dir.display().to_string(),
        ]);
        let made: Value = serde_json::from_str(&made.stdout).unwrap();
        assert_eq!(made["lang"], "rust");
        let built = build_components(&dir, "scaffolded-plugins");
        components.push((dir, built.join(format!("my_{role}.wasm"))));
    }
    let python = desk.path("py-gate");
    desk.home.ok(&[
        "policy",
        "new",
        "--lang",
        "python",
        "approval",
        "py-gate",
        "--dir",
        &python.display().to_string(),
    ]);
    components.push((
        python.clone(),
        crate::python_plugins::component(&python, "approval-policy"),
    ));
    let c = desk.path("c-gate");
    desk.home.ok(&[
        "policy",
        "new",
        "--lang",
        "c",
        "approval",
        "c-gate",
        "--dir",
        &c.display().to_string(),
    ]);
    components.push((
        c.clone(),
        crate::c_plugins::component(&c, "approval-policy"),
    ));

    for (dir, component) in &components {
        let cases = dir.join("cases.toml");
        let count = std::fs::read_to_string(&cases)
            .unwrap()
            .matches("[[case]]")
            .count();
        let tested = desk.home.ok(&[
            "policy",
            "test",
            &component.display().to_string(),
            "--cases",
            &cases.display().to_string(),
        ]);
        assert!(
            tested.stdout.contains(&format!("{count} passed, 0 failed")),
            "{}: {}",
            dir.display(),
            tested.stdout
        );
    }
    let refused = desk.home.run(&[
        "policy",
        "new",
        "--lang",
        "python",
        "limits",
        "py-limits",
        "--dir",
        &desk.arg("py-limits"),
    ]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("--lang rust"), "{}", refused.stderr);
}

#[test]
fn every_refusal_has_its_own_message_and_leaves_the_active_policy() {
    let desk = Desk::new();
    let limits = fixture("allow_limits");
    desk.keygen("a");
    desk.keygen("b");
    desk.home
        .ok(&["policy", "trust", "add", &desk.arg("a.pub")]);

    desk.bundle("good.cmmpol", "acme", 2, &[("limits", &limits)], "", &["a"]);
    desk.home
        .ok(&["policy", "install", &desk.arg("good.cmmpol")]);
    let active = desk.active_limits();
    assert_eq!(active.0, "acme@2");
    let check_unchanged = || assert_eq!(desk.active_limits(), active, "the active policy changed");

    // A changed byte inside a signed component of a new revision.
    desk.bundle("next.cmmpol", "acme", 3, &[("limits", &limits)], "", &["a"]);
    let mut bytes = std::fs::read(desk.path("next.cmmpol")).unwrap();
    let at = bytes.windows(4).position(|w| w == b"\0asm").unwrap();
    bytes[at + 200] ^= 0x01;
    std::fs::write(desk.path("tampered.cmmpol"), &bytes).unwrap();
    let verify = desk
        .home
        .run(&["policy", "verify", &desk.arg("tampered.cmmpol")]);
    assert_eq!(verify.code, 1, "{}", verify.stdout);
    assert!(
        verify.stdout.contains("check    digests      failed"),
        "{}",
        verify.stdout
    );
    desk.home
        .ok(&["policy", "verify", &desk.arg("good.cmmpol")]);
    let err = desk.refused(&desk.arg("tampered.cmmpol"), "digests");
    assert!(err.contains("does not match the manifest"), "{err}");
    check_unchanged();

    desk.bundle(
        "stranger.cmmpol",
        "acme",
        3,
        &[("limits", &limits)],
        "",
        &["b"],
    );
    let err = desk.refused(&desk.arg("stranger.cmmpol"), "signatures");
    assert!(err.contains("untrusted key"), "{err}");
    check_unchanged();

    desk.bundle(
        "unsigned.cmmpol",
        "acme",
        3,
        &[("limits", &limits)],
        "",
        &[],
    );
    let err = desk.refused(&desk.arg("unsigned.cmmpol"), "signatures");
    assert!(err.contains("the bundle is unsigned"), "{err}");
    check_unchanged();

    desk.home
        .ok(&["policy", "trust", "add", &desk.arg("b.pub")]);
    desk.home.set(&["policy.minSignatures=2"]);
    desk.bundle(
        "one-sig.cmmpol",
        "acme",
        3,
        &[("limits", &limits)],
        "",
        &["a"],
    );
    let err = desk.refused(&desk.arg("one-sig.cmmpol"), "signatures");
    assert!(
        err.contains("1 valid signature(s) from trusted keys, 2 required"),
        "{err}"
    );
    // The stricter rule applies to the active bundle too: it fails closed
    // until the rule is relaxed again.
    let (_, doc) = desk.home.json(&["policy", "show", "limits"]);
    assert_eq!(doc["state"], "missing", "{doc:#}");
    desk.home.set(&["policy.minSignatures=1"]);
    check_unchanged();

    desk.bundle("old.cmmpol", "acme", 1, &[("limits", &limits)], "", &["a"]);
    let err = desk.refused(&desk.arg("old.cmmpol"), "revision");
    assert!(err.contains("not newer than revision 2"), "{err}");
    check_unchanged();

    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    desk.bundle(
        "expiring.cmmpol",
        "acme",
        4,
        &[("limits", &limits)],
        &format!("expires = \"{soon}\""),
        &["a"],
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let err = desk.refused(&desk.arg("expiring.cmmpol"), "expiry");
    assert!(err.contains("expired at"), "{err}");
    check_unchanged();

    let good = std::fs::read(desk.path("good.cmmpol")).unwrap();
    std::fs::write(desk.path("cut.cmmpol"), &good[..good.len() - 700]).unwrap();
    let err = desk.refused(&desk.arg("cut.cmmpol"), "structure");
    assert!(err.contains("truncated"), "{err}");
    std::fs::write(desk.path("noise.cmmpol"), vec![0x42u8; 4096]).unwrap();
    let err = desk.refused(&desk.arg("noise.cmmpol"), "structure");
    assert!(err.contains("not a policy bundle"), "{err}");
    check_unchanged();

    desk.bundle(
        "wrong-role.cmmpol",
        "acme",
        5,
        &[("approval", &limits)],
        "",
        &["a"],
    );
    let err = desk.refused(&desk.arg("wrong-role.cmmpol"), "wit");
    assert!(
        err.contains("is not a plugin for the approval role"),
        "{err}"
    );
    check_unchanged();

    desk.bundle(
        "badconfig.cmmpol",
        "acme",
        5,
        &[("approval", &fixture("badconfig"))],
        "",
        &["a"],
    );
    let err = desk.refused(&desk.arg("badconfig.cmmpol"), "config");
    assert!(err.contains("refuses the configuration"), "{err}");
    check_unchanged();

    let (code, inspect) = desk
        .home
        .json(&["policy", "inspect", &desk.arg("old.cmmpol")]);
    assert_eq!(code, 0, "inspect reports; it does not fail");
    assert_eq!(inspect["accepted"], false);
    assert_eq!(inspect["refused"]["check"], "revision");
    assert_eq!(inspect["signatures"][0]["status"], "valid", "{inspect:#}");
    assert_eq!(inspect["manifest"]["revision"], 1);

    assert_eq!(desk.home.audit_of("policy.refused").len(), 10);

    // Loose components are refused once trust is configured.
    let run = desk
        .home
        .run(&["policy", "set", "limits", &limits.display().to_string()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("loose component"), "{}", run.stderr);

    // Removing the only signer's trust makes the bundle's role fail closed.
    let key_id = trusted_key_id(&desk, "a");
    desk.home.ok(&["policy", "trust", "remove", &key_id[..12]]);
    let (_, doc) = desk.home.json(&["policy", "show", "limits"]);
    assert_eq!(doc["state"], "missing", "{doc:#}");
    assert!(
        doc["problem"]
            .as_str()
            .unwrap()
            .contains("no longer passes"),
        "{doc:#}"
    );
}

fn trusted_key_id(desk: &Desk, name: &str) -> String {
    let (_, keys) = desk.home.json(&["policy", "trust", "list"]);
    keys.as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .and_then(|k| k["key_id"].as_str())
        .unwrap()
        .to_string()
}

/// A one-file HTTP/1.1 server on loopback that honours If-None-Match and
/// records what each request asked for.
struct BundleServer {
    url: String,
    state: Arc<Mutex<Served>>,
}

struct Served {
    body: Vec<u8>,
    etag: String,
    /// (If-None-Match sent, status answered) per request.
    log: Vec<(Option<String>, u16)>,
}

impl BundleServer {
    fn start(body: Vec<u8>, etag: &str) -> BundleServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/acme.cmmpol", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(Served {
            body,
            etag: etag.into(),
            log: Vec::new(),
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut if_none_match = None;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("if-none-match:") {
                        if_none_match = Some(v.trim().to_string());
                    }
                    line.clear();
                }
                let mut s = shared.lock().unwrap();
                let tag = format!("\"{}\"", s.etag);
                if if_none_match.as_deref() == Some(tag.as_str()) {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 304 Not Modified\r\nETag: {tag}\r\nConnection: close\r\n\r\n"
                    );
                    s.log.push((if_none_match, 304));
                } else {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nETag: {tag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        s.body.len()
                    );
                    let _ = stream.write_all(&s.body);
                    s.log.push((if_none_match, 200));
                }
            }
        });
        BundleServer { url, state }
    }

    fn serve(&self, body: Vec<u8>, etag: &str) {
        let mut s = self.state.lock().unwrap();
        s.body = body;
        s.etag = etag.into();
    }

    fn log(&self) -> Vec<(Option<String>, u16)> {
        self.state.lock().unwrap().log.clone()
    }
}

#[test]
fn install_and_update_over_http_use_the_etag_and_rollback_is_explicit() {
    let desk = Desk::new();
    let limits = fixture("allow_limits");
    desk.keygen("ops");
    desk.home
        .ok(&["policy", "trust", "add", &desk.arg("ops.pub")]);
    desk.bundle("r2.cmmpol", "acme", 2, &[("limits", &limits)], "", &["ops"]);
    desk.bundle("r3.cmmpol", "acme", 3, &[("limits", &limits)], "", &["ops"]);

    let server = BundleServer::start(std::fs::read(desk.path("r2.cmmpol")).unwrap(), "r2");
    desk.home.ok(&["policy", "install", &server.url]);
    assert_eq!(desk.active_limits().0, "acme@2");
    let (_, list) = desk.home.json(&["policy", "list"]);
    let from = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "limits")
        .unwrap()["source"]
        .clone();
    assert_eq!(from, server.url.as_str());

    let unchanged = desk.home.ok(&["policy", "update"]);
    assert!(
        unchanged.stdout.contains("unchanged"),
        "{}",
        unchanged.stdout
    );

    server.serve(std::fs::read(desk.path("r3.cmmpol")).unwrap(), "r3");
    let updated = desk.home.ok(&["policy", "update"]);
    assert!(
        updated.stdout.contains("installed acme@3"),
        "{}",
        updated.stdout
    );
    assert_eq!(desk.active_limits().0, "acme@3");

    assert_eq!(
        server.log(),
        [
            (None, 200),
            (Some("\"r2\"".into()), 304),
            (Some("\"r2\"".into()), 200),
        ]
    );

    // A server rolling back to an older revision is refused.
    server.serve(std::fs::read(desk.path("r2.cmmpol")).unwrap(), "r2-again");
    let run = desk.home.run(&["policy", "update"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("not newer than revision 3"),
        "{}",
        run.stdout
    );
    assert_eq!(desk.active_limits().0, "acme@3");

    let run = desk.home.run(&["policy", "rollback"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--allow-downgrade"), "{}", run.stderr);
    assert_eq!(desk.active_limits().0, "acme@3");
    desk.home.ok(&["policy", "rollback", "--allow-downgrade"]);
    assert_eq!(desk.active_limits().0, "acme@2");
    let run = desk.home.run(&["policy", "activate", "acme@9"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("installed: 2, 3"), "{}", run.stderr);
    desk.home.ok(&["policy", "activate", "acme@3"]);
    assert_eq!(desk.active_limits().0, "acme@3");

    let kinds = desk.home.audit_kinds();
    for kind in [
        "policy.installed",
        "policy.rolled-back",
        "policy.bundle-activated",
        "policy.refused",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
}
