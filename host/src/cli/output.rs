//! Printing: either text for people or one JSON document for scripts.

use std::io::{self, IsTerminal, Write};

use serde::Serialize;

use crate::policy::Outcome;

/// Where and how a command prints its result.
pub struct Output {
    json: bool,
    color: bool,
}

impl Output {
    pub fn new(json: bool, no_color: bool) -> Output {
        let color =
            !no_color && std::env::var_os("NO_COLOR").is_none() && io::stdout().is_terminal();
        Output { json, color }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// Prints `value` as JSON with --json, else whatever `human` writes.
    pub fn emit<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> anyhow::Result<()> {
        let stdout = io::stdout();
        let mut w = stdout.lock();
        if self.json {
            serde_json::to_writer_pretty(&mut w, value)?;
            writeln!(w)?;
        } else {
            human(&mut w)?;
        }
        w.flush()?;
        Ok(())
    }

    /// A decision word, coloured on a terminal.
    pub fn outcome(&self, outcome: Outcome) -> String {
        let code = match outcome {
            Outcome::Allow => "32",
            Outcome::Deny => "31",
            Outcome::Ask => "33",
        };
        self.paint(code, outcome.as_str())
    }

    /// "ok" in green, anything else in red.
    pub fn state(&self, state: &str) -> String {
        self.paint(if state == "ok" { "32" } else { "31" }, state)
    }

    /// A warning word in yellow.
    pub fn warn(&self, text: &str) -> String {
        self.paint("33", text)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// Shortens a sha256 for people; JSON keeps the whole digest.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}
