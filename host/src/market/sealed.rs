//! Payloads too large for a message (a command task's workspace, both
//! ways) travel as files sealed (CMMENC) to their readers, stored as
//! objects. The signed message that names an object carries the SHA-256 of
//! what is inside; a reader keeps what it opened only when it decrypts and
//! matches that digest, so a byte changed anywhere in the store is refused,
//! never half used.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::crypto::{self, EnvelopeError, NodeKey, PublicKey};

/// What sealing a file made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
    /// The sealed file's size.
    pub stored_bytes: u64,
}

/// Why a sealed file could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot use {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("it does not decrypt with this node's keys: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("what it holds is not what the message describes (its SHA-256 differs)")]
    Digest,
}

/// Seals what `plain` reads to `recipients` into a new file at `sealed`.
pub fn seal_file(
    plain: impl Read,
    sealed: &Path,
    recipients: &[PublicKey],
) -> Result<Sealed, SealError> {
    let mut hashed = Hashing::new(plain);
    let mut writer = BufWriter::new(create(sealed)?);
    crypto::encrypt(
        &mut hashed,
        &mut writer,
        recipients,
        crypto::DEFAULT_SEGMENT_SIZE,
    )?;
    // A scratch copy that lives until it is stored: flushed, never synced.
    let file = writer
        .into_inner()
        .map_err(|e| file_err(sealed, e.into_error()))?;
    let stored_bytes = file.metadata().map_err(|e| file_err(sealed, e))?.len();
    Ok(Sealed {
        sha256: hashed.hex(),
        stored_bytes,
    })
}

/// Opens the sealed file at `sealed` into `plain` and checks what it wrote
/// against `sha256`. Each segment is authenticated before it is written,
/// but the digest is known only at the end: on an error the reader must
/// throw away whatever `plain` received.
pub fn open_file(
    sealed: &Path,
    plain: impl Write,
    keys: &[NodeKey],
    sha256: &str,
) -> Result<u64, SealError> {
    let reader = BufReader::new(open(sealed)?);
    let mut writer = Hashing::new(plain);
    let summary = crypto::decrypt(reader, &mut writer, keys)?;
    writer.inner.flush().map_err(|e| file_err(sealed, e))?;
    if !writer.hex().eq_ignore_ascii_case(sha256) {
        return Err(SealError::Digest);
    }
    Ok(summary.bytes)
}

fn open(path: &Path) -> Result<File, SealError> {
    File::open(path).map_err(|e| file_err(path, e))
}

fn create(path: &Path) -> Result<File, SealError> {
    File::create(path).map_err(|e| file_err(path, e))
}

fn file_err(path: &Path, source: io::Error) -> SealError {
    SealError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// A reader or writer that hashes what passes through it.
struct Hashing<T> {
    inner: T,
    hash: Sha256,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hash: Sha256::new(),
        }
    }

    fn hex(&self) -> String {
        hex::encode(self.hash.clone().finalize())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::testutil::shared_keys;

    fn content() -> Vec<u8> {
        (0..300_000u32).map(|i| (i % 251) as u8).collect()
    }

    fn sealed_pair() -> (tempfile::TempDir, PathBuf, Sealed) {
        let dir = tempfile::tempdir().unwrap();
        let sealed_path = dir.path().join("sealed");
        let sealed = seal_file(
            content().as_slice(),
            &sealed_path,
            &[shared_keys()[0].public().clone()],
        )
        .unwrap();
        assert_eq!(sealed.sha256, hex::encode(Sha256::digest(content())));
        (dir, sealed_path, sealed)
    }

    #[test]
    fn a_sealed_file_opens_for_its_reader_with_its_digest() {
        let (_dir, path, sealed) = sealed_pair();
        let mut out = Vec::new();
        let bytes = open_file(&path, &mut out, &shared_keys()[..1], &sealed.sha256).unwrap();
        assert_eq!(bytes, 300_000);
        assert_eq!(out, content());
        assert_eq!(sealed.stored_bytes, std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn a_flipped_byte_a_wrong_digest_or_a_wrong_key_is_refused() {
        let (dir, path, sealed) = sealed_pair();
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        let flipped = dir.path().join("flipped");
        std::fs::write(&flipped, bytes).unwrap();
        let keys = &shared_keys()[..1];
        let sink = std::io::sink;
        assert!(matches!(
            open_file(&flipped, sink(), keys, &sealed.sha256),
            Err(SealError::Envelope(_))
        ));
        assert!(matches!(
            open_file(&path, sink(), keys, &"0".repeat(64)),
            Err(SealError::Digest)
        ));
        assert!(open_file(&path, sink(), &shared_keys()[1..2], &sealed.sha256).is_err());
    }
}
