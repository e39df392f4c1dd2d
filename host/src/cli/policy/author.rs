//! `policy keygen|build|sign|new|test|bench`: the plugin author's tools.

use std::path::PathBuf;

use crate::cli::output::short;
use crate::cli::{Finish, Output};
use crate::ops::{Context, policy_author, policy_test, scaffold};
use crate::policy::{Role, SandboxLimits};

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Path and base name: writes NAME.pem and NAME.pub.
    #[arg(long, value_name = "NAME")]
    pub out: PathBuf,
    /// Encrypt the private key with the passphrase in this environment variable.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// A folder holding bundle.toml, or the bundle.toml itself.
    pub source: PathBuf,
    /// Where to write the bundle.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The bundle to sign, in place.
    pub file: PathBuf,
    /// The private key (PEM) from `policy keygen`.
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The environment variable holding the key's passphrase, if it has one.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    pub role: Role,
    /// Crate, bundle and file name: a-z, 0-9 and '-'.
    pub name: String,
    /// The folder to create (default: ./NAME).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// A component (.wasm) or a bundle.
    pub subject: PathBuf,
    /// The cases file (TOML, [[case]] tables).
    #[arg(long, value_name = "FILE")]
    pub cases: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A component (.wasm) or a bundle.
    pub subject: PathBuf,
    /// Timed calls per role and mode.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    pub iterations: u32,
}

pub fn keygen(args: KeygenArgs, out: &Output) -> anyhow::Result<Finish> {
    let passphrase = passphrase(args.passphrase_env.as_deref())?;
    let pair = policy_author::keygen(&args.out, passphrase.as_deref())?;
    out.emit(&pair, |w| {
        writeln!(
            w,
            "private key  {} (keep it secret; mode 0600)",
            pair.private_key.display()
        )?;
        writeln!(w, "public key   {}", pair.public_key.display())?;
        writeln!(w, "key id       {} ({} bits)", pair.key_id, pair.bits)?;
        writeln!(
            w,
            "nodes trust it with `policy trust add {}`",
            pair.public_key.display()
        )
    })?;
    Ok(Finish::Done)
}

pub fn build(args: BuildArgs, out: &Output) -> anyhow::Result<Finish> {
    let written = policy_author::build(&args.source, &args.out, &SandboxLimits::CEILING)?;
    out.emit(&written, |w| {
        writeln!(
            w,
            "built {}@{} ({}) into {}, {} bytes, valid until {}; unsigned: `policy sign {} --key KEY`",
            written.name,
            written.revision,
            written.roles.join(", "),
            written.path.display(),
            written.bytes,
            written.expires,
            written.path.display()
        )
    })?;
    Ok(Finish::Done)
}

pub fn sign(args: SignArgs, out: &Output) -> anyhow::Result<Finish> {
    let passphrase = passphrase(args.passphrase_env.as_deref())?;
    let written = policy_author::sign(
        &args.file,
        &args.key,
        passphrase.as_deref(),
        args.passphrase_env.as_deref(),
    )?;
    out.emit(&written, |w| {
        let keys: Vec<&str> = written.signatures.iter().map(|k| short(k)).collect();
        writeln!(
            w,
            "signed {}@{}; signatures by {}",
            written.name,
            written.revision,
            keys.join(", ")
        )
    })?;
    Ok(Finish::Done)
}

pub fn new(args: NewArgs, out: &Output) -> anyhow::Result<Finish> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let made = scaffold::scaffold(args.role, &args.name, &dir)?;
    out.emit(&made, |w| {
        writeln!(w, "made a {} plugin in {}", args.role, made.dir.display())?;
        for f in &made.files {
            writeln!(w, "  {}", f.display())?;
        }
        writeln!(w, "next:")?;
        writeln!(w, "  cd {} && {}", made.dir.display(), made.build)?;
        writeln!(w, "  {}", made.test)
    })?;
    Ok(Finish::Done)
}

pub fn test(ctx: &Context, args: TestArgs, out: &Output) -> anyhow::Result<Finish> {
    let report = policy_test::test(ctx, &args.subject, &args.cases)?;
    out.emit(&report, |w| {
        for c in &report.cases {
            let mark = if c.passed {
                out.state("ok")
            } else {
                out.state("FAIL")
            };
            writeln!(w, "{mark:<4} {} ({}, {} µs)", c.name, c.role, c.elapsed_us)?;
            for f in &c.failures {
                writeln!(w, "     {f}")?;
            }
        }
        writeln!(w, "{} passed, {} failed", report.passed, report.failed)
    })?;
    Ok(if report.failed == 0 {
        Finish::Done
    } else {
        Finish::Failed
    })
}

pub fn bench(ctx: &Context, args: BenchArgs, out: &Output) -> anyhow::Result<Finish> {
    let results = policy_test::bench(ctx, &args.subject, args.iterations as usize)?;
    out.emit(&results, |w| {
        writeln!(
            w,
            "{:<10} {:>8} {:>12} {:>12} {:>12} {:>12}",
            "role", "calls", "fresh p50", "fresh p99", "warm p50", "warm p99"
        )?;
        for r in &results {
            writeln!(
                w,
                "{:<10} {:>8} {:>9.1} µs {:>9.1} µs {:>9.1} µs {:>9.1} µs",
                r.role.as_str(),
                r.iterations,
                r.fresh_p50_us,
                r.fresh_p99_us,
                r.warm_p50_us,
                r.warm_p99_us
            )?;
        }
        Ok(())
    })?;
    Ok(Finish::Done)
}

fn passphrase(var: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(var) = var else { return Ok(None) };
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Ok(Some(value)),
        _ => anyhow::bail!("--passphrase-env names {var}, but {var} is not set (or is empty)"),
    }
}
