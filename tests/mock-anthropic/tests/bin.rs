//! The `mock-anthropic` binary: announcing its address, serving, playing a
//! script file, refusing non-loopback addresses and bad scripts, and
//! stopping on stdin EOF, SIGTERM and SIGINT.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Conn, KEY, body, streaming, valid_headers};
use serde_json::json;

fn spawn(args: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-anthropic"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mock-anthropic");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

fn first_line(stdout: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read announced address");
    line.trim_end().to_owned()
}

/// Waits for exit, failing the test rather than hanging if it never comes.
fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("mock-anthropic did not exit");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[test]
fn serves_on_tcp_and_stops_at_stdin_eof() {
    let (mut child, mut stdout) = spawn(&[
        "--key",
        KEY,
        "--listen",
        "127.0.0.1:0",
        "--delta-delay-ms=5",
    ]);
    let url = first_line(&mut stdout);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let mut conn = Conn::tcp(&url);
    let r = conn
        .send(
            "POST",
            "/v1/messages",
            &valid_headers(),
            body("from the bin").to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["content"][0]["text"],
        "Mock reply to: from the bin"
    );
    let r = conn
        .send("POST", "/v1/messages", &[("x-api-key", "other")], b"{}")
        .unwrap();
    assert_eq!(r.status, 401);

    drop(child.stdin.take());
    assert!(wait(&mut child).success());
}

#[test]
fn no_auth_serves_a_request_without_a_key_and_an_empty_key_is_refused() {
    let (mut child, mut stdout) = spawn(&["--no-auth", "--listen", "127.0.0.1:0"]);
    let url = first_line(&mut stdout);
    let r = Conn::tcp(&url)
        .send(
            "POST",
            "/v1/messages",
            &[("anthropic-version", "2023-06-01")],
            body("keyless").to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    drop(child.stdin.take());
    assert!(wait(&mut child).success());

    let (mut empty, _) = spawn(&["--key=", "--listen", "127.0.0.1:0"]);
    assert_eq!(wait(&mut empty).code(), Some(2));
}

#[test]
fn serves_on_a_unix_socket_and_stops_on_sigterm() {
    let path = std::env::temp_dir().join(format!("mock-anthropic-bin-{}.sock", std::process::id()));
    let path_arg = path.to_str().unwrap();
    let (mut child, mut stdout) = spawn(&["--key", KEY, "--unix", path_arg]);
    assert_eq!(first_line(&mut stdout), path_arg);

    let r = Conn::unix(&path)
        .send(
            "POST",
            "/v1/messages",
            &valid_headers(),
            streaming("sock").to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.events().last().unwrap().0, "message_stop");

    signal(&child, "TERM");
    assert!(wait(&mut child).success());
    assert!(!Path::new(&path).exists(), "socket removed on exit");
}

#[test]
fn stops_on_sigint() {
    let (mut child, mut stdout) = spawn(&["--listen", "127.0.0.1:0", "--key", KEY]);
    first_line(&mut stdout);
    signal(&child, "INT");
    assert!(wait(&mut child).success());
}

/// Runs the mock with `args` to its end, checks it announced nothing, and
/// returns how it exited and what it said on stderr.
fn refused(args: &[&str]) -> (ExitStatus, String) {
    let (mut child, mut stdout) = spawn(args);
    let status = wait(&mut child);
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    assert!(out.is_empty(), "{args:?} announced {out:?}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

#[test]
fn refuses_non_loopback_and_bad_arguments() {
    for args in [
        &["--key", KEY, "--listen", "0.0.0.0:0"][..],
        &["--key", KEY][..],
        &["--listen", "127.0.0.1:0"][..],
        &["--key", KEY, "--listen", "localhost:80"][..],
        &[
            "--key",
            KEY,
            "--listen",
            "127.0.0.1:0",
            "--unix",
            "/tmp/x.sock",
        ][..],
        &[
            "--key",
            KEY,
            "--listen",
            "127.0.0.1:0",
            "--delta-delay-ms",
            "soon",
        ][..],
        &["--key", KEY, "--listen", "127.0.0.1:0", "--verbose"][..],
    ] {
        let (status, err) = refused(args);
        assert!(!status.success(), "{args:?} was accepted");
        assert!(err.starts_with("mock-anthropic: "), "{args:?}: {err}");
    }
}

/// A file in the temp dir, unique to this test process and `name`.
fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("mock-anthropic-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn a_script_file_plays_a_tool_use_conversation() {
    let script = temp_file(
        "script.json",
        r#"{
          "scenarios": [
            {"type": "tool_use", "calls": [{"id": "toolu_01Fixed", "name": "Bash", "input": {"command": "echo hi > f.txt"}}],
             "input_tokens": 1200, "output_tokens": 40},
            {"type": "reply", "text": "Done.", "input_tokens": 1300, "output_tokens": 3}
          ],
          "default": {"type": "overloaded"}
        }"#,
    );
    let (mut child, mut stdout) = spawn(&[
        "--key",
        KEY,
        "--listen",
        "127.0.0.1:0",
        "--script",
        script.to_str().unwrap(),
    ]);
    let url = first_line(&mut stdout);
    let mut conn = Conn::tcp(&url);
    let mut send = |request: &serde_json::Value| {
        conn.send(
            "POST",
            "/v1/messages",
            &valid_headers(),
            request.to_string().as_bytes(),
        )
        .unwrap()
    };
    let mut request = body("write hi");
    let first = send(&request).json();
    assert_eq!(first["stop_reason"], "tool_use");
    assert_eq!(first["usage"]["input_tokens"], 1200);
    assert_eq!(
        first["content"],
        json!([{"type": "tool_use", "id": "toolu_01Fixed", "name": "Bash", "input": {"command": "echo hi > f.txt"}}])
    );
    request["messages"] = json!([
        request["messages"][0],
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01Fixed", "content": ""}]}
    ]);
    let second = send(&request).json();
    assert_eq!(second["content"][0]["text"], "Done.");
    assert_eq!(second["usage"]["output_tokens"], 3);
    assert_eq!(send(&request).status, 529, "then the script's default");

    drop(child.stdin.take());
    assert!(wait(&mut child).success());
    std::fs::remove_file(script).unwrap();
}

#[test]
fn a_bad_script_stops_the_mock_before_it_announces() {
    let bad = temp_file(
        "bad.json",
        r#"{"scenarios": [{"type": "tool_use", "calls": [{"name": "Bash", "input": "ls"}], "input_tokens": 1, "output_tokens": 1}]}"#,
    );
    let missing = std::env::temp_dir().join("mock-anthropic-no-such-script.json");
    for (path, says) in [
        (
            &bad,
            "script scenarios.0: tool call Bash: input must be a JSON object",
        ),
        (&missing, "cannot read script"),
    ] {
        let (status, err) = refused(&[
            "--key",
            KEY,
            "--listen",
            "127.0.0.1:0",
            "--script",
            path.to_str().unwrap(),
        ]);
        assert_eq!(status.code(), Some(2));
        assert!(err.starts_with("mock-anthropic: --script: "), "{err}");
        assert!(err.contains(says), "{err}");
    }
    std::fs::remove_file(bad).unwrap();
}
