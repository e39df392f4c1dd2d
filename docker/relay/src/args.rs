//! The relay's command line, parsed strictly: an unknown option or a
//! missing command is a usage error, never a guess.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "usage: relay --listen 127.0.0.1:PORT [--gateway PATH] [--control PATH] \
[--workspace DIR [--workspace-from DIR] [--watch-full]] [--make-dir DIR]... [--stdin FILE] \
[--grace SECS] -- COMMAND [ARGS...]";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub listen: SocketAddr,
    pub gateway: PathBuf,
    pub control: Option<PathBuf>,
    pub workspace: Option<PathBuf>,
    pub workspace_from: Option<PathBuf>,
    pub watch_full: bool,
    pub make_dirs: Vec<PathBuf>,
    pub stdin: Option<PathBuf>,
    pub grace: Duration,
    pub command: Vec<OsString>,
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
    let mut args = args.into_iter();
    let mut listen = None;
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        gateway: PathBuf::from("/run/cmm/gateway.sock"),
        control: None,
        workspace: None,
        workspace_from: None,
        watch_full: false,
        make_dirs: Vec::new(),
        stdin: None,
        grace: Duration::from_secs(5),
        command: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let flag = arg.to_string_lossy().into_owned();
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--" => {
                parsed.command = args.by_ref().collect();
                break;
            }
            "--listen" => {
                let text = value()?.to_string_lossy().into_owned();
                let addr: SocketAddr = text
                    .parse()
                    .map_err(|_| format!("--listen {text} is not an address:port"))?;
                if !addr.ip().is_loopback() {
                    return Err(format!("--listen {addr} is not a loopback address"));
                }
                listen = Some(addr);
            }
            "--gateway" => parsed.gateway = value()?.into(),
            "--control" => parsed.control = Some(value()?.into()),
            "--workspace" => parsed.workspace = Some(value()?.into()),
            "--workspace-from" => parsed.workspace_from = Some(value()?.into()),
            "--watch-full" => parsed.watch_full = true,
            "--make-dir" => parsed.make_dirs.push(value()?.into()),
            "--stdin" => parsed.stdin = Some(value()?.into()),
            "--grace" => {
                let text = value()?.to_string_lossy().into_owned();
                let secs: u64 = text
                    .parse()
                    .map_err(|_| format!("--grace {text} is not a whole number of seconds"))?;
                parsed.grace = Duration::from_secs(secs);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    parsed.listen = listen.ok_or("--listen is required")?;
    if parsed.command.is_empty() {
        return Err("no command after `--`".into());
    }
    if parsed.workspace.is_none() && (parsed.workspace_from.is_some() || parsed.watch_full) {
        return Err("--workspace-from and --watch-full need --workspace".into());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse(list.iter().map(OsString::from))
    }

    #[test]
    fn a_full_command_line_parses() {
        let parsed = args(&[
            "--listen",
            "127.0.0.1:4141",
            "--control",
            "/c.sock",
            "--workspace",
            "/w",
            "--workspace-from",
            "/in",
            "--watch-full",
            "--make-dir",
            "/tmp/h",
            "--grace",
            "2",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
        assert_eq!(parsed.listen.port(), 4141);
        assert_eq!(parsed.grace, Duration::from_secs(2));
        assert_eq!(parsed.command, ["sh", "-c", "exit 3"]);
        assert!(parsed.watch_full);
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for bad in [
            &["--listen", "127.0.0.1:1"][..],
            &["--", "true"],
            &["--listen", "0.0.0.0:1", "--", "true"],
            &["--listen", "127.0.0.1:1", "--bogus", "--", "true"],
            &["--listen", "127.0.0.1:1", "--watch-full", "--", "true"],
            &["--listen", "127.0.0.1:1", "--grace", "x", "--", "true"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }
}
