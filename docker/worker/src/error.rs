//! The worker's failure modes and the exit code each one maps to.
//!
//! The host tells outcomes apart by exit code alone, so every failure path in
//! the worker ends up as exactly one of these variants, printed once to stderr.

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// Writing the answer to stdout failed (e.g. the reader went away).
    Output(io::Error),
    /// Unknown or malformed command-line arguments.
    Usage(String),
    /// The job spec on stdin could not be read, parsed or validated.
    Spec(String),
    /// The gateway answered with HTTP 4xx.
    Refused { status: u16, detail: String },
    /// The gateway answered with HTTP 5xx.
    Upstream { status: u16, detail: String },
    /// The stream carried an `error` event after the answer had started.
    MidStream { kind: String, message: String },
    /// The gateway socket could not be connected to, or dropped the request.
    Connect { path: PathBuf, source: io::Error },
    /// The response was not valid HTTP, JSON or SSE, or ended too early.
    Malformed(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Output(_) => 1,
            Error::Usage(_) | Error::Spec(_) => 2,
            Error::Refused { .. } => 3,
            Error::Upstream { .. } | Error::MidStream { .. } => 4,
            Error::Connect { .. } => 5,
            Error::Malformed(_) => 6,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Output(e) => write!(f, "cannot write the answer to stdout: {e}"),
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Spec(msg) => write!(f, "bad job spec: {msg}"),
            Error::Refused { status, detail } => {
                write!(
                    f,
                    "the gateway refused the request (HTTP {status}): {detail}"
                )
            }
            Error::Upstream { status, detail } => {
                write!(f, "upstream error (HTTP {status}): {detail}")
            }
            Error::MidStream { kind, message } => {
                write!(f, "upstream error mid-stream: {kind}: {message}")
            }
            Error::Connect { path, source } => write!(
                f,
                "cannot reach the gateway at {}: {source}",
                path.display()
            ),
            Error::Malformed(msg) => write!(f, "malformed response from the gateway: {msg}"),
        }
    }
}

/// Makes text that came from the other side of the socket safe to put on one
/// stderr line: the host logs it, so control characters (newlines, terminal
/// escapes) must not be able to forge extra lines or restyle the log.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_escapes_control_characters() {
        assert_eq!(one_line("a\nb\x1b[31mc\td"), "a\\nb\\u{1b}[31mc\\td");
        assert_eq!(one_line("plain – text"), "plain – text");
    }

    #[test]
    fn exit_codes_match_the_documented_table() {
        let io = || io::Error::other("x");
        assert_eq!(Error::Output(io()).exit_code(), 1);
        assert_eq!(Error::Usage(String::new()).exit_code(), 2);
        assert_eq!(Error::Spec(String::new()).exit_code(), 2);
        let refused = Error::Refused {
            status: 403,
            detail: String::new(),
        };
        assert_eq!(refused.exit_code(), 3);
        let upstream = Error::Upstream {
            status: 529,
            detail: String::new(),
        };
        assert_eq!(upstream.exit_code(), 4);
        let stream = Error::MidStream {
            kind: String::new(),
            message: String::new(),
        };
        assert_eq!(stream.exit_code(), 4);
        let connect = Error::Connect {
            path: PathBuf::from("/x"),
            source: io(),
        };
        assert_eq!(connect.exit_code(), 5);
        assert_eq!(Error::Malformed(String::new()).exit_code(), 6);
    }
}
