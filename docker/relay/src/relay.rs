//! Byte relaying between TCP clients on loopback and the gateway's Unix
//! socket, one connection pair per client. Nothing here reads HTTP: keep-
//! alive and long streamed replies work because only bytes move.
//!
//! Every socket is non-blocking and driven by the caller's poll loop, so one
//! thread serves every connection: the job's own program counts its threads
//! against the container's pids cap, and the relay must not eat into it.
//! Buffers are bounded, so a slow side pushes back instead of growing memory.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Bytes held per direction before reading that side pauses.
const BUFFER: usize = 64 * 1024;

/// The answer a client gets when the gateway cannot be reached, in the
/// Messages API's own error shape so SDKs report it like any API error.
fn unreachable_reply(reason: &str) -> String {
    let body = format!(
        "{{\"type\":\"error\",\"error\":{{\"type\":\"api_error\",\"message\":\"the job's gateway \
         is not reachable: {}\"}}}}",
        crate::report::json_escape(reason)
    );
    format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// One direction of a pair: bytes read from one side, waiting to be
/// written to the other.
#[derive(Default)]
struct Pipe {
    buffer: Vec<u8>,
    /// The reading side reached end of file.
    eof: bool,
    /// The writing side was shut down after the buffer drained.
    shut: bool,
}

impl Pipe {
    fn wants_read(&self) -> bool {
        !self.eof && self.buffer.len() < BUFFER
    }

    fn done(&self) -> bool {
        self.shut
    }

    /// Reads what `from` has, up to the bound. Err means the pair is broken.
    fn fill(&mut self, from: &mut impl Read) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        while self.wants_read() {
            let room = (BUFFER - self.buffer.len()).min(chunk.len());
            match from.read(&mut chunk[..room]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes what is buffered to `to`, and passes end of file on once all
    /// of it is out.
    fn drain(
        &mut self,
        to: &mut impl Write,
        shutdown: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        while !self.buffer.is_empty() {
            match to.write(&self.buffer) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.buffer.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.eof && !self.shut {
            self.shut = true;
            // The other side may already be gone; the pair ends either way.
            let _ = shutdown();
        }
        Ok(())
    }
}

/// A client and its connection to the gateway.
pub struct Pair {
    client: TcpStream,
    gateway: UnixStream,
    up: Pipe,
    down: Pipe,
}

impl Pair {
    /// Connects `client` to the gateway socket. When the gateway cannot be
    /// reached, the client gets a 502 and `None` comes back.
    pub fn open(client: TcpStream, gateway: &Path) -> Option<Pair> {
        match connect_now(gateway) {
            Ok(gateway) => {
                client.set_nonblocking(true).ok()?;
                Some(Pair {
                    client,
                    gateway,
                    up: Pipe::default(),
                    down: Pipe::default(),
                })
            }
            Err(e) => {
                let mut client = client;
                let _ = client.set_nonblocking(false);
                let _ = client.write_all(unreachable_reply(&e.to_string()).as_bytes());
                let _ = client.shutdown(Shutdown::Both);
                None
            }
        }
    }

    /// The poll entries this pair needs: (fd, events) for client, gateway.
    pub fn interest(&self) -> [(RawFd, i16); 2] {
        let mut client = 0;
        let mut gateway = 0;
        if self.up.wants_read() {
            client |= libc::POLLIN;
        }
        if !self.down.buffer.is_empty() || (self.down.eof && !self.down.shut) {
            client |= libc::POLLOUT;
        }
        if self.down.wants_read() {
            gateway |= libc::POLLIN;
        }
        if !self.up.buffer.is_empty() || (self.up.eof && !self.up.shut) {
            gateway |= libc::POLLOUT;
        }
        // A socket with nothing asked of it is left out (poll skips a
        // negative fd): poll reports a hang-up whether asked or not, so a
        // gateway that has closed while its client idles in a pool would
        // wake the loop on every turn.
        let entry = |fd: RawFd, events: i16| if events == 0 { (-1, 0) } else { (fd, events) };
        [
            entry(self.client.as_raw_fd(), client),
            entry(self.gateway.as_raw_fd(), gateway),
        ]
    }

    /// Moves what can move now. `false` when the pair is finished or broken.
    pub fn pump(&mut self) -> bool {
        self.step().is_ok() && !(self.up.done() && self.down.done())
    }

    fn step(&mut self) -> io::Result<()> {
        self.up.fill(&mut self.client)?;
        self.down.fill(&mut self.gateway)?;
        let (client, gateway) = (&self.client, &self.gateway);
        self.up
            .drain(&mut &self.gateway, || gateway.shutdown(Shutdown::Write))?;
        self.down
            .drain(&mut &self.client, || client.shutdown(Shutdown::Write))
    }
}

/// Connects to a Unix socket without waiting. A blocking connect to a
/// socket whose backlog is full waits until the gateway accepts, and on the
/// relay's one thread that would stop signals and every other connection.
fn connect_now(path: &Path) -> io::Result<UnixStream> {
    // SAFETY: sockaddr_un is plain data, for which all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "the socket path is too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) returns a new descriptor, which OwnedFd then owns.
    let socket = match unsafe { libc::socket(libc::AF_UNIX, flags, 0) } {
        -1 => return Err(io::Error::last_os_error()),
        fd => unsafe { OwnedFd::from_raw_fd(fd) },
    };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    if unsafe { libc::connect(socket.as_raw_fd(), (&raw const addr).cast(), len) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == ErrorKind::WouldBlock {
            return Err(io::Error::new(e.kind(), "the gateway's backlog is full"));
        }
        return Err(e);
    }
    Ok(UnixStream::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unreachable_reply_is_a_complete_api_error() {
        let reply = unreachable_reply("No such file \"x\"");
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 502"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(body.contains(r#""type":"api_error""#));
        assert!(body.contains(r#"No such file \"x\""#));
    }
}
