//! `docker:build [--tag T] [--no-cache] [--agent claude-code [--wheel FILE]]`
//! and `docker:pull [--tag T]`.
//! Progress goes to stderr; stdout gets the image id (or, with --json, the
//! whole result), so scripts can capture it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::agent::Agent;
use crate::ops::agent_image::{AgentBuildEvent, AgentImageOptions};
use crate::ops::{self, Context};
use crate::runner::{BuildEvent, PullProgress};

use super::bars::{BytesBar, Shown, StepBar};
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
    let mut steps = StepBar::new(Shown::for_output(out));
    let built = ops::docker_image::build(
        &mut ctx,
        args.tag,
        args.no_cache,
        &mut |event| match event {
            BuildEvent::Step(step) => steps.step(&step),
            BuildEvent::Output(line) => steps.output(&line),
        },
    );
    steps.finish();
    let built = built?;
    out.emit(&built, |w| writeln!(w, "{}", built.id))?;
    if !out.json() {
        eprintln!("built {} ({})", built.tag, built.id);
    }
    Ok(Finish::Done)
}

/// The agent image, with a download bar and then the build's steps.
fn build_agent(
    ctx: &mut Context,
    opts: &AgentImageOptions,
    out: &Output,
) -> anyhow::Result<Finish> {
    let shown = Shown::for_output(out);
    let download = BytesBar::new(shown, "downloading the wheel");
    let mut steps = StepBar::new(shown);
    let built = ops::agent_image::build(ctx, opts, &mut |event| match event {
        AgentBuildEvent::Download(done, total) => download.update(done, total),
        AgentBuildEvent::Build(BuildEvent::Step(step)) => {
            download.finish();
            steps.step(&step);
        }
        AgentBuildEvent::Build(BuildEvent::Output(line)) => steps.output(&line),
    });
    download.finish();
    steps.finish();
    let built = built?;
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
    let mut layers = LayerProgress::new(Shown::for_output(out));
    let pulled = ops::docker_image::pull(&mut ctx, args.tag, &mut |p| layers.update(p));
    layers.finish();
    let pulled = pulled?;
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

/// A pull's progress: on a terminal one bar of the bytes downloaded of
/// the layers whose sizes are known; in a log a line per layer status
/// change instead, so it stays readable.
struct LayerProgress {
    shown: Shown,
    bar: BytesBar,
    layers: BTreeMap<String, (u64, u64)>,
    statuses: BTreeMap<String, String>,
}

impl LayerProgress {
    fn new(shown: Shown) -> LayerProgress {
        LayerProgress {
            shown,
            bar: BytesBar::new(shown, "pulling"),
            layers: BTreeMap::new(),
            statuses: BTreeMap::new(),
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
        let (done, total) = self
            .layers
            .values()
            .fold((0, 0), |(d, t), (current, size)| (d + current, t + size));
        self.bar.update(done, total);
        if self.shown == Shown::Lines && self.statuses.get(&p.layer) != Some(&p.status) {
            let layer = if p.layer.is_empty() {
                "image"
            } else {
                &p.layer
            };
            eprintln!("{layer}: {}", p.status);
            self.statuses.insert(p.layer, p.status);
        }
    }

    fn finish(&self) {
        self.bar.finish();
    }
}
