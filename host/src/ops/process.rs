//! Telling whether the process that runs a job is still alive. A pid alone
//! is not enough: after a crash the kernel may hand it to an unrelated
//! process, so a process is named by its pid and its start time in clock
//! ticks since boot, both read from `/proc`.

use std::fs;

use crate::store::HostProcess;

/// This process.
pub fn current() -> HostProcess {
    let pid = std::process::id();
    HostProcess {
        pid,
        start: start_time(pid).unwrap_or(0),
    }
}

/// Whether `host` still runs. A process whose start time cannot be read is
/// gone (or was never there).
pub fn is_alive(host: HostProcess) -> bool {
    start_time(host.pid) == Some(host.start)
}

/// Field 22 of `/proc/PID/stat`. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards; starttime is the 20th of them.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = current();
        assert!(me.start > 0);
        assert!(is_alive(me));
        let impostor = HostProcess {
            start: me.start + 1,
            ..me
        };
        assert!(!is_alive(impostor));
    }

    #[test]
    fn an_exited_child_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = start_time(pid);
        child.wait().unwrap();
        if let Some(start) = start {
            assert!(!is_alive(HostProcess { pid, start }));
        }
    }
}
