//! `policy trust add FILE [--name N] | remove KEYID | list`

use std::path::PathBuf;

use crate::cli::output::short;
use crate::cli::{Finish, Output};
use crate::ops::{Context, policy_trust};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Trust the public key (PEM) in FILE to sign policy bundles.
    Add {
        file: PathBuf,
        /// A name for the key (default: the file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Stop trusting a key (its id, or the first 12+ hex digits of it).
    Remove { key_id: String },
    /// The trusted keys.
    List,
}

pub fn run(ctx: &mut Context, cmd: Command, out: &Output) -> anyhow::Result<Finish> {
    match cmd {
        Command::Add { file, name } => {
            let added = policy_trust::add(ctx, &file, name.as_deref())?;
            out.emit(&added, |w| {
                let k = &added.key;
                if added.added {
                    writeln!(w, "trusted {} '{}' ({} bits)", short(&k.key_id), k.name, k.bits)?;
                } else {
                    writeln!(w, "{} '{}' was already trusted", short(&k.key_id), k.name)?;
                }
                writeln!(
                    w,
                    "bundles now need policy.minSignatures valid signatures from trusted keys; unsigned bundles and loose components are refused"
                )?;
                if !added.loose_roles.is_empty() {
                    writeln!(
                        w,
                        "{} loose components are active for {}: those roles now deny every job until you install a signed bundle or `policy reset` them",
                        out.warn("warning:"),
                        added.loose_roles.join(", ")
                    )?;
                }
                Ok(())
            })?;
        }
        Command::Remove { key_id } => {
            let removed = policy_trust::remove(ctx, &key_id)?;
            out.emit(&removed, |w| {
                writeln!(
                    w,
                    "no longer trusting {} '{}'",
                    short(&removed.key_id),
                    removed.name
                )
            })?;
        }
        Command::List => {
            let keys = policy_trust::list(ctx)?;
            out.emit(&keys, |w| {
                if keys.is_empty() {
                    return writeln!(
                        w,
                        "no trusted keys: any bundle (signed or not) and loose components may be activated"
                    );
                }
                for k in &keys {
                    writeln!(w, "{}  {:<16} {} bits  added {}", k.key_id, k.name, k.bits, k.added_at)?;
                }
                Ok(())
            })?;
        }
    }
    Ok(Finish::Done)
}
