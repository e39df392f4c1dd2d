//! Yes/no questions, asked only when a person is there to answer: on a
//! terminal, on stderr so stdout stays clean for --json.

use std::io::{self, BufRead, IsTerminal, Write};

/// True when stdin and stderr are both terminals.
pub fn interactive() -> bool {
    io::stdin().is_terminal() && io::stderr().is_terminal()
}

/// Asks `question`; anything but y/yes is no, which is also the default.
pub fn confirm(question: &str) -> io::Result<bool> {
    let mut err = io::stderr().lock();
    write!(err, "{question} [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
