//! Progress bars for long work: an image build's steps and a download's
//! bytes, drawn on stderr with indicatif.
//!
//! A bar is drawn only on a terminal and never with `--json`. Without a
//! terminal (a log, CI) a build still prints one line per step and a pull
//! one line per layer status change, so logs say what happened; with
//! `--json` stderr stays quiet and stdout carries the result alone.

use std::io::{self, IsTerminal};

use indicatif::{ProgressBar, ProgressStyle};

use super::Output;

/// How progress is shown: as a bar, as plain lines, or not at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    Bar,
    Lines,
    Quiet,
}

impl Shown {
    pub fn for_output(out: &Output) -> Shown {
        Shown::new(out.json())
    }

    pub fn new(json: bool) -> Shown {
        if json {
            Shown::Quiet
        } else if io::stderr().is_terminal() {
            Shown::Bar
        } else {
            Shown::Lines
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A Dockerfile build, step by step: `Step 3/7 : COPY …` moves the bar to 3
/// of 7 and shows the instruction.
pub struct StepBar {
    shown: Shown,
    bar: Option<ProgressBar>,
}

impl StepBar {
    pub fn new(shown: Shown) -> StepBar {
        StepBar { shown, bar: None }
    }

    /// A line the builder printed as a step.
    pub fn step(&mut self, line: &str) {
        match self.shown {
            Shown::Quiet => {}
            Shown::Lines => eprintln!("{line}"),
            Shown::Bar => match parse_step(line) {
                Some((number, of, instruction)) => {
                    let bar = self.bar.get_or_insert_with(|| {
                        let bar = ProgressBar::new(of);
                        bar.set_style(style(
                            "building [{bar:20}] step {pos}/{len} {elapsed} {wide_msg}",
                        ));
                        bar
                    });
                    bar.set_length(of);
                    // The step starts now: the ones before it are done.
                    bar.set_position(number.saturating_sub(1));
                    bar.set_message(instruction.to_owned());
                }
                None => eprintln!("{line}"),
            },
        }
    }

    /// Any other line the builder printed (shown under the steps in logs).
    pub fn output(&self, line: &str) {
        if self.shown == Shown::Lines {
            eprintln!("  {line}");
        }
    }

    /// The build ended: the bar goes (the caller says how it ended).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `Step 3/7 : COPY a /a` → (3, 7, "COPY a /a").
fn parse_step(line: &str) -> Option<(u64, u64, &str)> {
    let rest = line.strip_prefix("Step ")?;
    let (counts, instruction) = rest.split_once(" : ").unwrap_or((rest, ""));
    let (number, of) = counts.split_once('/')?;
    Some((number.parse().ok()?, of.parse().ok()?, instruction.trim()))
}

/// A download of a known or unknown size.
pub struct BytesBar {
    bar: Option<ProgressBar>,
}

impl BytesBar {
    /// A bar labelled `what` when `shown` is [`Shown::Bar`]; nothing
    /// otherwise.
    pub fn new(shown: Shown, what: &str) -> BytesBar {
        let bar = (shown == Shown::Bar).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(style(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            ));
            bar.set_message(what.to_owned());
            bar
        });
        BytesBar { bar }
    }

    /// `done` of `total` bytes so far (`total` 0 when unknown).
    pub fn update(&self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            if total > 0 {
                bar.set_length(total);
            }
            bar.set_position(done);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_read_from_the_builders_lines() {
        assert_eq!(
            parse_step("Step 3/7 : COPY worker /worker"),
            Some((3, 7, "COPY worker /worker"))
        );
        assert_eq!(parse_step("Step 1/2"), Some((1, 2, "")));
        assert_eq!(parse_step("Step x/2 : FROM scratch"), None);
        assert_eq!(parse_step("Successfully built abc"), None);
    }
}
