//! A command task's workspace between nodes: packed as a tar, sealed to its
//! readers (the candidate providers going out, the requester coming back),
//! stored as an object of the market's object store, and on the other side
//! fetched, opened, checked against the digest the signed task or result
//! names, and unpacked with every check a container's returned workspace
//! gets. Packing and sealing, and opening and unpacking, run as pipelines:
//! only the sealed copy is a scratch file, in a folder the caller owns.

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
/// using `scratch` for the sealed copy. The tar is sealed as it is packed,
/// through a pipe: it is never written out whole.
pub fn send(
    rt: &tokio::runtime::Handle,
    transport: &Transport,
    dir: &Dir,
    scratch: &Path,
    name: &str,
    readers: &[PublicKey],
) -> Result<WorkspaceObject, TransferError> {
    let sealed_path = scratch.join(format!("{name}.cmmenc"));
    let (tar_out, tar_in) = pipe(scratch)?;
    let (packed, sealed) = std::thread::scope(|s| {
        let packing = s.spawn(move || {
            workspace::pack(dir, std::io::BufWriter::with_capacity(1 << 16, tar_in))
        });
        let sealed = seal_file(std::io::BufReader::new(tar_out), &sealed_path, readers);
        (joined(packing), sealed)
    });
    let stored = match (packed, sealed) {
        (Err(e), _) => Err(e.into()),
        (Ok(_), Err(e)) => Err(e.into()),
        (Ok(packed), Ok(sealed)) => rt
            .block_on(transport.put_workspace(name, &sealed_path))
            .map(|()| (packed, sealed))
            .map_err(TransferError::from),
    };
    let _ = std::fs::remove_file(&sealed_path);
    let (packed, sealed) = stored?;
    Ok(WorkspaceObject {
        object: name.to_owned(),
        stored_bytes: sealed.stored_bytes,
        sha256: sealed.sha256,
        bytes: packed.bytes,
        files: packed.files,
    })
}

/// Fetches `object`, opens it with `keys` and unpacks it into `dest` (an
/// empty folder) within `limits`, giving what it unpacks to `owner` when
/// one is given, using `scratch` for the sealed copy. An object larger than
/// `limits` allow is refused before it is read. The tar is unpacked as it
/// is decrypted, through a pipe; the digest is known only at the end, so on
/// an error the caller must throw `dest` away.
pub fn receive(
    rt: &tokio::runtime::Handle,
    transport: &Transport,
    object: &WorkspaceObject,
    keys: &[NodeKey],
    scratch: &Path,
    (dest, limits, owner): (&Dir, Limits, Option<(u32, u32)>),
) -> Result<Received, TransferError> {
    let sealed_path = scratch.join(format!("{}.cmmenc", object.object));
    let fetched =
        rt.block_on(transport.get_workspace(&object.object, stored_bound(limits), &sealed_path));
    let unpacked = match fetched {
        Ok(Some(_)) => unpack_sealed(&sealed_path, object, keys, scratch, dest, limits),
        Ok(None) => Err(TransferError::Missing {
            object: object.object.clone(),
        }),
        Err(e) => Err(e.into()),
    };
    let _ = std::fs::remove_file(&sealed_path);
    let received = unpacked?;
    if let Some(owner) = owner {
        workspace::give_to(dest, &received.manifest, owner)?;
    }
    Ok(received)
}

/// Decrypts the sealed file into the unpacker. A failure to open (a
/// changed byte, a wrong digest) comes first: what was unpacked of it is
/// not to be used, however that went.
fn unpack_sealed(
    sealed: &Path,
    object: &WorkspaceObject,
    keys: &[NodeKey],
    scratch: &Path,
    dest: &Dir,
    limits: Limits,
) -> Result<Received, TransferError> {
    let (tar_out, tar_in) = pipe(scratch)?;
    let (opened, unpacked) = std::thread::scope(|s| {
        let opening = s.spawn(move || open_file(sealed, tar_in, keys, &object.sha256));
        // The unpacker drops its end when it stops early, so the opener's
        // next write fails instead of waiting for ever.
        let unpacked = workspace::unpack(std::io::BufReader::new(tar_out), dest, limits);
        (joined(opening), unpacked)
    });
    opened?;
    Ok(unpacked?)
}

fn pipe(scratch: &Path) -> Result<(std::io::PipeReader, std::io::PipeWriter), TransferError> {
    std::io::pipe().map_err(|source| TransferError::Scratch {
        path: scratch.to_path_buf(),
        source,
    })
}

/// A scoped thread's result; its panic is the caller's.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
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
