//! `encrypt --input F [--output F] [--recipient PUBKEY.pem|NODE_ID]...` and
//! `decrypt --input F [--output F]`.

use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};

use crate::crypto;
use crate::ops::crypt::Recipient;
use crate::ops::{self, Context};

use super::{Finish, Output};

#[derive(Debug, clap::Args)]
pub struct EncryptArgs {
    /// The file to seal.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Where to write (default: the input's name plus .cmmenc); never overwritten.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Who may open it: a public key PEM file or one of this node's ids; repeatable (default: this node).
    #[arg(long, value_name = "PUBKEY.pem|NODE_ID")]
    recipient: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct DecryptArgs {
    /// The sealed file.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Where to write (default: the input's name without .cmmenc); never overwritten.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn encrypt(home: Option<PathBuf>, args: EncryptArgs, out: &Output) -> anyhow::Result<Finish> {
    remove_partial_output_on_signals()?;
    let mut ctx = Context::open(home)?;
    let recipients: Vec<Recipient> = args.recipient.iter().map(|r| Recipient::parse(r)).collect();
    let sealed = ops::crypt::encrypt(&mut ctx, &args.input, args.output, &recipients)?;
    out.emit(&sealed, |w| {
        writeln!(
            w,
            "sealed {} bytes for {} recipient{} into {}",
            sealed.summary.plaintext_bytes,
            sealed.summary.recipients.len(),
            if sealed.summary.recipients.len() == 1 {
                ""
            } else {
                "s"
            },
            sealed.output.display()
        )
    })?;
    Ok(Finish::Done)
}

pub fn decrypt(home: Option<PathBuf>, args: DecryptArgs, out: &Output) -> anyhow::Result<Finish> {
    remove_partial_output_on_signals()?;
    let mut ctx = Context::open(home)?;
    let opened = ops::crypt::decrypt(&mut ctx, &args.input, args.output)?;
    out.emit(&opened, |w| {
        writeln!(
            w,
            "opened {} bytes into {} (sealed for {})",
            opened.summary.bytes,
            opened.output.display(),
            &opened.summary.recipient[..12.min(opened.summary.recipient.len())]
        )
    })?;
    Ok(Finish::Done)
}

/// An interrupted `encrypt` or `decrypt` leaves nothing behind: on SIGINT,
/// SIGTERM or SIGHUP the temporary output is removed before the process
/// ends with 128 + the signal's number, as a shell reports it. The signals
/// are taken before any work starts, so none is missed.
fn remove_partial_output_on_signals() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut interrupt, mut terminate, mut hangup) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    std::thread::spawn(move || {
        let code = runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => 130,
                _ = terminate.recv() => 143,
                _ = hangup.recv() => 129,
            }
        });
        crypto::remove_pending_outputs();
        eprintln!("interrupted; the partial output was removed");
        std::process::exit(code);
    });
    Ok(())
}
