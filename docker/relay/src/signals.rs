//! Signals as a file descriptor the poll loop reads, so the relay handles
//! them on its one thread without async-signal-safety concerns. They are
//! blocked before anything else starts; the command gets an empty mask
//! back in its process before exec (std would pass the relay's on).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Forwarded to the command's process group.
pub const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Of those, the ones that ask the command to stop: they start the grace
/// period after which its group is killed.
pub fn stops(signal: i32) -> bool {
    matches!(
        signal,
        libc::SIGTERM | libc::SIGINT | libc::SIGHUP | libc::SIGQUIT
    )
}

pub struct SignalFd(OwnedFd);

impl SignalFd {
    /// Blocks the forwarded signals and SIGCHLD and opens a descriptor that
    /// reports them.
    pub fn open() -> io::Result<SignalFd> {
        // SAFETY: the sigset is initialised by sigemptyset before use, and
        // signalfd returns a new descriptor that OwnedFd then owns.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in FORWARDED.iter().chain([&libc::SIGCHLD]) {
                libc::sigaddset(&mut set, *signal);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalFd(OwnedFd::from_raw_fd(fd)))
        }
    }

    /// The signals that arrived since the last read.
    pub fn read(&self) -> Vec<i32> {
        let mut signals = Vec::new();
        loop {
            // SAFETY: reading whole signalfd_siginfo records into a buffer
            // of that exact size, as signalfd(2) requires.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let read = unsafe {
                libc::read(
                    self.0.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if read != size as isize {
                return signals;
            }
            signals.push(info.ssi_signo as i32);
        }
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Gives the calling process an empty signal mask: what the command starts
/// with, in the child before exec.
pub fn unblock_all() -> io::Result<()> {
    // SAFETY: sigemptyset initialises the set that pthread_sigmask reads.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends `signal` to every process in the group led by `leader`; a group
/// already gone is fine.
pub fn to_group(leader: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(leader) {
        // SAFETY: kill(2) with a negative pid addresses a process group.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}
