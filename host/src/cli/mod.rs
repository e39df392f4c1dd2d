//! The command line: argument definitions and one file per command. Each
//! command parses its flags into an options struct, calls one operation in
//! `ops`, and prints the result for people or, with `--json`, as one JSON
//! document. No engine is touched from here except through `ops`.

mod audit;
mod bars;
mod clean;
mod completions;
mod compliance;
mod config;
mod crypt;
mod docker;
mod execute;
mod health;
mod jobs;
mod keys;
mod limits;
mod logs;
mod market;
mod opt_in;
mod opt_out;
mod output;
mod policy;
mod progress;
mod prompt;
mod render;
mod result;
mod status;
mod terms;
mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::metrics::Exporter;

pub use output::Output;

/// Run Claude jobs in locked-down containers, with every decision made by
/// sandboxed WebAssembly policy plugins.
#[derive(Debug, Parser)]
#[command(name = "claude-max-market", version, max_term_width = 100)]
pub struct Cli {
    /// Data folder (config, state database, plugins). Default: the platform's data directory.
    #[arg(long, global = true, env = "CMM_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// No colours, even on a terminal (also: NO_COLOR set in the environment).
    #[arg(long, global = true)]
    pub no_color: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the legal notice and usage policy; --accept records acceptance.
    Terms(terms::Args),
    /// Consent to running Claude jobs on this machine.
    OptIn(opt_in::Args),
    /// Withdraw consent; no job is admitted afterwards.
    OptOut(opt_out::Args),
    /// Show or change the daily and per-job limits.
    Limits(limits::Args),
    /// Consent, limits, today's usage, active policies and audit chain state.
    Status,
    /// Read or change settings.
    Config(config::Args),
    /// Run a Claude job: policy pipeline, then a locked-down container.
    Execute(execute::Args),
    /// List the newest jobs: id, state, tokens and what they ran.
    Jobs(jobs::Args),
    /// Show a job's output (default: the newest job).
    Logs(logs::Args),
    /// What a job changed in its workspace; --diff shows it, --apply copies it into your folder.
    Result(result::Args),
    /// Build the job image from what this binary carries (no network needed).
    #[command(name = "docker:build")]
    DockerBuild(docker::BuildArgs),
    /// Pull the job image; a digest-pinned docker.image must match.
    #[command(name = "docker:pull")]
    DockerPull(docker::PullArgs),
    /// Check that this node can run jobs: Docker, image, data, policies, upstream.
    Health,
    /// Judge this node's compliance facts with the compliance policy; exit 1 on a critical failure.
    #[command(name = "compliance-check")]
    ComplianceCheck,
    /// Remove containers and job folders this tool left behind.
    Clean(clean::Args),
    /// Tasks, tokens, outcomes and durations per day, with a chart.
    Usage(usage::Args),
    /// This node's identity keys: show, export the public key, rotate.
    #[command(subcommand)]
    Keys(keys::Command),
    /// Seal a file for one or more nodes' public keys (default: this node).
    Encrypt(crypt::EncryptArgs),
    /// Open a sealed file with this node's keys; writes nothing unless all of it verifies.
    Decrypt(crypt::DecryptArgs),
    /// Report or verify the audit log.
    Audit(audit::Args),
    /// List, inspect or swap the policy plugins.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Publish this node's offer on the market once (`serve` keeps it alive).
    Advertise(market::OfferArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or PowerShell.
    Completions(completions::CompletionArgs),
    /// Print the manual page, or write one per command into a folder.
    Man(completions::ManArgs),
    /// Run as a market provider: keep the offer alive, take tasks, return results.
    Serve(market::ServeArgs),
    /// Change the bid on a task this node posted that is still open.
    Bid(market::BidArgs),
    /// The market: offers, tasks, stats, balance, ledger, results, grants.
    #[command(subcommand)]
    Market(market::Command),
}

/// How a command that ran to completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Done,
    /// The command worked, and its answer is a policy denial.
    Denied,
    /// The command ran and has already reported what went wrong (a job
    /// that failed, a health check that did not pass).
    Failed,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<Finish> {
    let out = Output::new(cli.json, cli.no_color);
    let home = cli.home;
    match cli.command {
        Command::Terms(args) => terms::run(home, args, &out),
        Command::OptIn(args) => opt_in::run(home, args, &out),
        Command::OptOut(args) => opt_out::run(home, args, &out),
        Command::Limits(args) => limits::run(home, args, &out),
        Command::Status => status::run(home, &out),
        Command::Config(args) => config::run(home, args, &out),
        Command::Execute(args) => execute::run(home, args, &out),
        Command::Jobs(args) => jobs::run(home, args, &out),
        Command::Logs(args) => logs::run(home, args, &out),
        Command::Result(args) => result::run(home, args, &out),
        Command::DockerBuild(args) => docker::build(home, args, &out),
        Command::DockerPull(args) => docker::pull(home, args, &out),
        Command::Health => health::run(home, &out),
        Command::ComplianceCheck => compliance::run(home, &out),
        Command::Clean(args) => clean::run(home, args, &out),
        Command::Usage(args) => usage::run(home, args, &out),
        Command::Keys(cmd) => keys::run(home, cmd, &out),
        Command::Encrypt(args) => crypt::encrypt(home, args, &out),
        Command::Decrypt(args) => crypt::decrypt(home, args, &out),
        Command::Audit(args) => audit::run(home, args, &out),
        Command::Policy(cmd) => policy::run(home, cmd, &out),
        Command::Advertise(args) => market::advertise(home, args, &out),
        Command::Serve(args) => market::serve(home, args, &out),
        Command::Bid(args) => market::bid(home, args, &out),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args, &out),
        Command::Market(cmd) => market::run(home, cmd, &out),
    }
}

/// Serves metrics at `addr` when a long-running command was given
/// `--metrics`, until the returned value is dropped.
fn serve_metrics(addr: Option<SocketAddr>) -> anyhow::Result<Option<Exporter>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let exporter = Exporter::start(addr)?;
    eprintln!("metrics at http://{}/metrics", exporter.addr());
    Ok(Some(exporter))
}

/// Exits as clap does on a usage error (exit code 2), for combinations of
/// arguments clap itself cannot express.
pub(crate) fn usage_error(message: &str) -> ! {
    use clap::CommandFactory;
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}
