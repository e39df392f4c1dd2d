//! `cmm-relay`: the entrypoint of a claude-max-market command job.
//!
//! The container has no network and no credential. The relay gives the
//! job's command the host's gateway as plain HTTP on the container's
//! loopback (relaying bytes to the gateway's Unix socket), copies the
//! workspace in, starts the command in its own process group, passes it
//! the signals the container gets, stops it when the workspace fills up,
//! and when it ends sends the host an end report and the workspace. It
//! exits with the command's status (128 + N for a signal N), so the
//! container's exit status is the command's.
//!
//! It is static (musl) and reads nothing from the image, so it runs in any
//! image. Everything happens on one thread around poll(2): the container's
//! pids cap counts threads, and they belong to the job.
//!
//! Exit codes of its own: 2 bad invocation, 125 the relay failed, 126 the
//! command is not executable, 127 the command is not in the image.

mod args;
mod copy;
mod relay;
mod report;
mod signals;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use args::Args;
use relay::Pair;
use report::{EndReport, Failure};
use signals::SignalFd;

/// Connections served at once; more are closed as they arrive.
const MAX_PAIRS: usize = 256;
/// How often a full workspace is looked for.
const WATCH_EVERY: Duration = Duration::from_millis(250);

const EXIT_USAGE: u8 = 2;
const EXIT_RELAY: u8 = 125;
const EXIT_NOT_EXECUTABLE: u8 = 126;
const EXIT_NOT_FOUND: u8 = 127;

fn main() -> ExitCode {
    let args = match args::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(problem) => {
            say(&format!("{problem}\n{}", args::USAGE));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            say(&e.to_string());
            ExitCode::from(EXIT_RELAY)
        }
    }
}

/// One line on stderr, the job's log; control characters escaped so it
/// cannot restyle or add lines to the host's view.
fn say(text: &str) {
    let clean: String = text
        .chars()
        .map(|c| match c {
            '\n' => " ".to_owned(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect();
    eprintln!("relay: {clean}");
}

fn run(args: &Args) -> io::Result<ExitCode> {
    let signals = SignalFd::open()?;
    let listener = TcpListener::bind(args.listen)?;
    listener.set_nonblocking(true)?;
    for dir in &args.make_dirs {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if let (Some(from), Some(to)) = (&args.workspace_from, &args.workspace)
        && let Err(e) = copy::copy_tree(from, to)
    {
        let message = format!("could not copy the workspace in: {e}");
        return Ok(fail(args, "workspace_copy", message, EXIT_RELAY));
    }
    let child = match spawn(args) {
        Ok(child) => child,
        Err((kind, message, code)) => return Ok(fail(args, kind, message, code)),
    };
    let (status, workspace_full) = supervise(args, &signals, &listener, child)?;
    let report = EndReport {
        exit_code: status.code(),
        signal: status.signal(),
        workspace_full,
        error: None,
    };
    deliver(args, &report);
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(i32::from(EXIT_RELAY));
    Ok(ExitCode::from(
        u8::try_from(code & 0xff).unwrap_or(EXIT_RELAY),
    ))
}

/// The command never ran: say why, report it, and exit with `code`.
fn fail(args: &Args, kind: &'static str, message: String, code: u8) -> ExitCode {
    say(&message);
    let report = EndReport {
        exit_code: Some(i32::from(code)),
        error: Some(Failure { kind, message }),
        ..EndReport::default()
    };
    deliver(args, &report);
    ExitCode::from(code)
}

fn deliver(args: &Args, report: &EndReport) {
    if let Some(control) = &args.control
        && let Err(e) = report::send(control, report, args.workspace.as_deref())
    {
        say(&format!("could not report to the host: {e}"));
    }
}

type SpawnError = (&'static str, String, u8);

fn spawn(args: &Args) -> Result<Child, SpawnError> {
    let program = &args.command[0];
    let stdin = match &args.stdin {
        Some(path) => fs::File::open(path).map(Stdio::from).map_err(|e| {
            let message = format!("cannot open the command's stdin {}: {e}", path.display());
            ("spawn", message, EXIT_RELAY)
        })?,
        None => Stdio::null(),
    };
    let dir = args.workspace.clone().unwrap_or_else(|| "/".into());
    let mut command = Command::new(program);
    command
        .args(&args.command[1..])
        .current_dir(dir)
        .process_group(0)
        .stdin(stdin);
    // SAFETY: only sigemptyset and pthread_sigmask run between fork and
    // exec, both async-signal-safe. std keeps the parent's mask, and the
    // relay blocks the very signals the command must receive.
    unsafe {
        command.pre_exec(signals::unblock_all);
    }
    command.spawn().map_err(|e| {
        let name = program.to_string_lossy();
        let path = std::env::var("PATH").unwrap_or_default();
        match e.kind() {
            io::ErrorKind::NotFound => (
                "not_found",
                format!("command `{name}` was not found in the image (PATH={path})"),
                EXIT_NOT_FOUND,
            ),
            io::ErrorKind::PermissionDenied => (
                "not_executable",
                format!("command `{name}` is not executable: {e}"),
                EXIT_NOT_EXECUTABLE,
            ),
            _ => ("spawn", format!("cannot start `{name}`: {e}"), EXIT_RELAY),
        }
    })
}

/// Relays, forwards signals and watches the workspace until the command
/// exits; then clears out what is left of its process group.
fn supervise(
    args: &Args,
    signals: &SignalFd,
    listener: &TcpListener,
    mut child: Child,
) -> io::Result<(ExitStatus, bool)> {
    let mut watch = Watch {
        args,
        group: child.id(),
        pairs: HashMap::new(),
        next_pair: 0,
        stop_at: None,
        full: false,
        next_check: Instant::now() + WATCH_EVERY,
    };
    loop {
        if let Some(status) = child.try_wait()? {
            signals::to_group(watch.group, libc::SIGKILL);
            // A workspace filled just before the command gave up is still full.
            let full =
                watch.full || (args.watch_full && args.workspace.as_deref().is_some_and(is_full));
            return Ok((status, full));
        }
        let (order, mut fds) = watch.poll_set(signals, listener);
        // SAFETY: `fds` is a live, correctly sized array of pollfd.
        let ready =
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, watch.wait()) };
        if ready < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(io::Error::last_os_error());
        }
        watch.signals(signals.read());
        watch.deadlines();
        accept(listener, args, &mut watch.pairs, &mut watch.next_pair);
        watch.pump(&order, &fds[2..]);
    }
}

/// What the supervising loop keeps between polls.
struct Watch<'a> {
    args: &'a Args,
    /// The command's process group.
    group: u32,
    pairs: HashMap<usize, Pair>,
    next_pair: usize,
    /// When the command's grace after a stop signal runs out.
    stop_at: Option<Instant>,
    full: bool,
    next_check: Instant,
}

impl Watch<'_> {
    /// The signal fd, the listener and every pair's sockets, with the pair
    /// keys in the order their two entries follow.
    fn poll_set(
        &self,
        signals: &SignalFd,
        listener: &TcpListener,
    ) -> (Vec<usize>, Vec<libc::pollfd>) {
        let entry = |fd, events| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let mut fds = vec![
            entry(signals.fd(), libc::POLLIN),
            entry(listener.as_raw_fd(), libc::POLLIN),
        ];
        let order: Vec<usize> = self.pairs.keys().copied().collect();
        for key in &order {
            for (fd, events) in self.pairs[key].interest() {
                fds.push(entry(fd, events));
            }
        }
        (order, fds)
    }

    /// Milliseconds until the next deadline, or -1 for none.
    fn wait(&self) -> i32 {
        [
            self.stop_at,
            self.args.watch_full.then_some(self.next_check),
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(-1, |at| {
            let left = at.saturating_duration_since(Instant::now()).as_millis();
            i32::try_from(left).unwrap_or(i32::MAX)
        })
    }

    fn signals(&mut self, arrived: Vec<i32>) {
        for signal in arrived.into_iter().filter(|s| *s != libc::SIGCHLD) {
            signals::to_group(self.group, signal);
            if signals::stops(signal) && self.stop_at.is_none() {
                self.stop_at = Some(Instant::now() + self.args.grace);
            }
        }
    }

    /// The grace running out, and the workspace check when it is due.
    fn deadlines(&mut self) {
        if self.stop_at.is_some_and(|at| Instant::now() >= at) {
            // Once is enough; a deadline left in the past would make every
            // poll return at once until the group is reaped.
            self.stop_at = None;
            signals::to_group(self.group, libc::SIGKILL);
        }
        if self.args.watch_full && Instant::now() >= self.next_check {
            self.next_check = Instant::now() + WATCH_EVERY;
            if !self.full && self.args.workspace.as_deref().is_some_and(is_full) {
                say("the workspace is full; stopping the command");
                self.full = true;
                signals::to_group(self.group, libc::SIGKILL);
            }
        }
    }

    /// Moves bytes on every pair that poll woke, dropping finished ones.
    fn pump(&mut self, order: &[usize], fds: &[libc::pollfd]) {
        for (i, key) in order.iter().enumerate() {
            let woke = fds[2 * i].revents | fds[2 * i + 1].revents;
            if woke != 0 && self.pairs.get_mut(key).is_some_and(|p| !p.pump()) {
                self.pairs.remove(key);
            }
        }
    }
}

fn accept(listener: &TcpListener, args: &Args, pairs: &mut HashMap<usize, Pair>, next: &mut usize) {
    while let Ok((client, _)) = listener.accept() {
        if pairs.len() >= MAX_PAIRS {
            continue;
        }
        if let Some(mut pair) = Pair::open(client, &args.gateway)
            && pair.pump()
        {
            pairs.insert(*next, pair);
            *next += 1;
        }
    }
}

/// No space or no inodes left for the command to write.
fn is_full(path: &std::path::Path) -> bool {
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statvfs fills the zeroed struct for a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    stat.f_bavail == 0 || (stat.f_files > 0 && stat.f_favail == 0)
}
