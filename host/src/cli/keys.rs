//! `keys show | export-public [--out F] | rotate`

use std::path::PathBuf;

use crate::ops::{self, Context};

use super::{Finish, Output, prompt};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// This node's id and key pairs (makes the first pair if there is none).
    Show,
    /// Print the current public key as PEM, or write it to a file.
    ExportPublic {
        /// Write the PEM here instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Make a new current pair; the old one decrypts for security.keyRotationDays more days.
    /// On a market node the new id starts with no balance: asks first.
    Rotate {
        /// Rotate without a prompt, also on a market node.
        #[arg(long, short)]
        yes: bool,
    },
}

pub fn run(home: Option<PathBuf>, cmd: Command, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    match cmd {
        Command::Show => {
            let report = ops::keys::show(&mut ctx)?;
            out.emit(&report, |w| {
                let c = &report.current;
                if report.created_now {
                    writeln!(w, "made this node's first key pair")?;
                }
                writeln!(w, "node id  {} ({})", c.short_id, c.node_id)?;
                writeln!(
                    w,
                    "created  {} ({} days ago; rotate after {})",
                    c.created, c.age_days, report.rotation_days
                )?;
                for r in &report.retired {
                    writeln!(
                        w,
                        "retired  {} decrypts until {}",
                        r.short_id,
                        r.usable_until.as_deref().unwrap_or("-")
                    )?;
                }
                Ok(())
            })?;
        }
        Command::ExportPublic { out: file } => {
            let pem = ops::keys::export_public(&mut ctx, file.as_ref())?;
            let doc = serde_json::json!({ "public_key_pem": pem, "written": file });
            out.emit(&doc, |w| match &file {
                Some(path) => writeln!(w, "wrote {}", path.display()),
                None => write!(w, "{pem}"),
            })?;
        }
        Command::Rotate { yes } => {
            let confirmed = yes
                || !ops::keys::on_the_market(&ctx)?
                || (prompt::interactive()
                    && prompt::confirm(
                        "This node trades on the market; the new key is a new market identity with no balance. Rotate?",
                    )?);
            let rotated = ops::keys::rotate(&mut ctx, confirmed)?;
            out.emit(&rotated, |w| {
                writeln!(
                    w,
                    "rotated: {} is current; {} decrypts until {}",
                    rotated.new.short_id,
                    rotated.old.short_id,
                    rotated.old.usable_until.as_deref().unwrap_or("-")
                )
            })?;
        }
    }
    Ok(Finish::Done)
}
