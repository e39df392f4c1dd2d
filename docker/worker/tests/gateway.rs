//! End-to-end tests: the built worker binary against a fake gateway serving
//! hand-written HTTP on a Unix socket, checking what the host will see
//! (stdout, stderr, exit code) and what the gateway receives.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A scratch directory removed on drop; std only, so the test needs no
/// extra crates.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("cmm-worker-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct Request {
    head: String,
    body: Value,
}

struct FakeGateway {
    socket: PathBuf,
    server: JoinHandle<Request>,
    _dir: TempDir,
}

/// Serves exactly one connection: reads the request, then lets `respond`
/// write whatever response bytes the test wants.
fn gateway(name: &str, respond: impl FnOnce(&mut UnixStream) + Send + 'static) -> FakeGateway {
    let dir = TempDir::new(name);
    let socket = dir.0.join("gateway.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let request = read_request(&mut stream);
        respond(&mut stream);
        request
    });
    FakeGateway {
        socket,
        server,
        _dir: dir,
    }
}

fn read_request(stream: &mut UnixStream) -> Request {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("request has a Content-Length")
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    Request {
        head,
        body: serde_json::from_slice(&body).unwrap(),
    }
}

const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

/// Writes `body` as HTTP chunks of `piece` bytes, so chunk boundaries fall
/// inside SSE lines and inside multi-byte characters.
fn write_chunks(stream: &mut UnixStream, body: &str, piece: usize) {
    for chunk in body.as_bytes().chunks(piece) {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        stream.write_all(chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
        stream.flush().unwrap();
    }
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn opening_events() -> String {
    [
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
                "content": [], "model": "claude-sonnet-4-5", "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}
            }}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ]
    .concat()
}

fn text_delta(text: &str) -> String {
    event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": text}}),
    )
}

fn closing_events() -> String {
    [
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"output_tokens": 40}}),
        ),
        event("message_stop", json!({"type": "message_stop"})),
    ]
    .concat()
}

fn spawn_worker(socket: &Path, spec: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cmm-worker"))
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.as_bytes())
        .unwrap();
    child
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn finish(output: Output) -> Run {
    let run = Run {
        code: output.status.code().expect("worker exited normally"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    assert_eq!(run.stderr.lines().count(), 1, "stderr: {:?}", run.stderr);
    run
}

fn run_worker(socket: &Path, spec: &str) -> Run {
    finish(spawn_worker(socket, spec).wait_with_output().unwrap())
}

const SPEC: &str = r#"{"model": "claude-sonnet-4-5", "max_tokens": 1024, "prompt": "Say hello", "system": "Be brief."}"#;

#[test]
fn streamed_answer() {
    let body = [
        opening_events(),
        text_delta("Hello, "),
        text_delta("w\u{f6}rld! \u{1f30d}"),
        closing_events(),
    ]
    .concat();
    let gw = gateway("streamed", move |stream| {
        stream.write_all(SSE_HEAD.as_bytes()).unwrap();
        write_chunks(stream, &body, 7);
        // The worker has what it needs once `message_stop` arrives, but it
        // should still take the rest of the response instead of closing the
        // connection under the gateway.
        thread::sleep(Duration::from_millis(200));
        stream.write_all(b"0\r\n\r\n").unwrap();
        assert_eq!(stream.read(&mut [0; 1]).unwrap(), 0);
    });
    let run = run_worker(&gw.socket, SPEC);
    assert_eq!(run.stdout, "Hello, w\u{f6}rld! \u{1f30d}\n");
    assert_eq!(
        run.stderr,
        "worker: stop_reason=end_turn input_tokens=12 output_tokens=40\n"
    );
    assert_eq!(run.code, 0);

    let request = gw.server.join().unwrap();
    let head = request.head.to_ascii_lowercase();
    assert!(head.starts_with("post /v1/messages http/1.1\r\n"), "{head}");
    for header in [
        "host: gateway\r\n",
        "content-type: application/json\r\n",
        "anthropic-version: 2023-06-01\r\n",
        "connection: close\r\n",
    ] {
        assert!(head.contains(header), "missing {header:?} in {head}");
    }
    assert!(!head.contains("x-api-key") && !head.contains("authorization"));
    assert_eq!(
        request.body,
        json!({
            "model": "claude-sonnet-4-5", "max_tokens": 1024,
            "messages": [{"role": "user", "content": "Say hello"}],
            "system": "Be brief.", "stream": true
        })
    );
}

#[test]
fn text_reaches_stdout_before_the_stream_ends() {
    let (seen_tx, seen_rx) = mpsc::channel::<()>();
    let gw = gateway("live", move |stream| {
        stream.write_all(SSE_HEAD.as_bytes()).unwrap();
        write_chunks(stream, &(opening_events() + &text_delta("first")), 64);
        // Hold the rest back until the test has seen "first" on stdout; if
        // the worker buffers, the timeout ends the stream and the test fails.
        if seen_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            return;
        }
        write_chunks(stream, &(text_delta(" second") + &closing_events()), 64);
        stream.write_all(b"0\r\n\r\n").unwrap();
    });
    let mut child = spawn_worker(&gw.socket, SPEC);
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0; 64];
    while !seen.ends_with(b"first") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "stdout closed before the first delta was printed");
        seen.extend_from_slice(&buf[..n]);
    }
    seen_tx.send(()).unwrap();
    stdout.read_to_end(&mut seen).unwrap();
    let run = finish(child.wait_with_output().unwrap());
    assert_eq!(String::from_utf8(seen).unwrap(), "first second\n");
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn gateway_stalling_after_message_stop_does_not_hold_up_the_exit() {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let body = [opening_events(), text_delta("Done."), closing_events()].concat();
    let gw = gateway("stall", move |stream| {
        stream.write_all(SSE_HEAD.as_bytes()).unwrap();
        write_chunks(stream, &body, 64);
        let _ = done_rx.recv_timeout(Duration::from_secs(20));
    });
    let started = Instant::now();
    let run = run_worker(&gw.socket, SPEC);
    done_tx.send(()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "Done.\n");
}

#[test]
fn non_streamed_answer() {
    let gw = gateway("message", |stream| {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Hi there.\n"}],
            "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 9, "output_tokens": 3}
        })
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).unwrap();
    });
    let run = run_worker(
        &gw.socket,
        r#"{"model": "claude-sonnet-4-5", "max_tokens": 3, "prompt": "Hi", "stream": false}"#,
    );
    assert_eq!(run.stdout, "Hi there.\n");
    assert_eq!(
        run.stderr,
        "worker: stop_reason=max_tokens input_tokens=9 output_tokens=3\n"
    );
    assert_eq!(run.code, 0);
    let request = gw.server.join().unwrap();
    assert_eq!(request.body["stream"], json!(false));
    assert!(request.body.get("system").is_none());
}

#[test]
fn refused_request_exits_3() {
    let gw = gateway("refused", |stream| {
        let body = json!({"type": "error", "error": {
            "type": "permission_error",
            "message": "max_tokens 9000 is over the job's budget of 1024"
        }})
        .to_string();
        let response = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).unwrap();
    });
    let run = run_worker(&gw.socket, SPEC);
    assert_eq!(run.code, 3);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "worker: the gateway refused the request (HTTP 403): permission_error: max_tokens 9000 is over the job's budget of 1024\n"
    );
}

#[test]
fn error_event_mid_stream_exits_4() {
    let body = [
        opening_events(),
        text_delta("Partial answ"),
        event(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]
    .concat();
    let gw = gateway("overloaded", move |stream| {
        stream.write_all(SSE_HEAD.as_bytes()).unwrap();
        write_chunks(stream, &body, 5);
        stream.write_all(b"0\r\n\r\n").unwrap();
    });
    let run = run_worker(&gw.socket, SPEC);
    assert_eq!(run.code, 4);
    assert_eq!(run.stdout, "Partial answ\n");
    assert_eq!(
        run.stderr,
        "worker: upstream error mid-stream: overloaded_error: Overloaded\n"
    );
}

#[test]
fn stream_cut_off_exits_6() {
    let body = opening_events() + &text_delta("Cut");
    let gw = gateway("cut", move |stream| {
        stream.write_all(SSE_HEAD.as_bytes()).unwrap();
        write_chunks(stream, &body, 100);
    });
    let run = run_worker(&gw.socket, SPEC);
    assert_eq!(run.code, 6, "{}", run.stderr);
    assert_eq!(run.stdout, "Cut\n");
    assert!(
        run.stderr
            .starts_with("worker: malformed response from the gateway: "),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_socket_exits_5() {
    let dir = TempDir::new("missing");
    let socket = dir.0.join("gateway.sock");
    let run = run_worker(&socket, SPEC);
    assert_eq!(run.code, 5);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with(&format!(
            "worker: cannot reach the gateway at {}: ",
            socket.display()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_spec_and_bad_arguments_exit_2() {
    let dir = TempDir::new("badspec");
    let socket = dir.0.join("gateway.sock");
    let run = run_worker(
        &socket,
        r#"{"model": "m", "max_tokens": 1, "prompt": "p", "tools": []}"#,
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .starts_with("worker: bad job spec: unknown field `tools`"),
        "{}",
        run.stderr
    );

    let output = Command::new(env!("CARGO_BIN_EXE_cmm-worker"))
        .arg("--verbose")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = finish(output);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "worker: usage: worker [--socket PATH] < job.json\n"
    );
}
