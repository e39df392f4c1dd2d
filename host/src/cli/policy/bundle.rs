//! `policy verify|inspect|install|update|push|activate|rollback`

use std::path::{Path, PathBuf};

use crate::cli::output::short;
use crate::cli::{Finish, Output};
use crate::oci::OciReference;
use crate::ops::bundle_fetch::BundleLocation;
use crate::ops::policy_bundle::{self, Evaluation, Switched, Updated};
use crate::ops::policy_push::{self, Pushed};
use crate::ops::{Context, OpsError};

use super::download::DownloadBar;

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// A bundle file, an http(s) URL, or oci://HOST[:PORT]/REPOSITORY:TAG
    /// (or @sha256:DIGEST). URLs and OCI tags are remembered for `policy update`.
    #[arg(value_name = "SOURCE", value_parser = parse_location)]
    pub source: BundleLocation,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The signed bundle file (`policy build`, then `policy sign`).
    pub file: PathBuf,
    /// Where to: oci://HOST[:PORT]/REPOSITORY:TAG. Plain HTTP only to a
    /// registry on loopback (127.0.0.0/8, ::1, localhost); HTTPS otherwise.
    #[arg(value_name = "OCI_REFERENCE", value_parser = parse_push_target)]
    pub target: OciReference,
}

#[derive(Debug, clap::Args)]
pub struct ActivateArgs {
    /// NAME@REVISION, as `policy list` and `policy inspect` show them.
    pub target: String,
    /// Allow going back to a revision below the active one.
    #[arg(long)]
    pub allow_downgrade: bool,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The bundle to roll back (needed only when several are active).
    pub name: Option<String>,
    /// Confirm the downgrade; without it the rollback is refused.
    #[arg(long)]
    pub allow_downgrade: bool,
}

pub fn verify(ctx: &Context, file: &Path, out: &Output) -> anyhow::Result<Finish> {
    let ev = policy_bundle::verify(ctx, file)?;
    out.emit(&ev, |w| print_evaluation(w, &ev, out))?;
    Ok(if ev.accepted {
        Finish::Done
    } else {
        Finish::Failed
    })
}

pub fn inspect(ctx: &Context, file: &Path, out: &Output) -> anyhow::Result<Finish> {
    let ev = policy_bundle::inspect(ctx, file)?;
    out.emit(&ev, |w| print_evaluation(w, &ev, out))?;
    Ok(Finish::Done)
}

pub fn install(ctx: &mut Context, args: InstallArgs, out: &Output) -> anyhow::Result<Finish> {
    let mut bar = DownloadBar::new(out);
    let switched = policy_bundle::install(ctx, &args.source, &mut |d| bar.update(d))?;
    drop(bar);
    out.emit(&switched, |w| print_switched(w, "installed", &switched))?;
    Ok(Finish::Done)
}

pub fn update(ctx: &mut Context, out: &Output) -> anyhow::Result<Finish> {
    let mut bar = DownloadBar::new(out);
    let results = policy_bundle::update(ctx, &mut |d| bar.update(d))?;
    drop(bar);
    out.emit(&results, |w| {
        for r in &results {
            match r {
                Updated::Unchanged { url } => writeln!(w, "{url}: unchanged")?,
                Updated::Installed(s) => print_switched(w, "installed", s)?,
                Updated::Refused { url, error } => {
                    writeln!(w, "{url}: {} {error}", out.warn("refused:"))?
                }
            }
        }
        Ok(())
    })?;
    let refused = results.iter().any(|r| matches!(r, Updated::Refused { .. }));
    Ok(if refused {
        Finish::Failed
    } else {
        Finish::Done
    })
}

pub fn push(ctx: &Context, args: PushArgs, out: &Output) -> anyhow::Result<Finish> {
    let pushed = policy_push::push(ctx, &args.file, &args.target)?;
    out.emit(&pushed, |w| print_pushed(w, &pushed))?;
    Ok(Finish::Done)
}

pub fn activate(ctx: &mut Context, args: ActivateArgs, out: &Output) -> anyhow::Result<Finish> {
    let (name, revision) = parse_target(&args.target)?;
    let switched = policy_bundle::activate(ctx, name, revision, args.allow_downgrade)?;
    out.emit(&switched, |w| print_switched(w, "activated", &switched))?;
    Ok(Finish::Done)
}

pub fn rollback(ctx: &mut Context, args: RollbackArgs, out: &Output) -> anyhow::Result<Finish> {
    let switched = policy_bundle::rollback(ctx, args.name.as_deref(), args.allow_downgrade)?;
    out.emit(&switched, |w| {
        print_switched(w, "rolled back to", &switched)
    })?;
    Ok(Finish::Done)
}

fn parse_location(text: &str) -> Result<BundleLocation, String> {
    text.parse()
        .map_err(|e: crate::oci::OciError| e.to_string())
}

fn parse_push_target(text: &str) -> Result<OciReference, String> {
    let reference: OciReference = text
        .parse()
        .map_err(|e: crate::oci::OciError| e.to_string())?;
    if reference.tag().is_none() || reference.digest().is_some() {
        return Err(format!(
            "push to a tag (oci://HOST[:PORT]/REPOSITORY:TAG), not to '{text}'; the registry \
             gives the pushed bundle its digest"
        ));
    }
    Ok(reference)
}

fn parse_target(target: &str) -> Result<(&str, u64), OpsError> {
    target
        .rsplit_once('@')
        .and_then(|(name, rev)| Some((name, rev.parse().ok()?)))
        .filter(|(name, rev)| crate::bundle::valid_name(name) && *rev > 0)
        .ok_or_else(|| OpsError::InvalidInput {
            what: format!("'{target}' is not NAME@REVISION (e.g. acme@3)"),
        })
}

fn print_switched(w: &mut dyn std::io::Write, verb: &str, s: &Switched) -> std::io::Result<()> {
    writeln!(w, "{verb} {}@{} from {}", s.name, s.revision, s.source)?;
    for r in &s.roles {
        writeln!(w, "  {:<10} {}", r.role, short(&r.sha256))?;
    }
    for role in &s.released {
        writeln!(w, "  {role:<10} back to the default (not in this revision)")?;
    }
    if s.signers.is_empty() {
        writeln!(w, "  signed by no trusted key (this node trusts none)")?;
    } else {
        let signers: Vec<&str> = s.signers.iter().map(|k| short(k)).collect();
        writeln!(w, "  signed by {}", signers.join(", "))?;
    }
    Ok(())
}

fn print_pushed(w: &mut dyn std::io::Write, p: &Pushed) -> std::io::Result<()> {
    writeln!(w, "pushed {}@{} to {}", p.name, p.revision, p.reference)?;
    writeln!(w, "  digest  {}", p.digest)?;
    writeln!(
        w,
        "  bundle  {} bytes, sha256 {}",
        p.bytes,
        short(&p.sha256)
    )?;
    let signers: Vec<&str> = p.signers.iter().map(|k| short(k)).collect();
    writeln!(w, "  signed  by {}", signers.join(", "))?;
    writeln!(w, "  pinned  {}", p.pinned)
}

fn print_evaluation(
    w: &mut dyn std::io::Write,
    ev: &Evaluation,
    out: &Output,
) -> std::io::Result<()> {
    writeln!(w, "bundle   {} (sha256 {})", ev.source, short(&ev.sha256))?;
    if let Some(m) = &ev.manifest {
        writeln!(w, "name     {}@{}", m.name, m.revision)?;
        writeln!(w, "valid    {} to {}", m.created, m.expires)?;
        writeln!(w, "targets  {}", m.wit)?;
    }
    for r in &ev.roles {
        writeln!(
            w,
            "role     {:<10} {} ({} bytes) fuel {} memory {} MiB timeout {} ms",
            r.role,
            short(&r.sha256),
            r.bytes,
            r.limits.fuel,
            r.limits.memory_bytes >> 20,
            r.limits.timeout_ms
        )?;
        for (k, v) in &r.config {
            writeln!(w, "           plugin.{k} = {v}")?;
        }
    }
    if ev.signatures.is_empty() {
        writeln!(w, "signed   not signed")?;
    }
    for s in &ev.signatures {
        let by = s
            .trusted_as
            .as_deref()
            .map(|n| format!(" '{n}'"))
            .unwrap_or_default();
        writeln!(w, "signed   {}{by}: {:?}", short(&s.key_id), s.status)?;
    }
    writeln!(
        w,
        "trust    {} trusted key(s), {} signature(s) required",
        ev.trusted_keys, ev.min_signatures
    )?;
    for step in &ev.checks {
        let mark = if step.passed {
            out.state("ok")
        } else {
            out.state("failed")
        };
        if step.detail.is_empty() {
            writeln!(w, "check    {:<12} {mark}", step.check)?;
        } else {
            writeln!(w, "check    {:<12} {mark}: {}", step.check, step.detail)?;
        }
    }
    match &ev.refused {
        None => writeln!(w, "this node would accept it"),
        Some(r) => writeln!(
            w,
            "{} at the {} check",
            out.warn("this node would refuse it"),
            r.check
        ),
    }
}
