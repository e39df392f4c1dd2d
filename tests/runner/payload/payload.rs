//! Test payload baked into the `FROM scratch` test image (compiled with
//! `rustc --target x86_64-unknown-linux-musl`, so it has no runtime deps).
//!
//! It prints a banner at once (to prove output emitted before stdin is
//! written is not lost), then reads ALL of stdin (so it only proceeds once the
//! runner closed stdin) and runs the commands on its lines, in order:
//!
//! - `info`: report uid/gid, capabilities, mounts, env, pid 1, network and
//!   filesystem write probes as `key=value` lines on stdout
//! - `sleep SECS`: sleep
//! - `stderr TEXT`: write TEXT to stderr
//! - `big N`: write N bytes of a known pattern to stdout
//! - `exit CODE`: exit with CODE
//! - `cat`: copy the rest of stdin (after this line) to stdout verbatim

use std::io::{Read, Write};

fn main() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "payload: started");
    let _ = out.flush();

    let mut input = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut input);

    let mut rest: &[u8] = &input;
    while !rest.is_empty() {
        let (line, tail) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = tail;
        let line = String::from_utf8_lossy(line).into_owned();
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match cmd {
            "info" => info(&mut out),
            "sleep" => std::thread::sleep(std::time::Duration::from_secs_f64(
                arg.parse().unwrap_or(1.0),
            )),
            "stderr" => {
                let _ = writeln!(std::io::stderr(), "{arg}");
            }
            "big" => {
                let n: usize = arg.parse().unwrap_or(0);
                let chunk: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
                let _ = out.write_all(&chunk);
            }
            "exit" => {
                let _ = out.flush();
                std::process::exit(arg.parse().unwrap_or(1));
            }
            "cat" => {
                let _ = out.write_all(rest);
                rest = &[];
            }
            _ => {}
        }
        let _ = out.flush();
    }
}

fn info(out: &mut impl Write) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for key in [
        "Uid",
        "Gid",
        "Groups",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
    ] {
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        let _ = writeln!(out, "status.{key}={value}");
    }
    let pid1 = std::fs::read("/proc/1/cmdline").unwrap_or_default();
    let pid1: Vec<String> = pid1
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let _ = writeln!(out, "pid1={}", pid1.join(" "));
    let _ = writeln!(out, "pid={}", std::process::id());
    for (k, v) in std::env::vars() {
        let _ = writeln!(out, "env={k}={v}");
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        // mountinfo: id parent maj:min root mountpoint options ... - fstype source superopts
        let fields: Vec<&str> = line.split_whitespace().collect();
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .unwrap_or(fields.len());
        if fields.len() > 5 && sep + 3 < fields.len() + 1 {
            let _ = writeln!(
                out,
                "mount={} {} {} {}",
                fields[4],
                fields[5],
                fields.get(sep + 1).unwrap_or(&""),
                fields.get(sep + 3).unwrap_or(&"")
            );
        }
    }
    let netdev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    let ifaces: Vec<&str> = netdev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    let _ = writeln!(out, "net.ifaces={}", ifaces.join(","));
    for path in ["/probe", "/tmp/probe", "/run/cmm/probe"] {
        let result = match std::fs::write(path, b"x") {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("err:{}", e.raw_os_error().unwrap_or(-1)),
        };
        let _ = writeln!(out, "write.{path}={result}");
    }
    let gateway = std::fs::read_to_string("/run/cmm/hello.txt")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("err:{}", e.raw_os_error().unwrap_or(-1)));
    let _ = writeln!(out, "gateway.hello={gateway}");
}
