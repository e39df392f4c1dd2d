//! `policy …`: the active plugin per role, signed bundles and the plugin
//! author's tools. This file parses and dispatches; `bundle`, `trust` and
//! `author` print their parts, `download` draws the bundle download bar.

mod author;
mod bundle;
mod download;
mod trust;

use std::path::PathBuf;

use crate::ops::policy::PolicyStatus;
use crate::ops::{self, Context};
use crate::policy::Role;

use super::output::short;
use super::{Finish, Output};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The active plugin for every role, with its bundle revision and origin.
    List,
    /// The active plugin for one role.
    Show { role: Role },
    /// Activate a local component for a role (refused once a signing key is trusted).
    Set { role: Role, file: PathBuf },
    /// Go back to the built-in default for a role.
    Reset { role: Role },
    /// Make a policy signing key pair: NAME.pem (private, 0600) and NAME.pub.
    Keygen(author::KeygenArgs),
    /// Build an unsigned bundle from a folder holding bundle.toml (or the file).
    Build(author::BuildArgs),
    /// Add a signature to a bundle, in place.
    Sign(author::SignArgs),
    /// Check a bundle as `install` would, without activating it; exit 1 if it fails.
    Verify { file: PathBuf },
    /// What a bundle holds, who signed it, and whether this node would install it.
    Inspect { file: PathBuf },
    /// Manage the public keys trusted to sign policy bundles.
    #[command(subcommand)]
    Trust(trust::Command),
    /// Check, store and activate a bundle from a file, an http(s) URL or
    /// oci://HOST[:PORT]/REPOSITORY:TAG (or @sha256:DIGEST).
    Install(bundle::InstallArgs),
    /// Fetch every URL (If-None-Match) and OCI tag installed from; install what changed.
    Update,
    /// Upload a signed bundle to an OCI registry: FILE oci://HOST[:PORT]/REPOSITORY:TAG.
    Push(bundle::PushArgs),
    /// Activate an installed bundle revision: NAME@REVISION.
    Activate(bundle::ActivateArgs),
    /// Go back to the previous installed revision of a bundle (a downgrade).
    Rollback(bundle::RollbackArgs),
    /// Scaffold a Rust plugin crate for a role.
    New(author::NewArgs),
    /// Run table-driven cases against a component or bundle; exit 1 on any failure.
    Test(author::TestArgs),
    /// Time a component's or bundle's decisions, fresh instance and warm.
    Bench(author::BenchArgs),
}

pub fn run(home: Option<PathBuf>, cmd: Command, out: &Output) -> anyhow::Result<Finish> {
    match cmd {
        Command::Keygen(args) => return author::keygen(args, out),
        Command::Build(args) => return author::build(args, out),
        Command::Sign(args) => return author::sign(args, out),
        Command::New(args) => return author::new(args, out),
        _ => {}
    }
    let mut ctx = Context::open(home)?;
    let statuses = match cmd {
        Command::List => {
            let statuses = ops::policy::list(&ctx)?;
            out.emit(&statuses, |w| {
                for s in &statuses {
                    print_status(w, s, out)?;
                }
                Ok(())
            })?;
            return Ok(Finish::Done);
        }
        Command::Show { role } => ops::policy::show(&ctx, role)?,
        Command::Set { role, file } => ops::policy::set(&mut ctx, role, &file)?,
        Command::Reset { role } => ops::policy::reset(&mut ctx, role)?,
        Command::Verify { file } => return bundle::verify(&ctx, &file, out),
        Command::Inspect { file } => return bundle::inspect(&ctx, &file, out),
        Command::Trust(cmd) => return trust::run(&mut ctx, cmd, out),
        Command::Install(args) => return bundle::install(&mut ctx, args, out),
        Command::Update => return bundle::update(&mut ctx, out),
        Command::Push(args) => return bundle::push(&ctx, args, out),
        Command::Activate(args) => return bundle::activate(&mut ctx, args, out),
        Command::Rollback(args) => return bundle::rollback(&mut ctx, args, out),
        Command::Test(args) => return author::test(&ctx, args, out),
        Command::Bench(args) => return author::bench(&ctx, args, out),
        Command::Keygen(_) | Command::Build(_) | Command::Sign(_) | Command::New(_) => {
            unreachable!("handled before opening the data folder")
        }
    };
    out.emit(&statuses, |w| print_status(w, &statuses, out))?;
    Ok(Finish::Done)
}

fn print_status(w: &mut dyn std::io::Write, s: &PolicyStatus, out: &Output) -> std::io::Result<()> {
    writeln!(
        w,
        "{} ({}): {}",
        s.role.as_str(),
        s.world,
        out.state(&s.state)
    )?;
    writeln!(w, "  plugin  {}", s.plugin.name)?;
    match &s.plugin.bundle {
        Some(bundle) => writeln!(w, "  origin  bundle {bundle}")?,
        None => writeln!(w, "  origin  {}", s.plugin.origin.as_str())?,
    }
    if let Some(source) = &s.source {
        writeln!(w, "  from    {source}")?;
    }
    writeln!(w, "  sha256  {}", short(&s.plugin.digest))?;
    if let Some(at) = &s.activated_at {
        writeln!(w, "  since   {at}")?;
    }
    if let Some(problem) = &s.problem {
        writeln!(w, "  problem {problem}")?;
    }
    Ok(())
}
