//! A command task's workspace between nodes: packed as a tar, sealed to its
//! readers (the candidate providers going out, the requester coming back),
//! stored as an object of the market's object store, and on the other side
//! fetched, opened, checked against the digest the signed task or result
//! names, and unpacked with every check a container's returned workspace
//! gets. Scratch files live in a folder the caller owns and removes.

use std::path::Path;

use cap_std::fs::Dir;

use crate::crypto::{NodeKey, PublicKey};
use crate::workspace::{self, Limits, Received, WorkspaceError};

use super::MarketError;
use super::sealed::{SealError, open_file, seal_file};
use super::transport::Transport;
use super::types::WorkspaceObject;

/// Why a workspace could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("the workspace cannot be used: {0}")]
    Sealed(#[from] SealError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Market(#[from] MarketError),
    #[error("cannot write {}: {source}", path.display())]
    Scratch {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the workspace object {object} is not in the market's object store (expired or removed)"
    )]
    Missing { object: String },
}

/// Packs `dir`, seals it to `readers` and stores it as object `name`,
/// using `scratch` for the packed and sealed copies.
pub fn send(
    rt: &tokio::runtime::Handle,
    transport: &Transport,
    dir: &Dir,
    scratch: &Path,
    name: &str,
    readers: &[PublicKey],
) -> Result<WorkspaceObject, TransferError> {
    let tar = scratch.join(format!("{name}.tar"));
    let sealed_path = scratch.join(format!("{name}.cmmenc"));
    let file = std::fs::File::create(&tar).map_err(|source| TransferError::Scratch {
        path: tar.clone(),
        source,
    })?;
    let packed = workspace::pack(dir, std::io::BufWriter::new(file));
    let packed = match packed {
        Ok(packed) => packed,
        Err(e) => {
            let _ = std::fs::remove_file(&tar);
            return Err(e.into());
        }
    };
    let sealed = seal_file(&tar, &sealed_path, readers);
    let _ = std::fs::remove_file(&tar);
    let sealed = sealed?;
    let stored = rt.block_on(transport.put_workspace(name, &sealed_path));
    let _ = std::fs::remove_file(&sealed_path);
    stored?;
    Ok(WorkspaceObject {
        object: name.to_owned(),
        stored_bytes: sealed.stored_bytes,
        sha256: sealed.sha256,
        bytes: packed.bytes,
        files: packed.files,
    })
}

/// Fetches `object`, opens it with `keys` and unpacks it into `dest` (an
/// empty folder) within `limits`, using `scratch` for the sealed and opened
/// copies. An object larger than `limits` allow is refused before it is
/// read, and one that does not open or verify before anything is unpacked.
pub fn receive(
    rt: &tokio::runtime::Handle,
    transport: &Transport,
    object: &WorkspaceObject,
    keys: &[NodeKey],
    scratch: &Path,
    dest: &Dir,
    limits: Limits,
) -> Result<Received, TransferError> {
    let sealed_path = scratch.join(format!("{}.cmmenc", object.object));
    let tar = scratch.join(format!("{}.tar", object.object));
    let fetched =
        rt.block_on(transport.get_workspace(&object.object, stored_bound(limits), &sealed_path));
    let opened = match fetched {
        Ok(Some(_)) => open_file(&sealed_path, &tar, keys, &object.sha256).map_err(Into::into),
        Ok(None) => Err(TransferError::Missing {
            object: object.object.clone(),
        }),
        Err(e) => Err(e.into()),
    };
    let _ = std::fs::remove_file(&sealed_path);
    let unpacked = opened.and_then(|_| {
        let file = std::fs::File::open(&tar).map_err(|source| TransferError::Scratch {
            path: tar.clone(),
            source,
        })?;
        Ok(workspace::unpack(
            std::io::BufReader::new(file),
            dest,
            limits,
        )?)
    });
    let _ = std::fs::remove_file(&tar);
    unpacked
}

/// The largest sealed object a workspace within `limits` can make: its
/// bytes, a tar header and padding (and a long name's extra header) per
/// entry, the tar's end, and the envelope's header and per-segment tags.
pub fn stored_bound(limits: Limits) -> u64 {
    let tar = limits
        .max_bytes
        .saturating_add(u64::from(limits.max_files).saturating_mul(2048))
        .saturating_add(10_240);
    tar.saturating_add(tar / 256).saturating_add(1 << 20)
}
