//! `policy keygen|build|sign|new|test|bench`: the plugin author's tools.

use std::path::PathBuf;

use crate::cli::output::short;
use crate::cli::{Finish, Output, usage_error};
use crate::ops::scaffold::{self, Lang};
use crate::ops::{Context, policy_author, policy_replay, policy_test};
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
    /// Plugin, bundle and file name: a-z, 0-9 and '-'.
    pub name: String,
    /// The folder to create (default: ./NAME).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The language: Rust (any role, from the node's default plugin), Python or C (approval).
    #[arg(long, value_enum, default_value_t = LangArg::Rust)]
    pub lang: LangArg,
}

/// The languages `policy new` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LangArg {
    Rust,
    Python,
    C,
}

impl From<LangArg> for Lang {
    fn from(lang: LangArg) -> Lang {
        match lang {
            LangArg::Rust => Lang::Rust,
            LangArg::Python => Lang::Python,
            LangArg::C => Lang::C,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// A component (.wasm) or a bundle.
    pub subject: PathBuf,
    /// The cases file (TOML, [[case]] tables).
    #[arg(long, value_name = "FILE", required_unless_present = "replay")]
    pub cases: Option<PathBuf>,
    /// Ask the subject the questions this node's recorded decisions asked
    /// (admissions and dry runs), and report every answer that differs.
    #[arg(long, conflicts_with = "cases")]
    pub replay: bool,
    /// With --replay: only decisions at or after DATE (YYYY-MM-DD or RFC 3339).
    #[arg(long, value_name = "DATE", requires = "replay", value_parser = crate::cli::audit::parse_since)]
    pub since: Option<time::OffsetDateTime>,
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
    let lang = Lang::from(args.lang);
    if let Some(problem) = lang.unsupported(args.role) {
        usage_error(&problem);
    }
    let made = scaffold::scaffold(lang, args.role, &args.name, &dir)?;
    out.emit(&made, |w| {
        writeln!(
            w,
            "made a {} plugin in {} ({})",
            args.role,
            made.dir.display(),
            made.lang.as_str()
        )?;
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
    let Some(cases) = args.cases else {
        return replay(ctx, &args.subject, args.since, out);
    };
    let report = policy_test::test(ctx, &args.subject, &cases)?;
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

fn replay(
    ctx: &Context,
    subject: &std::path::Path,
    since: Option<time::OffsetDateTime>,
    out: &Output,
) -> anyhow::Result<Finish> {
    let report = policy_replay::replay(ctx, subject, since)?;
    out.emit(&report, |w| {
        for d in &report.differences {
            let answer = |a: &policy_replay::Answer| match &a.reason {
                Some(reason) => format!("{} ({reason})", a.outcome),
                None => a.outcome.to_string(),
            };
            writeln!(
                w,
                "{} job {} at {} ({})",
                out.state("DIFF"),
                d.job_id,
                d.at,
                d.role
            )?;
            writeln!(w, "     recorded:  {}", answer(&d.recorded))?;
            writeln!(w, "     candidate: {}", answer(&d.candidate))?;
        }
        writeln!(
            w,
            "{} recorded decisions replayed, {} differ{}",
            report.replayed,
            report.differences.len(),
            if report.skipped > 0 {
                format!(
                    "; {} skipped (recorded without their input, or under another WIT)",
                    report.skipped
                )
            } else {
                String::new()
            }
        )
    })?;
    Ok(if report.differences.is_empty() {
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
