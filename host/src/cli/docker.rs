//! `docker:build [--tag T] [--no-cache] [--agent claude-code [--wheel FILE]]`
//! and `docker:pull [--tag T]`.
//! Progress goes to stderr; stdout gets the image id (or, with --json, the
//! whole result), so scripts can capture it.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::agent::Agent;
use crate::ops::agent_image::{AgentBuildEvent, AgentImageOptions};
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
    /// Build an agent's image instead (from this machine's tools and the agent's PyPI wheel).
    #[arg(long, value_name = "AGENT", value_enum)]
    agent: Option<AgentArg>,
    /// With --agent: take the agent from this wheel file instead of PyPI.
    #[arg(long, value_name = "FILE", requires = "agent")]
    wheel: Option<PathBuf>,
}

/// The agents `docker:build --agent` builds images for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AgentArg {
    /// Claude Code, from the claude-agent-sdk wheel.
    ClaudeCode,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Image reference to pull (default: docker.image).
    #[arg(long, value_name = "T")]
    tag: Option<String>,
}

pub fn build(home: Option<PathBuf>, args: BuildArgs, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    if let Some(AgentArg::ClaudeCode) = args.agent {
        let opts = AgentImageOptions {
            agent: Agent::ClaudeCode,
            tag: args.tag,
            no_cache: args.no_cache,
            wheel: args.wheel,
        };
        return build_agent(&mut ctx, &opts, out);
    }
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

/// The agent image, with a download bar on a terminal.
fn build_agent(
    ctx: &mut Context,
    opts: &AgentImageOptions,
    out: &Output,
) -> anyhow::Result<Finish> {
    let bar = (!out.json() && io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("downloading the wheel");
        bar
    });
    let mut err = io::stderr();
    let built = ops::agent_image::build(ctx, opts, &mut |event| match event {
        AgentBuildEvent::Download(done, total) => {
            if let Some(bar) = &bar {
                bar.set_length(total);
                bar.set_position(done);
            }
        }
        AgentBuildEvent::Build(BuildEvent::Step(step)) => {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            let _ = writeln!(err, "{step}");
        }
        AgentBuildEvent::Build(BuildEvent::Output(line)) if !out.json() => {
            let _ = writeln!(err, "  {line}");
        }
        AgentBuildEvent::Build(BuildEvent::Output(_)) => {}
    })?;
    out.emit(&built, |w| writeln!(w, "{}", built.id))?;
    if !out.json() {
        eprintln!(
            "built {} ({}): {} {}",
            built.tag, built.id, built.agent, built.version
        );
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
