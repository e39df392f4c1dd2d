//! What a plugin writes to stderr, kept only to explain its failure.
//!
//! A language runtime that meets an error it cannot return prints it to
//! stderr and traps: componentize-py prints the Python traceback, and the
//! trap alone says only `unreachable`. So a plugin's stderr is collected,
//! its last few KiB only, and the last lines go into the failure message.
//! Nothing is ever written to the host's own stderr, and writing never
//! fails or blocks, so a chatty plugin cannot trap or stall on it.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of stderr kept per call.
const KEPT: usize = 4096;
/// Lines of it a failure message quotes.
const QUOTED_LINES: usize = 6;

/// The tail of one store's stderr. Clones share it.
#[derive(Clone, Default)]
pub(crate) struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.extend(bytes);
        let excess = kept.len().saturating_sub(KEPT);
        kept.drain(..excess);
    }

    /// Forgets what earlier calls wrote.
    pub fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The last non-empty lines written, joined with " | ", if any.
    pub fn last_lines(&self) -> Option<String> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes: Vec<u8> = kept.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .collect();
        let start = lines.len().saturating_sub(QUOTED_LINES);
        (!lines.is_empty()).then(|| lines[start..].join(" | "))
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(KEPT)
    }
}

impl AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_of_a_bounded_tail() {
        let tail = StderrTail::default();
        assert_eq!(tail.last_lines(), None);
        for n in 0..2000 {
            tail.push(format!("line {n}\n").as_bytes());
        }
        tail.push(b"Traceback (most recent call last):\n\n  ValueError: bad\n");
        let quoted = tail.last_lines().unwrap();
        assert!(quoted.ends_with("Traceback (most recent call last): |   ValueError: bad"));
        assert_eq!(quoted.matches(" | ").count(), QUOTED_LINES - 1);
        assert!(tail.0.lock().unwrap().len() <= KEPT);
        tail.clear();
        assert_eq!(tail.last_lines(), None);
    }
}
