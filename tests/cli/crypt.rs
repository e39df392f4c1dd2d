//! Node keys, `encrypt` and `decrypt` through the binary: round trips,
//! several recipients, tampering that leaves no output, rotation with its
//! grace period, a passphrase-protected key, and key age in compliance.

use std::path::{Path, PathBuf};

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::Home;

fn write(home: &Home, name: &str, bytes: &[u8]) -> PathBuf {
    let path = home.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn node_id(home: &Home) -> String {
    let (code, doc) = home.json(&["keys", "show"]);
    assert_eq!(code, 0, "{doc:#}");
    doc["current"]["node_id"].as_str().unwrap().to_owned()
}

/// Moves a key's `created` or `retired` time `days` into the past, as an
/// old key store (or a clock set back) would have it.
fn backdate(home: &Home, field: &str, id: &str, days: i64) {
    let path = home.path().join("keys/keys.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let when = (OffsetDateTime::now_utc() - time::Duration::days(days))
        .format(&Rfc3339)
        .unwrap();
    for key in doc["keys"].as_array_mut().unwrap() {
        if key["id"] == id {
            key[field] = Value::from(when.clone());
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}

#[test]
fn files_of_every_size_round_trip_for_this_node() {
    let home = Home::new();
    for (name, size) in [("empty", 0), ("one", 1000), ("many", 3 * 65536 + 17)] {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let plain = write(&home, name, &bytes);
        let (code, sealed) = home.json(&["encrypt", "--input", arg(&plain)]);
        assert_eq!(code, 0, "{sealed:#}");
        let sealed_path = sealed["output"].as_str().unwrap().to_owned();
        assert!(sealed_path.ends_with(".cmmenc"));
        let out = home.path().join(format!("{name}.out"));
        home.ok(&["decrypt", "--input", &sealed_path, "--output", arg(&out)]);
        assert_eq!(std::fs::read(&out).unwrap(), bytes, "{name}");
    }
    let kinds = home.ok(&["audit"]).stdout;
    assert_eq!(
        kinds.matches("key.created").count(),
        1,
        "one key, made on first need"
    );
}

#[test]
fn several_recipients_each_open_it_and_nobody_else_can() {
    let (alice, bob, eve) = (Home::new(), Home::new(), Home::new());
    let bob_pem = bob.path().join("bob.pem");
    bob.ok(&["keys", "export-public", "--out", arg(&bob_pem)]);
    let alice_id = node_id(&alice);
    let plain = write(&alice, "secret.txt", b"for alice and bob only");
    alice.ok(&[
        "encrypt",
        "--input",
        arg(&plain),
        "--recipient",
        arg(&bob_pem),
        "--recipient",
        &alice_id[..12],
    ]);
    let sealed = alice.path().join("secret.txt.cmmenc");
    for (who, home) in [("alice", &alice), ("bob", &bob)] {
        let out = home.path().join(format!("{who}.txt"));
        home.ok(&["decrypt", "--input", arg(&sealed), "--output", arg(&out)]);
        assert_eq!(std::fs::read(&out).unwrap(), b"for alice and bob only");
    }
    let out = eve.path().join("eve.txt");
    node_id(&eve);
    let run = eve.run(&["decrypt", "--input", arg(&sealed), "--output", arg(&out)]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&node_id(&bob)[..12]),
        "names the recipients: {}",
        run.stderr
    );
    assert!(!out.exists(), "nothing written for a wrong key");
}

#[test]
fn a_tampered_or_truncated_file_writes_nothing() {
    let home = Home::new();
    let bytes: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let plain = write(&home, "data", &bytes);
    home.ok(&["encrypt", "--input", arg(&plain)]);
    let sealed = std::fs::read(home.path().join("data.cmmenc")).unwrap();
    let mut flipped = sealed.clone();
    flipped[150_000] ^= 1;
    let cut = sealed[..sealed.len() - 70_000].to_vec();
    let mut extended = sealed.clone();
    extended.extend_from_slice(b"more");
    for (name, damaged) in [("flipped", flipped), ("cut", cut), ("extended", extended)] {
        let input = write(&home, &format!("{name}.cmmenc"), &damaged);
        let out = home.path().join(format!("{name}.out"));
        let run = home.run(&["decrypt", "--input", arg(&input), "--output", arg(&out)]);
        assert_eq!(run.code, 1, "{name}");
        assert!(!run.stderr.is_empty(), "{name}: a clear error");
        assert!(!out.exists(), "{name}: no plaintext written");
    }
    let existing = write(&home, "keep.txt", b"mine");
    let run = home.run(&[
        "decrypt",
        "--input",
        arg(&home.path().join("data.cmmenc")),
        "--output",
        arg(&existing),
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert_eq!(std::fs::read(&existing).unwrap(), b"mine");
}

#[test]
fn a_rotated_key_decrypts_within_its_grace_period_and_not_after() {
    let home = Home::new();
    home.set(&["security.keyRotationDays=30"]);
    let old = node_id(&home);
    let plain = write(&home, "note", b"sealed before rotation");
    home.ok(&["encrypt", "--input", arg(&plain)]);
    let sealed = home.path().join("note.cmmenc");
    let (code, rotated) = home.json(&["keys", "rotate"]);
    assert_eq!(code, 0, "{rotated:#}");
    assert_eq!(rotated["old"]["node_id"], old.as_str());
    assert_ne!(node_id(&home), old);

    let within = home.path().join("within");
    home.ok(&["decrypt", "--input", arg(&sealed), "--output", arg(&within)]);
    assert_eq!(std::fs::read(&within).unwrap(), b"sealed before rotation");

    backdate(&home, "retired", &old, 31);
    let after = home.path().join("after");
    let run = home.run(&["decrypt", "--input", arg(&sealed), "--output", arg(&after)]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!after.exists());
    assert!(
        !home.path().join(format!("keys/{old}.pem")).exists(),
        "the old pair is removed"
    );
    let audit = home.ok(&["audit"]).stdout;
    for kind in ["key.created", "key.rotated", "key.removed"] {
        assert!(audit.contains(kind), "{kind} is audited: {audit}");
    }
}

#[test]
fn rotating_a_market_nodes_key_needs_confirmation() {
    let home = Home::new();
    home.set(&["market.url=nats://127.0.0.1:1"]);
    let old = node_id(&home);
    let run = home.run(&["keys", "rotate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("balance"), "{}", run.stderr);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    assert_eq!(node_id(&home), old, "nothing rotated");

    let (code, rotated) = home.json(&["keys", "rotate", "--yes"]);
    assert_eq!(code, 0, "{rotated:#}");
    assert_ne!(node_id(&home), old);
}

#[test]
fn a_passphrase_protected_key_needs_its_variable() {
    let home = Home::new();
    home.set(&["security.keyPassphraseEnv=CMM_TEST_KEY_PASS"]);
    let with_pass = |args: &[&str]| {
        let out = home
            .command()
            .env("CMM_TEST_KEY_PASS", "correct horse battery staple")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    with_pass(&["keys", "show"]);
    let pem = std::fs::read_dir(home.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pem"))
        .unwrap();
    assert!(
        std::fs::read_to_string(pem)
            .unwrap()
            .contains("ENCRYPTED PRIVATE KEY")
    );
    let plain = write(&home, "p", b"x");
    with_pass(&["encrypt", "--input", arg(&plain)]);
    let run = home.run(&[
        "decrypt",
        "--input",
        arg(&home.path().join("p.cmmenc")),
        "--output",
        arg(&home.path().join("p.out")),
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("CMM_TEST_KEY_PASS"), "{}", run.stderr);
}

#[test]
fn an_old_node_key_is_a_compliance_warning() {
    let home = Home::opted_in();
    home.set(&["security.keyRotationDays=30"]);
    let id = node_id(&home);
    let age = |home: &Home| {
        let (_, doc) = home.json(&["compliance-check"]);
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == "key-age")
            .cloned()
            .unwrap()
    };
    assert_eq!(age(&home)["passed"], true);
    backdate(&home, "created", &id, 45);
    let finding = age(&home);
    assert_eq!(finding["passed"], false, "{finding}");
    assert!(
        finding["message"].as_str().unwrap().contains("45 days"),
        "{finding}"
    );
}

/// Hidden temporary outputs in `dir`, as an interrupted run would leave.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
        .collect()
}

/// `encrypt` caught halfway: reading from a FIFO that has had its first MiB,
/// with its temporary output written. The writer keeps the FIFO open.
fn halfway(home: &Home, dir: &Path) -> (std::process::Child, std::fs::File) {
    use std::io::Write;
    let fifo = dir.join("input");
    let c_path = std::ffi::CString::new(arg(&fifo)).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let child = home
        .command()
        .args(["encrypt", "--input", arg(&fifo), "--output"])
        .arg(dir.join("sealed.cmmenc"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(&vec![7u8; 1 << 20]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while temporaries(dir).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no temporary output");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child, writer)
}

#[test]
fn an_interrupted_encryption_leaves_no_temporary_file() {
    let home = Home::new();
    home.ok(&["keys", "show"]);
    for (signal, code) in [
        (libc::SIGINT, 130),
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
    ] {
        let dir = tempfile::tempdir_in(home.path()).unwrap();
        let (child, writer) = halfway(&home, dir.path());
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let out = child.wait_with_output().unwrap();
        drop(writer);
        assert_eq!(out.status.code(), Some(code), "signal {signal}: {out:?}");
        assert_eq!(
            temporaries(dir.path()),
            Vec::<String>::new(),
            "signal {signal}"
        );
        assert!(!dir.path().join("sealed.cmmenc").exists());
    }
}

#[test]
fn a_temporary_file_left_by_a_killed_run_is_removed_by_the_next() {
    let home = Home::new();
    home.ok(&["keys", "show"]);
    let dir = tempfile::tempdir_in(home.path()).unwrap();
    let (mut child, writer) = halfway(&home, dir.path());
    child.kill().unwrap();
    child.wait().unwrap();
    drop(writer);
    assert_eq!(temporaries(dir.path()).len(), 1, "SIGKILL cannot be caught");

    let plain = write(&home, "plain.txt", b"hello");
    home.ok(&[
        "encrypt",
        "--input",
        arg(&plain),
        "--output",
        arg(&dir.path().join("sealed.cmmenc")),
    ]);
    assert_eq!(temporaries(dir.path()), Vec::<String>::new());
    assert!(dir.path().join("sealed.cmmenc").exists());
}
