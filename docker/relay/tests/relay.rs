//! The relay binary run for real, natively: a fake gateway on a Unix socket,
//! TCP clients through the relay, commands that exit, die, ignore signals or
//! change a workspace, and a fake host control socket that receives the end
//! report and the archive. Every wait has a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const RELAY: &str = env!("CARGO_BIN_EXE_cmm-relay");
const WAIT: Duration = Duration::from_secs(20);

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("relay-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn relay(port: u16, extra: &[&str], command: &[&str]) -> Command {
    let mut cmd = Command::new(RELAY);
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .arg("--")
        .args(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for the child with a deadline; its exit code.
fn exit_code(child: &mut Child) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("the relay exits, it is not killed");
        }
        assert!(Instant::now() < deadline, "the relay did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr(child: Child) -> String {
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned()
}

fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// A fake host control socket: the end report line and the archive's bytes.
fn control(path: &Path) -> JoinHandle<(String, Vec<u8>)> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut archive = Vec::new();
        reader.read_to_end(&mut archive).unwrap();
        (line, archive)
    })
}

/// A fake gateway that echoes every connection back.
fn echo_gateway(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut copy = stream.try_clone().unwrap();
                std::io::copy(&mut stream, &mut copy).unwrap();
                copy.shutdown(Shutdown::Write).unwrap();
            });
        }
    });
}

/// A relay for `gateway` on `port`, with a command that outlives the test.
fn serve(port: u16, gateway: &Path) -> Child {
    relay(
        port,
        &["--gateway", gateway.to_str().unwrap()],
        &["sleep", "30"],
    )
    .spawn()
    .unwrap()
}

fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream.set_read_timeout(Some(WAIT)).unwrap();
            return stream;
        }
        assert!(Instant::now() < deadline, "the relay never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_commands_exit_code_and_signal_death_pass_through() {
    let mut exits = relay(free_port(), &[], &["sh", "-c", "exit 7"])
        .spawn()
        .unwrap();
    assert_eq!(exit_code(&mut exits), 7);
    let mut killed = relay(free_port(), &[], &["sh", "-c", "kill -9 $$"])
        .spawn()
        .unwrap();
    assert_eq!(exit_code(&mut killed), 128 + 9);
}

#[test]
fn sigterm_reaches_the_command_and_one_that_ignores_it_is_killed_after_the_grace() {
    let script = "trap 'exit 42' TERM; while :; do sleep 0.05; done";
    let mut polite = relay(free_port(), &[], &["sh", "-c", script])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(&polite, "TERM");
    assert_eq!(exit_code(&mut polite), 42);

    let stubborn_script = "trap '' TERM; while :; do sleep 0.05; done";
    let started = Instant::now();
    let mut stubborn = relay(
        free_port(),
        &["--grace", "1"],
        &["sh", "-c", stubborn_script],
    )
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(&stubborn, "TERM");
    assert_eq!(exit_code(&mut stubborn), 128 + 9);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[test]
fn a_command_that_is_not_there_is_127_and_reported() {
    let dir = Dir::new("missing");
    let socket = dir.0.join("control.sock");
    let host = control(&socket);
    let control_arg = socket.to_str().unwrap();
    let mut child = relay(
        free_port(),
        &["--control", control_arg],
        &["no-such-command-xyz"],
    )
    .spawn()
    .unwrap();
    assert_eq!(exit_code(&mut child), 127);
    let (report, archive) = host.join().unwrap();
    assert!(report.contains(r#""kind":"not_found""#), "{report}");
    assert!(report.contains("no-such-command-xyz"), "{report}");
    assert!(archive.is_empty());
    assert!(stderr(child).starts_with("relay: command `no-such-command-xyz` was not found"));
}

#[test]
fn the_workspace_goes_in_and_its_changes_come_back() {
    let dir = Dir::new("workspace");
    let (from, work) = (dir.0.join("in"), dir.0.join("work"));
    std::fs::create_dir_all(from.join("sub")).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(from.join("kept.txt"), "kept\n").unwrap();
    std::fs::write(from.join("gone.txt"), "bye\n").unwrap();
    std::os::unix::fs::symlink("kept.txt", from.join("sub/link")).unwrap();
    let socket = dir.0.join("control.sock");
    let host = control(&socket);
    let args = [
        "--control",
        socket.to_str().unwrap(),
        "--workspace",
        work.to_str().unwrap(),
        "--workspace-from",
        from.to_str().unwrap(),
        "--watch-full",
    ];
    let script =
        "cat kept.txt > copy.txt && rm gone.txt && test -L sub/link && echo made > new.txt";
    let mut child = relay(free_port(), &args, &["sh", "-c", script])
        .spawn()
        .unwrap();
    assert_eq!(exit_code(&mut child), 0, "{}", stderr(child));
    let (report, archive) = host.join().unwrap();
    assert_eq!(
        report.trim(),
        r#"{"exit_code":0,"signal":null,"workspace_full":false,"error":null}"#
    );
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(archive.as_slice());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut text = String::new();
        if entry.header().entry_type().is_file() {
            entry.read_to_string(&mut text).unwrap();
        }
        names.push(format!("{name}={}", text.trim()));
    }
    assert_eq!(
        names,
        [
            "copy.txt=kept",
            "kept.txt=kept",
            "new.txt=made",
            "sub=",
            "sub/link="
        ]
    );
}

#[test]
fn bytes_pass_both_ways_with_half_close_and_several_clients_at_once() {
    let dir = Dir::new("bytes");
    let gateway = dir.0.join("gateway.sock");
    echo_gateway(&gateway);
    let port = free_port();
    let mut child = serve(port, &gateway);
    let clients: Vec<_> = (0..5)
        .map(|i| {
            std::thread::spawn(move || {
                let mut stream = connect(port);
                let sent: Vec<u8> = (0..1 << 20).map(|n: u32| (n % 251) as u8 ^ i).collect();
                let mut writer = stream.try_clone().unwrap();
                let sending = sent.clone();
                let writing = std::thread::spawn(move || {
                    writer.write_all(&sending).unwrap();
                    writer.shutdown(Shutdown::Write).unwrap();
                });
                let mut back = Vec::new();
                stream.read_to_end(&mut back).unwrap();
                writing.join().unwrap();
                back == sent
            })
        })
        .collect();
    for client in clients {
        assert!(client.join().unwrap(), "a client got other bytes back");
    }
    signal(&child, "TERM");
    assert_eq!(exit_code(&mut child), 128 + 15);
}

#[test]
fn a_missing_gateway_is_an_api_shaped_502() {
    let dir = Dir::new("nogateway");
    let port = free_port();
    let gateway = dir.0.join("absent.sock");
    let mut child = serve(port, &gateway);
    let mut stream = connect(port);
    stream
        .write_all(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    assert!(
        reply.contains(r#"{"type":"error","error":{"type":"api_error""#),
        "{reply}"
    );
    signal(&child, "TERM");
    assert_eq!(exit_code(&mut child), 128 + 15);
}

#[test]
fn stdin_comes_from_the_named_file() {
    let dir = Dir::new("stdin");
    let input = dir.0.join("stdin");
    std::fs::write(&input, "the task\n").unwrap();
    let child = relay(free_port(), &["--stdin", input.to_str().unwrap()], &["cat"])
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"the task\n");
}

#[test]
fn the_command_starts_with_no_signal_blocked() {
    let child = relay(free_port(), &[], &["grep", "SigBlk", "/proc/self/status"])
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "SigBlk:\t0000000000000000"
    );
}

/// User plus system CPU time the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3).
    after_name[11].parse::<u64>().unwrap() + after_name[12].parse::<u64>().unwrap()
}

#[test]
fn a_gateway_that_hangs_up_while_its_client_idles_leaves_the_relay_idle() {
    let dir = Dir::new("hangup");
    let gateway = dir.0.join("gateway.sock");
    let listener = UnixListener::bind(&gateway).unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .unwrap();
    });
    let port = free_port();
    let mut child = serve(port, &gateway);
    let mut client = connect(port);
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    server.join().unwrap();
    // The client keeps its end open, as an idle connection pool does.
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(child.id()) - before;
    assert!(used < 20, "the relay used {used} ticks in an idle second");
    drop(client);
    signal(&child, "TERM");
    assert_eq!(exit_code(&mut child), 128 + 15);
}

#[test]
fn a_gateway_that_does_not_accept_gets_a_502_and_does_not_stop_the_relay() {
    use std::os::fd::AsRawFd;
    let dir = Dir::new("backlog");
    let gateway = dir.0.join("gateway.sock");
    let listener = UnixListener::bind(&gateway).unwrap();
    // A backlog of 0 holds one waiting connection; the next one is refused
    // (non-blocking connect) or waits (blocking connect).
    // SAFETY: listen(2) on a bound socket only changes its backlog.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let port = free_port();
    let script = "trap 'exit 42' TERM; sleep 30 & wait";
    let mut child = relay(
        port,
        &["--gateway", gateway.to_str().unwrap()],
        &["sh", "-c", script],
    )
    .spawn()
    .unwrap();
    let _held = connect(port);
    let mut refused = connect(port);
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = String::new();
    refused.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    signal(&child, "TERM");
    assert_eq!(exit_code(&mut child), 42);
}

#[test]
fn entries_the_command_made_unreadable_are_archived_all_the_same() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = Dir::new("unreadable");
    let work = dir.0.join("work");
    std::fs::create_dir(&work).unwrap();
    let socket = dir.0.join("control.sock");
    let host = control(&socket);
    let script = "mkdir d && echo f > d/f && chmod 0 d && echo s > s && chmod 0 s && echo z > z";
    let args = [
        "--control",
        socket.to_str().unwrap(),
        "--workspace",
        work.to_str().unwrap(),
    ];
    let mut command = relay(free_port(), &args, &["sh", "-c", script]);
    // Permission bits do not bind root; run as nobody then, as in a job.
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let binary = dir.0.join("cmm-relay");
        std::fs::copy(RELAY, &binary).unwrap();
        std::os::unix::fs::chown(&work, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
        let relay_args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
        command = Command::new(binary);
        command
            .args(relay_args)
            .uid(65534)
            .gid(65534)
            .stderr(Stdio::piped());
    }
    let mut child = command.spawn().unwrap();
    assert_eq!(exit_code(&mut child), 0, "{}", stderr(child));
    let (_, archive) = host.join().unwrap();
    let mut found = Vec::new();
    for entry in tar::Archive::new(archive.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        let mode = entry.header().mode().unwrap() & 0o7777;
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        found.push(format!(
            "{} {mode:o} {}",
            entry.path().unwrap().display(),
            text.trim()
        ));
    }
    // Dir's removal needs write access to the folder the relay made readable.
    std::fs::set_permissions(work.join("d"), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(found, ["d 0 ", "d/f 644 f", "s 0 s", "z 644 z"]);
}
