//! Policy bundles over OCI, against Debian's `docker-registry` on a
//! loopback port: a pushed bundle installs on a fresh node and decides;
//! `policy update` follows a tag forward and refuses it moved back to an
//! older revision; a layer that does not match its manifest is refused with
//! nothing activated; and what `push` and `install` refuse before a bundle
//! ever reaches a registry.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::support::{Home, fixture, role};

/// A `docker-registry` on a free loopback port with its storage in a
/// temporary folder, killed on drop.
pub(crate) struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    const BINARY: &str = "/usr/bin/docker-registry";

    pub(crate) fn start() -> Registry {
        assert!(
            Path::new(Self::BINARY).exists(),
            "{} is absent: install it with `apt-get install -y docker-registry` (.ci/run does)",
            Self::BINARY
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(Self::BINARY)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        let registry = Registry { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while registry.http("GET", "/v2/", &[], b"").0 != 200 {
            assert!(Instant::now() < deadline, "docker-registry did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    /// `127.0.0.1:PORT`, as an image reference names it.
    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `oci://127.0.0.1:PORT/{path}`.
    fn reference(&self, path: &str) -> String {
        format!("oci://127.0.0.1:{}/{path}", self.port)
    }

    /// Where the registry keeps the blob with this sha256.
    fn blob_file(&self, sha256: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&sha256[..2])
            .join(sha256)
            .join("data")
    }

    /// The manifest a tag names, as the registry serves it.
    fn manifest(&self, repository: &str, tag: &str) -> (u16, Vec<u8>) {
        let accept = ("Accept", claude_max_market::oci::MANIFEST_TYPE);
        self.http(
            "GET",
            &format!("/v2/{repository}/manifests/{tag}"),
            &[accept],
            b"",
        )
    }

    /// One HTTP/1.0 request, straight to the registry's API: the status
    /// and the body.
    fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, Vec::new());
        };
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        conn.write_all(&bytes).unwrap();
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        let status = String::from_utf8_lossy(&answer)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let start = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(answer.len(), |i| i + 4);
        (status, answer[start..].to_vec())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bundle publisher: a home with a signing key `ops`, and signed bundles
/// `acme` of any revision with the allow-approval fixture as approval.
struct Publisher {
    home: Home,
    desk: tempfile::TempDir,
}

impl Publisher {
    fn new() -> Publisher {
        let publisher = Publisher {
            home: Home::new(),
            desk: tempfile::tempdir().unwrap(),
        };
        publisher
            .home
            .ok(&["policy", "keygen", "--out", &publisher.arg("ops")]);
        publisher
    }

    fn arg(&self, name: &str) -> String {
        self.desk.path().join(name).display().to_string()
    }

    /// acme revision `revision`, built and (when `signed`) signed; its path.
    fn bundle(&self, revision: u32, signed: bool) -> String {
        let src = self.desk.path().join(format!("r{revision}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("bundle.toml"),
            format!(
                "name = \"acme\"\nrevision = {revision}\n[roles.approval]\ncomponent = \"{}\"\n",
                fixture("allow_approval").display()
            ),
        )
        .unwrap();
        let out = self.arg(&format!("acme-{revision}.cmmpol"));
        self.home
            .ok(&["policy", "build", &src.display().to_string(), "--out", &out]);
        if signed {
            self.home
                .ok(&["policy", "sign", &out, "--key", &self.arg("ops.pem")]);
        }
        out
    }

    /// `policy push --json FILE REFERENCE`, which must succeed; its report.
    fn push(&self, file: &str, reference: &str) -> Value {
        let (code, doc) = self.home.json(&["policy", "push", file, reference]);
        assert_eq!(code, 0, "push failed: {doc:#}");
        doc
    }

    /// A fresh node that trusts this publisher's key.
    fn node(&self) -> Home {
        let node = Home::opted_in();
        node.ok(&["policy", "trust", "add", &self.arg("ops.pub")]);
        node
    }
}

/// Runs the binary for `home` with `args` on a pseudo-terminal (util-linux
/// `script`); what the terminal showed, stdout and stderr together.
fn on_terminal(home: &Home, args: &[&str]) -> String {
    let quote = |arg: &str| format!("'{}'", arg.replace('\'', r"'\''"));
    let mut command = vec![
        quote(env!("CARGO_BIN_EXE_claude-max-market")),
        quote("--home"),
        quote(home.path().to_str().unwrap()),
    ];
    command.extend(args.iter().map(|a| quote(a)));
    let typescript = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new("script")
        .args(["--quiet", "--return", "--command"])
        .arg(command.join(" "))
        .arg(typescript.path())
        .env_remove("CMM_HOME")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .status()
        .expect("running `script` (util-linux) for a pseudo-terminal");
    assert!(status.success(), "{args:?} failed on a terminal");
    String::from_utf8_lossy(&std::fs::read(typescript.path()).unwrap()).into_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The active approval plugin's bundle label (`null` for the default).
fn active_approval(node: &Home) -> Value {
    let (code, list) = node.json(&["policy", "list"]);
    assert_eq!(code, 0, "{list:#}");
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "approval")
        .unwrap()["plugin"]["bundle"]
        .clone()
}

#[test]
fn a_pushed_bundle_installs_on_a_fresh_node_and_decides() {
    let registry = Registry::start();
    let publisher = Publisher::new();
    let file = publisher.bundle(1, true);
    let tag = registry.reference("acme/policy:stable");
    let pushed = publisher.push(&file, &tag);
    let digest = pushed["digest"].as_str().unwrap().to_string();
    assert_eq!(pushed["name"], "acme");
    assert_eq!(pushed["revision"], 1);
    assert_eq!(pushed["reference"], tag.as_str());

    // The registry holds one manifest of the documented shape, whose one
    // layer is the bundle file byte for byte.
    let (status, raw) = registry.manifest("acme/policy", "stable");
    assert_eq!(status, 200);
    assert_eq!(format!("sha256:{}", sha256_hex(&raw)), digest);
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest["artifactType"],
        claude_max_market::oci::ARTIFACT_TYPE
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        claude_max_market::oci::EMPTY_CONFIG_TYPE
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.title"],
        "acme"
    );
    assert_eq!(
        manifest["annotations"]["vnd.claude-max-market.bundle.revision"],
        "1"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        claude_max_market::oci::BUNDLE_LAYER_TYPE
    );
    let file_bytes = std::fs::read(&file).unwrap();
    assert_eq!(
        layers[0]["digest"],
        format!("sha256:{}", sha256_hex(&file_bytes))
    );

    let node = publisher.node();
    let (_, before) = node.dry_run(&["--prompt", "hi"]);
    assert_eq!(role(&before, "approval")["plugin"]["origin"], "default");
    let installed = node.ok(&["policy", "install", &tag]);
    assert!(
        installed
            .stdout
            .contains(&format!("installed acme@1 from {tag}@{digest}")),
        "{}",
        installed.stdout
    );
    let (_, after) = node.dry_run(&["--prompt", "hi"]);
    let approval = role(&after, "approval");
    assert_eq!(approval["plugin"]["bundle"], "acme@1", "{after:#}");
    assert_eq!(approval["plugin"]["origin"], "bundle");
    assert!(
        approval["reason"].as_str().unwrap().contains("asked at"),
        "the bundle's plugin did not decide: {approval:#}"
    );

    // The digest `push` printed installs exactly that manifest too.
    let pinned = publisher.node();
    pinned.ok(&["policy", "install", pushed["pinned"].as_str().unwrap()]);
    assert_eq!(active_approval(&pinned), "acme@1");
}

#[test]
fn a_download_draws_a_bar_on_a_terminal_and_none_with_json_or_without_one() {
    let registry = Registry::start();
    let publisher = Publisher::new();
    let tag = registry.reference("acme:stable");
    publisher.push(&publisher.bundle(1, true), &tag);
    // The bar's "bytes/total" figures, e.g. "51.00 KiB/51.00 KiB".
    let bar = "KiB/";

    let shown = on_terminal(&publisher.node(), &["policy", "install", &tag]);
    assert!(
        shown.contains(bar),
        "no download bar on a terminal:\n{shown}"
    );
    assert!(shown.contains("installed acme@1"), "{shown}");

    let json = on_terminal(&publisher.node(), &["--json", "policy", "install", &tag]);
    assert!(!json.contains(bar), "a bar with --json:\n{json}");
    assert!(json.contains("\"revision\": 1"), "{json}");

    let piped = publisher.node().ok(&["policy", "install", &tag]);
    assert!(piped.stderr.is_empty(), "{}", piped.stderr);
}

#[test]
fn update_follows_the_tag_and_refuses_it_moved_back_to_an_older_revision() {
    let registry = Registry::start();
    let publisher = Publisher::new();
    let (r1, r2) = (publisher.bundle(1, true), publisher.bundle(2, true));
    let tag = registry.reference("acme:stable");
    publisher.push(&r1, &tag);
    let node = publisher.node();
    node.ok(&["policy", "install", &tag]);

    let unchanged = node.ok(&["policy", "update"]);
    assert!(
        unchanged.stdout.contains(&format!("{tag}: unchanged")),
        "{}",
        unchanged.stdout
    );

    publisher.push(&r2, &tag);
    let updated = node.ok(&["policy", "update"]);
    assert!(
        updated.stdout.contains("installed acme@2"),
        "{}",
        updated.stdout
    );
    assert_eq!(active_approval(&node), "acme@2");

    // The tag moved back to revision 1: a rollback, refused.
    publisher.push(&r1, &tag);
    let (code, results) = node.json(&["policy", "update"]);
    assert_eq!(code, 1, "{results:#}");
    assert_eq!(results[0]["result"], "refused", "{results:#}");
    assert!(
        results[0]["error"]
            .as_str()
            .unwrap()
            .contains("not newer than revision 2"),
        "{results:#}"
    );
    assert_eq!(active_approval(&node), "acme@2");
    let refused = node.audit_of("policy.refused");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["details"]["check"], "revision");
}

#[test]
fn a_layer_that_does_not_match_its_manifest_is_refused_and_nothing_is_activated() {
    let registry = Registry::start();
    let publisher = Publisher::new();
    let file = publisher.bundle(1, true);
    let bytes = std::fs::read(&file).unwrap();
    let tag = registry.reference("acme:stable");
    publisher.push(&file, &tag);
    let node = publisher.node();

    // The registry serves other bytes under the layer's digest (its storage
    // tampered with, or a network in between): same size, one bit off.
    let blob = registry.blob_file(&sha256_hex(&bytes));
    let mut tampered = std::fs::read(&blob).unwrap();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    std::fs::write(&blob, &tampered).unwrap();
    let run = node.run(&["policy", "install", &tag]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr.contains("does not match its digest"),
        "{}",
        run.stderr
    );
    assert_eq!(active_approval(&node), Value::Null);

    // A manifest pushed by hand whose layer descriptor gives the wrong size.
    std::fs::write(&blob, &bytes).unwrap();
    let (_, raw) = registry.manifest("acme", "stable");
    let mut manifest: Value = serde_json::from_slice(&raw).unwrap();
    manifest["layers"][0]["size"] = Value::from(bytes.len() - 512);
    let body = serde_json::to_vec(&manifest).unwrap();
    let content_type = ("Content-Type", claude_max_market::oci::MANIFEST_TYPE);
    let (status, _) = registry.http("PUT", "/v2/acme/manifests/short", &[content_type], &body);
    assert_eq!(status, 201, "the registry took no hand-made manifest");
    let run = node.run(&["policy", "install", &registry.reference("acme:short")]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr
            .contains(&format!("whose manifest says {}", bytes.len() - 512)),
        "{}",
        run.stderr
    );
    assert_eq!(active_approval(&node), Value::Null);
    assert!(node.audit_of("policy.installed").is_empty());

    // The same tag, served intact, installs: the refusals were the bytes'.
    node.ok(&["policy", "install", &tag]);
    assert_eq!(active_approval(&node), "acme@1");
}

#[test]
fn bad_references_are_usage_errors_and_an_unsigned_bundle_is_not_pushed() {
    let registry = Registry::start();
    let publisher = Publisher::new();
    let signed = publisher.bundle(1, true);
    for reference in [
        registry.reference("acme"),
        registry.reference("Acme:1"),
        "oci://127.0.0.1:99999/acme:1".to_string(),
        "oci:///acme:1".to_string(),
    ] {
        let run = publisher.home.run(&["policy", "install", &reference]);
        assert_eq!(run.code, 2, "install {reference}: {}", run.stderr);
        assert!(
            run.stderr.contains("is not an OCI reference"),
            "{}",
            run.stderr
        );
        let run = publisher.home.run(&["policy", "push", &signed, &reference]);
        assert_eq!(run.code, 2, "push {reference}: {}", run.stderr);
    }
    let digest = registry.reference(&format!("acme@sha256:{}", "a".repeat(64)));
    let run = publisher.home.run(&["policy", "push", &signed, &digest]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("push to a tag"), "{}", run.stderr);

    let unsigned = publisher.bundle(2, false);
    let run = publisher
        .home
        .run(&["policy", "push", &unsigned, &registry.reference("acme:2")]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stderr.contains("it is unsigned"), "{}", run.stderr);

    let corrupt = publisher.arg("corrupt.cmmpol");
    let bytes = std::fs::read(&signed).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() - 1024]).unwrap();
    let run = publisher
        .home
        .run(&["policy", "push", &corrupt, &registry.reference("acme:3")]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stderr.contains("was not pushed"), "{}", run.stderr);

    for tag in ["2", "3"] {
        assert_eq!(registry.manifest("acme", tag).0, 404, "acme:{tag} exists");
    }
    publisher.push(&signed, &registry.reference("acme:1"));
    assert_eq!(registry.manifest("acme", "1").0, 200);
}
