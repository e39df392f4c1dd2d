//! `encrypt` and `decrypt`: files sealed for one or more nodes' public keys
//! in the streaming format of `crypto::envelope` (docs/encryption.md).
//! Neither ever leaves a partial output: the envelope writes to a temporary
//! file and renames it into place only once everything verified.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::crypto::{
    DEFAULT_SEGMENT_SIZE, DecryptSummary, EncryptSummary, PublicKey, decrypt_file, encrypt_file,
};

use super::{Context, OpsError, keys};

/// The extension `encrypt` adds and `decrypt` takes off by default.
const EXTENSION: &str = "cmmenc";

/// A recipient as given on the command line.
#[derive(Debug, Clone)]
pub enum Recipient {
    /// A PEM public key file.
    PublicKeyFile(PathBuf),
    /// A node id (or a unique prefix of at least 8 hex digits) of one of
    /// this node's own key pairs.
    NodeId(String),
}

impl Recipient {
    /// A path that exists is a key file; anything else is read as a node id.
    pub fn parse(text: &str) -> Recipient {
        if Path::new(text).exists() {
            Recipient::PublicKeyFile(text.into())
        } else {
            Recipient::NodeId(text.to_ascii_lowercase())
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Sealed {
    pub output: PathBuf,
    #[serde(flatten)]
    pub summary: EncryptSummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct Opened {
    pub output: PathBuf,
    #[serde(flatten)]
    pub summary: DecryptSummary,
}

/// Seals `input` for `recipients` (default: this node).
pub fn encrypt(
    ctx: &mut Context,
    input: &Path,
    output: Option<PathBuf>,
    recipients: &[Recipient],
) -> Result<Sealed, OpsError> {
    let output = output.unwrap_or_else(|| with_extension(input));
    refuse_existing(&output)?;
    let (own, _, _) = keys::current(ctx)?;
    let mut keys = Vec::new();
    if recipients.is_empty() {
        keys.push(own.public().clone());
    }
    for r in recipients {
        keys.push(resolve(ctx, r)?);
    }
    let summary = encrypt_file(input, &output, &keys, DEFAULT_SEGMENT_SIZE)?;
    Ok(Sealed { output, summary })
}

/// Opens `input` with any of this node's keys that may still decrypt.
pub fn decrypt(
    ctx: &mut Context,
    input: &Path,
    output: Option<PathBuf>,
) -> Result<Opened, OpsError> {
    let output = match output {
        Some(path) => path,
        None => without_extension(input).ok_or_else(|| OpsError::InvalidInput {
            what: format!(
                "{} does not end in .{EXTENSION}; pass --output FILE",
                input.display()
            ),
        })?,
    };
    refuse_existing(&output)?;
    let keys = keys::decryption_keys(ctx)?;
    let summary = decrypt_file(input, &output, &keys)?;
    Ok(Opened { output, summary })
}

fn resolve(ctx: &Context, recipient: &Recipient) -> Result<PublicKey, OpsError> {
    match recipient {
        Recipient::PublicKeyFile(path) => {
            let pem = std::fs::read_to_string(path).map_err(|source| OpsError::Read {
                path: path.clone(),
                source,
            })?;
            Ok(PublicKey::from_pem(&pem)?)
        }
        Recipient::NodeId(id) => {
            let store = keys::store(ctx)?;
            let known = store.list()?;
            let matches: Vec<_> = known
                .iter()
                .filter(|k| id.len() >= 8 && k.id.starts_with(id.as_str()))
                .collect();
            match matches.as_slice() {
                [one] => {
                    let key =
                        crate::crypto::NodeKey::read_file(&store.key_path(&one.id), None, None);
                    match key {
                        Ok(key) => Ok(key.public().clone()),
                        Err(_) => Err(unknown(id)),
                    }
                }
                _ => Err(unknown(id)),
            }
        }
    }
}

fn unknown(id: &str) -> OpsError {
    OpsError::InvalidInput {
        what: format!(
            "'{id}' is neither a public key file nor the node id of one of this node's keys \
             (at least 8 hex digits); pass the recipient's public key PEM \
             (`claude-max-market keys export-public` on their node)"
        ),
    }
}

fn with_extension(input: &Path) -> PathBuf {
    let mut name = input.as_os_str().to_owned();
    name.push(format!(".{EXTENSION}"));
    PathBuf::from(name)
}

fn without_extension(input: &Path) -> Option<PathBuf> {
    (input.extension()? == EXTENSION).then(|| input.with_extension(""))
}

/// Never overwrite: the user's file is worth more than a retry.
fn refuse_existing(output: &Path) -> Result<(), OpsError> {
    if output.exists() {
        return Err(OpsError::InvalidInput {
            what: format!(
                "{} already exists; remove it or pass another --output",
                output.display()
            ),
        });
    }
    Ok(())
}
