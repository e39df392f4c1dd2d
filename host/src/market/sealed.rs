//! Payloads too large for a message (a command task's workspace, both
//! ways) travel as files sealed (CMMENC) to their readers, stored as
//! objects. The signed message that names an object carries the SHA-256 of
//! what is inside; a reader opens the object into a file of its own and
//! uses it only when it decrypts and matches that digest, so a byte changed
//! anywhere in the store is refused, never half used.

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

/// Seals the file at `plain` to `recipients` into a new file at `sealed`.
pub fn seal_file(
    plain: &Path,
    sealed: &Path,
    recipients: &[PublicKey],
) -> Result<Sealed, SealError> {
    let reader = Hashing::new(BufReader::new(open(plain)?));
    let mut writer = BufWriter::new(create(sealed)?);
    let mut hashed = reader;
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

/// Opens the sealed file at `sealed` into a new file at `plain`, checking
/// it against `sha256`. On any failure `plain` is removed: a reader never
/// keeps what did not verify.
pub fn open_file(
    sealed: &Path,
    plain: &Path,
    keys: &[NodeKey],
    sha256: &str,
) -> Result<u64, SealError> {
    let opened = (|| {
        let reader = BufReader::new(open(sealed)?);
        let mut writer = Hashing::new(BufWriter::new(create(plain)?));
        let summary = crypto::decrypt(reader, &mut writer, keys)?;
        writer.inner.flush().map_err(|e| file_err(plain, e))?;
        if !writer.hex().eq_ignore_ascii_case(sha256) {
            return Err(SealError::Digest);
        }
        Ok(summary.bytes)
    })();
    if opened.is_err() {
        let _ = std::fs::remove_file(plain);
    }
    opened
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

    fn sealed_pair() -> (tempfile::TempDir, PathBuf, Sealed) {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&plain, &content).unwrap();
        let sealed_path = dir.path().join("sealed");
        let sealed = seal_file(&plain, &sealed_path, &[shared_keys()[0].public().clone()]).unwrap();
        assert_eq!(sealed.sha256, hex::encode(Sha256::digest(&content)));
        (dir, sealed_path, sealed)
    }

    #[test]
    fn a_sealed_file_opens_for_its_reader_with_its_digest() {
        let (dir, path, sealed) = sealed_pair();
        let out = dir.path().join("out");
        let bytes = open_file(&path, &out, &shared_keys()[..1], &sealed.sha256).unwrap();
        assert_eq!(bytes, 300_000);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(dir.path().join("plain")).unwrap()
        );
        assert_eq!(sealed.stored_bytes, std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn a_flipped_byte_a_wrong_digest_or_a_wrong_key_leaves_nothing() {
        let (dir, path, sealed) = sealed_pair();
        let out = dir.path().join("out");
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        let flipped = dir.path().join("flipped");
        std::fs::write(&flipped, bytes).unwrap();
        let keys = &shared_keys()[..1];
        assert!(matches!(
            open_file(&flipped, &out, keys, &sealed.sha256),
            Err(SealError::Envelope(_))
        ));
        assert!(!out.exists());
        assert!(matches!(
            open_file(&path, &out, keys, &"0".repeat(64)),
            Err(SealError::Digest)
        ));
        assert!(!out.exists());
        assert!(open_file(&path, &out, &shared_keys()[1..2], &sealed.sha256).is_err());
        assert!(!out.exists());
    }
}
