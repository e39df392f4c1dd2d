//! `docker:build [--tag T] [--no-cache]` and `docker:pull [--tag T]`.
//! Progress goes to stderr; stdout gets the image id (or, with --json, the
//! whole result), so scripts can capture it.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::ops::{self, Context};
use crate::runner::{BuildEvent, PullProgress};

use super::{Finish, Output};

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Image name and tag (default: docker.image).
    #[arg(long, value_name = "T")]
    tag: Option<String>,
    /// Build every step again instead of reusing cached layers.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Image reference to pull (default: docker.image).
    #[arg(long, value_name = "T")]
    tag: Option<String>,
}

pub fn build(home: Option<PathBuf>, args: BuildArgs, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let mut err = io::stderr();
    let built = ops::docker_image::build(&mut ctx, args.tag, args.no_cache, &mut |event| {
        // Progress is best effort: a closed stderr must not fail the build.
        let _ = match event {
            BuildEvent::Step(step) => writeln!(err, "{step}"),
            BuildEvent::Output(line) if !out.json() => writeln!(err, "  {line}"),
            BuildEvent::Output(_) => Ok(()),
        };
    })?;
    out.emit(&built, |w| writeln!(w, "{}", built.id))?;
    if !out.json() {
        eprintln!("built {} ({})", built.tag, built.id);
    }
    Ok(Finish::Done)
}

pub fn pull(home: Option<PathBuf>, args: PullArgs, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let mut bar = ProgressBar::new();
    let pulled = ops::docker_image::pull(&mut ctx, args.tag, &mut |p| bar.update(p))?;
    bar.finish();
    out.emit(&pulled, |w| writeln!(w, "{}", pulled.id))?;
    if !out.json() {
        let pin = pulled
            .pinned
            .as_deref()
            .map(|d| format!(", matches pinned {d}"))
            .unwrap_or_default();
        eprintln!("pulled {} ({}{pin})", pulled.reference, pulled.id);
    }
    Ok(Finish::Done)
}

/// One line on stderr, redrawn in place on a terminal: bytes downloaded of
/// the layers whose sizes are known. Without a terminal, a line per layer
/// status change instead, so logs stay readable.
struct ProgressBar {
    layers: BTreeMap<String, (u64, u64)>,
    statuses: BTreeMap<String, String>,
    terminal: bool,
    drawn_at: Option<Instant>,
}

impl ProgressBar {
    const REDRAW: Duration = Duration::from_millis(100);
    const WIDTH: usize = 30;

    fn new() -> ProgressBar {
        ProgressBar {
            layers: BTreeMap::new(),
            statuses: BTreeMap::new(),
            terminal: io::stderr().is_terminal(),
            drawn_at: None,
        }
    }

    fn update(&mut self, p: PullProgress) {
        if let (Some(current), Some(total)) = (p.current, p.total) {
            self.layers.insert(p.layer.clone(), (current, total));
        } else if (p.status.contains("complete") || p.status.contains("exists"))
            && let Some((current, total)) = self.layers.get_mut(&p.layer)
        {
            *current = *total;
        }
        if self.terminal {
            if self.drawn_at.is_none_or(|at| at.elapsed() >= Self::REDRAW) {
                self.draw();
            }
        } else if self.statuses.get(&p.layer) != Some(&p.status) {
            let layer = if p.layer.is_empty() {
                "image"
            } else {
                &p.layer
            };
            eprintln!("{layer}: {}", p.status);
            self.statuses.insert(p.layer, p.status);
        }
    }

    fn draw(&mut self) {
        let (done, total) = self
            .layers
            .values()
            .fold((0, 0), |(d, t), (current, size)| (d + current, t + size));
        let filled = (Self::WIDTH as u64 * done.min(total))
            .checked_div(total)
            .unwrap_or(0) as usize;
        eprint!(
            "\r[{}{}] {:.1}/{:.1} MB, {} layers",
            "#".repeat(filled),
            " ".repeat(Self::WIDTH - filled),
            done as f64 / 1e6,
            total as f64 / 1e6,
            self.layers.len()
        );
        self.drawn_at = Some(Instant::now());
    }

    fn finish(&mut self) {
        if self.terminal && self.drawn_at.is_some() {
            self.draw();
            eprintln!();
        }
    }
}
