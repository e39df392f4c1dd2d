//! Streaming hybrid encryption of prompts and results between nodes.
//!
//! A random 32-byte content key encrypts the data with AES-256-GCM in
//! fixed-size segments; the content key is wrapped with RSA-OAEP-SHA256 for
//! each recipient. Memory use is flat in the input size: encryption holds
//! one segment, decryption one segment's ciphertext plus its plaintext.
//! The byte format and the reasoning behind each check are specified in
//! `docs/encryption.md`.
//!
//! Segment nonces are `prefix(7) || counter(u32 BE) || last(1)`, and every
//! segment's AAD is SHA-256 of the whole header. This detects modification
//! anywhere, reordering, truncation (no segment carries the last flag) and
//! extension (data after the last-flagged segment).
//!
//! The streaming [`decrypt`] hands the writer each segment only after it
//! has verified, but a later segment can still fail after earlier ones were
//! written. [`decrypt_file`] and [`encrypt_file`] therefore write to a
//! temporary file and rename it into place only after the last segment
//! verified: on any error no output file exists.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use pkcs8::der::zeroize::Zeroizing;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};
use sha2::{Digest, Sha256};

use super::fsutil;
pub use super::header::{
    DEFAULT_SEGMENT_SIZE, FIXED_HEADER_LEN, FORMAT_VERSION, KEY_ID_LEN, MAGIC, MAX_RECIPIENTS,
    MAX_SEGMENT_SIZE, MAX_WRAPPED_KEY_LEN, MIN_SEGMENT_SIZE, NONCE_PREFIX_LEN, TAG_LEN,
};
use super::header::{Header, Recipient, check_segment_size, read_full};
use super::keys::{NodeKey, PublicKey, short_hex};
use super::rng::{self, RngError};

/// Length of the AES-256 content key.
pub const CONTENT_KEY_LEN: usize = 32;

/// When a segment fails authentication, the decryptor tries it under nearby
/// counters to tell reordering apart from modification. These bound that
/// work: at most this many positions in each direction...
const REORDER_SEARCH_DISTANCE: u64 = 256;
/// ...and at most about this many bytes of trial decryption in total.
const REORDER_SEARCH_BYTES: usize = 64 * 1024 * 1024;

/// Errors from encrypting or decrypting. Each decryption failure mode has
/// its own variant; all of them mean the output must not be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error(
        "encryption needs at least one recipient public key; pass the recipient's PEM public key"
    )]
    NoRecipients,

    #[error(
        "{count} recipients is more than the {MAX_RECIPIENTS} one file may have; encrypt separately for groups of recipients"
    )]
    TooManyRecipients { count: usize },

    #[error(
        "segment size {size} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE} bytes; use the default of {DEFAULT_SEGMENT_SIZE}"
    )]
    InvalidSegmentSize { size: usize },

    #[error(
        "the input is not a claude-max-market encrypted file (it does not start with \"CMMENC\"); check that the right file was given"
    )]
    BadMagic,

    #[error(
        "the encrypted file uses format version {version}, but this build reads only version {FORMAT_VERSION}; upgrade claude-max-market to read it"
    )]
    UnsupportedVersion { version: u8 },

    #[error(
        "the encrypted file's header is malformed ({reason}); the file is corrupt or was not written by claude-max-market"
    )]
    MalformedHeader { reason: String },

    #[error(
        "this file is not encrypted to any key of this node: its recipients are [{}], this node's keys are [{}]; ask the sender to encrypt to this node's current public key",
        recipients.join(", "),
        ours.join(", ")
    )]
    WrongKey {
        /// Short ids of the file's recipients.
        recipients: Vec<String>,
        /// Short ids of the keys that were tried.
        ours: Vec<String>,
    },

    #[error(
        "the content key wrapped for this node's key {recipient} does not decrypt with that key: the file's header was modified or corrupted; fetch the file again"
    )]
    BadWrappedKey { recipient: String },

    #[error(
        "segment {segment} failed authentication: the encrypted file was modified or corrupted (a change anywhere in the header makes every segment fail); discard any output and fetch the file again"
    )]
    Tampered { segment: u64 },

    #[error(
        "the segment at position {position} is segment {found} of this file: segments were reordered, duplicated or removed; discard any output and fetch the file again"
    )]
    OutOfOrder { position: u64, found: u64 },

    #[error(
        "the encrypted data ends after {segments} complete segment(s) without its final segment: the file is truncated (an interrupted transfer?); fetch it again"
    )]
    Truncated { segments: u64 },

    #[error(
        "segment {segment}, the last {len} bytes of the file, is not a valid final segment: the file was cut off inside this segment, bytes were appended to it, or it was modified; fetch it again"
    )]
    BadFinalSegment { segment: u64, len: usize },

    #[error(
        "data follows the final segment (segment {segment}): bytes were appended to the encrypted file; fetch it again"
    )]
    TrailingData { segment: u64 },

    #[error(
        "the data needs more than 2^32 segments of {segment_size} bytes, which would reuse nonces; use a larger segment size"
    )]
    TooManySegments { segment_size: usize },

    #[error("wrapping the content key for recipient {recipient} failed: {source}")]
    Wrap {
        recipient: String,
        source: rsa::Error,
    },

    #[error("AES-256-GCM rejected the operation; this is a bug, please report it")]
    Cipher,

    #[error("reading the input failed: {0}")]
    Read(#[source] io::Error),

    #[error("writing the output failed: {0}")]
    Write(#[source] io::Error),

    #[error("could not {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("the output {} is the input file; choose a different output path", path.display())]
    SameFile { path: PathBuf },

    #[error(transparent)]
    Rng(#[from] RngError),
}

/// What [`encrypt`] produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EncryptSummary {
    /// Node ids of the recipients, in header order (duplicates removed).
    pub recipients: Vec<String>,
    /// Number of segments written (at least 1).
    pub segments: u64,
    /// Plaintext bytes read.
    pub plaintext_bytes: u64,
    /// Bytes written (header + segments + tags).
    pub ciphertext_bytes: u64,
}

/// What [`decrypt`] produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DecryptSummary {
    /// Node id (hex key id) of the key that unwrapped the content key.
    pub recipient: String,
    /// Plaintext bytes written.
    pub bytes: u64,
    /// Number of segments verified.
    pub segments: u64,
}

/// AES-256-GCM under one content key, with the per-file nonce prefix and
/// header hash that every segment's nonce and AAD are built from.
pub(crate) struct SegmentCipher {
    key: LessSafeKey,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    aad: [u8; 32],
    segment_size: usize,
}

impl SegmentCipher {
    pub(crate) fn new(
        content_key: &[u8; CONTENT_KEY_LEN],
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
        header_hash: [u8; 32],
        segment_size: usize,
    ) -> Result<Self, EnvelopeError> {
        let key = UnboundKey::new(&AES_256_GCM, content_key).map_err(|_| EnvelopeError::Cipher)?;
        Ok(SegmentCipher {
            key: LessSafeKey::new(key),
            nonce_prefix,
            aad: header_hash,
            segment_size,
        })
    }

    /// `prefix(7) || counter (u32 BE) || last flag`. A counter that does
    /// not fit in 32 bits is refused rather than wrapped, so no nonce is
    /// ever used twice under one key.
    fn nonce(&self, counter: u64, last: bool) -> Result<Nonce, EnvelopeError> {
        let counter = u32::try_from(counter).map_err(|_| EnvelopeError::TooManySegments {
            segment_size: self.segment_size,
        })?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        nonce[NONCE_PREFIX_LEN..NONCE_LEN - 1].copy_from_slice(&counter.to_be_bytes());
        nonce[NONCE_LEN - 1] = u8::from(last);
        Ok(Nonce::assume_unique_for_key(nonce))
    }

    /// Encrypts `plaintext` in place and returns its tag.
    fn seal(&self, counter: u64, last: bool, plaintext: &mut [u8]) -> Result<Tag, EnvelopeError> {
        let nonce = self.nonce(counter, last)?;
        self.key
            .seal_in_place_separate_tag(nonce, Aad::from(&self.aad), plaintext)
            .map_err(|_| EnvelopeError::Cipher)
    }

    /// Decrypts the segment (ciphertext || tag) at `region[ct_start..]` into
    /// `region[..len - TAG_LEN]`, leaving the ciphertext untouched so that a
    /// failed segment can be examined afterwards. Returns the plaintext
    /// length, or `None` if the segment does not authenticate under this
    /// counter and flag.
    fn open_shifted(
        &self,
        counter: u64,
        last: bool,
        region: &mut [u8],
        ct_start: usize,
    ) -> Result<Option<usize>, EnvelopeError> {
        let nonce = self.nonce(counter, last)?;
        Ok(self
            .key
            .open_within(nonce, Aad::from(&self.aad), region, ct_start..)
            .ok()
            .map(|plaintext| plaintext.len()))
    }
}

/// Encrypts everything `reader` yields to `recipients`, writing the
/// encrypted file to `writer`. `segment_size` is normally
/// [`DEFAULT_SEGMENT_SIZE`].
pub fn encrypt<R: Read, W: Write>(
    mut reader: R,
    mut writer: W,
    recipients: &[PublicKey],
    segment_size: usize,
) -> Result<EncryptSummary, EnvelopeError> {
    check_segment_size(segment_size)?;
    let mut unique: Vec<&PublicKey> = Vec::with_capacity(recipients.len());
    for key in recipients {
        if !unique.iter().any(|seen| seen.key_id() == key.key_id()) {
            unique.push(key);
        }
    }
    if unique.is_empty() {
        return Err(EnvelopeError::NoRecipients);
    }
    if unique.len() > MAX_RECIPIENTS {
        return Err(EnvelopeError::TooManyRecipients {
            count: unique.len(),
        });
    }

    let content_key: Zeroizing<[u8; CONTENT_KEY_LEN]> = Zeroizing::new(rng::random_array()?);
    let nonce_prefix: [u8; NONCE_PREFIX_LEN] = rng::random_array()?;
    let wrapped = unique
        .iter()
        .map(|key| {
            Ok(Recipient {
                key_id: *key.key_id(),
                wrapped_key: key.wrap(content_key.as_slice()).map_err(|source| {
                    EnvelopeError::Wrap {
                        recipient: key.short_id(),
                        source,
                    }
                })?,
            })
        })
        .collect::<Result<Vec<_>, EnvelopeError>>()?;
    let header = Header {
        segment_size: u32::try_from(segment_size)
            .map_err(|_| EnvelopeError::InvalidSegmentSize { size: segment_size })?,
        nonce_prefix,
        recipients: wrapped,
    };
    let header_bytes = header.encode()?;
    writer
        .write_all(&header_bytes)
        .map_err(EnvelopeError::Write)?;

    let cipher = SegmentCipher::new(
        &content_key,
        nonce_prefix,
        Sha256::digest(&header_bytes).into(),
        segment_size,
    )?;
    let (segments, plaintext_bytes) = encrypt_body(&mut reader, &mut writer, &cipher)?;
    Ok(EncryptSummary {
        recipients: unique.iter().map(|key| key.node_id()).collect(),
        segments,
        plaintext_bytes,
        ciphertext_bytes: header_bytes.len() as u64 + plaintext_bytes + segments * TAG_LEN as u64,
    })
}

/// Writes the segments of everything `reader` yields. Returns the number
/// of segments and plaintext bytes.
///
/// One buffer of `segment_size + TAG_LEN` bytes is reused throughout. To
/// know whether a full segment is the last one, one byte beyond it is read
/// ahead (into the byte after the segment) and carried into the next one.
pub(crate) fn encrypt_body<R: Read, W: Write>(
    reader: &mut R,
    writer: &mut W,
    cipher: &SegmentCipher,
) -> Result<(u64, u64), EnvelopeError> {
    let segment_size = cipher.segment_size;
    let mut buf = vec![0u8; segment_size + TAG_LEN];
    let mut carried = 0;
    let mut counter: u64 = 0;
    let mut total: u64 = 0;
    loop {
        let filled = carried
            + read_full(reader, &mut buf[carried..=segment_size]).map_err(EnvelopeError::Read)?;
        let last = filled <= segment_size;
        let len = filled.min(segment_size);
        let lookahead = buf[segment_size];
        let tag = cipher.seal(counter, last, &mut buf[..len])?;
        buf[len..len + TAG_LEN].copy_from_slice(tag.as_ref());
        writer
            .write_all(&buf[..len + TAG_LEN])
            .map_err(EnvelopeError::Write)?;
        total += len as u64;
        counter += 1;
        if last {
            writer.flush().map_err(EnvelopeError::Write)?;
            return Ok((counter, total));
        }
        buf[0] = lookahead;
        carried = 1;
    }
}

/// Decrypts an encrypted file from `reader` with whichever of `keys` it is
/// encrypted to, writing verified plaintext to `writer` segment by segment.
///
/// On error, `writer` may already hold the plaintext of the segments before
/// the failing one; use [`decrypt_file`] (or discard the output) when that
/// matters.
pub fn decrypt<R: Read, W: Write>(
    mut reader: R,
    mut writer: W,
    keys: &[NodeKey],
) -> Result<DecryptSummary, EnvelopeError> {
    let (header, raw) = Header::read(&mut reader)?;
    let (content_key, recipient) = unwrap_content_key(&header, keys)?;
    let cipher = SegmentCipher::new(
        &content_key,
        header.nonce_prefix,
        Sha256::digest(&raw).into(),
        header.segment_size as usize,
    )?;
    let (segments, bytes) = decrypt_body(&mut reader, &mut writer, &cipher)?;
    Ok(DecryptSummary {
        recipient,
        bytes,
        segments,
    })
}

/// Finds a header entry for one of `keys` and unwraps the content key.
/// Returns the key and the node id of the key that unwrapped it.
fn unwrap_content_key(
    header: &Header,
    keys: &[NodeKey],
) -> Result<(Zeroizing<[u8; CONTENT_KEY_LEN]>, String), EnvelopeError> {
    let mut failed_for = None;
    for key in keys {
        for entry in header
            .recipients
            .iter()
            .filter(|r| &r.key_id == key.key_id())
        {
            let content_key = key
                .unwrap_key(&entry.wrapped_key)
                .ok()
                .and_then(|k| <[u8; CONTENT_KEY_LEN]>::try_from(k.as_slice()).ok());
            match content_key {
                Some(content_key) => return Ok((Zeroizing::new(content_key), key.node_id())),
                None => failed_for = Some(key.short_id()),
            }
        }
    }
    match failed_for {
        Some(recipient) => Err(EnvelopeError::BadWrappedKey { recipient }),
        None => Err(EnvelopeError::WrongKey {
            recipients: header
                .recipients
                .iter()
                .map(|r| short_hex(&r.key_id))
                .collect(),
            ours: keys.iter().map(NodeKey::short_id).collect(),
        }),
    }
}

/// Verifies and decrypts the segments from `reader`, writing each one's
/// plaintext to `writer` only after it authenticated. Returns the number
/// of segments and plaintext bytes.
///
/// The buffer holds one segment's plaintext area followed by its
/// ciphertext and one byte of look-ahead:
/// `[plaintext: segment_size][ciphertext+tag: segment_size + 16][1]`.
/// Decrypting into the separate area keeps the ciphertext intact, which
/// [`diagnose`] needs to name the failure precisely.
pub(crate) fn decrypt_body<R: Read, W: Write>(
    reader: &mut R,
    writer: &mut W,
    cipher: &SegmentCipher,
) -> Result<(u64, u64), EnvelopeError> {
    let segment_size = cipher.segment_size;
    let chunk_cap = segment_size + TAG_LEN;
    let ct_start = segment_size;
    let mut buf = vec![0u8; ct_start + chunk_cap + 1];
    let mut carried = 0;
    let mut counter: u64 = 0;
    let mut total: u64 = 0;
    loop {
        let filled = carried
            + read_full(reader, &mut buf[ct_start + carried..]).map_err(EnvelopeError::Read)?;
        let last = filled <= chunk_cap;
        let len = filled.min(chunk_cap);
        if len < TAG_LEN {
            return Err(EnvelopeError::Truncated { segments: counter });
        }
        let region = &mut buf[..ct_start + len];
        let Some(plain_len) = cipher.open_shifted(counter, last, region, ct_start)? else {
            return Err(diagnose(cipher, region, ct_start, counter, last));
        };
        writer
            .write_all(&buf[..plain_len])
            .map_err(EnvelopeError::Write)?;
        total += plain_len as u64;
        counter += 1;
        if last {
            writer.flush().map_err(EnvelopeError::Write)?;
            return Ok((counter, total));
        }
        buf[ct_start] = buf[ct_start + chunk_cap];
        carried = 1;
    }
}

/// Works out why the segment at `position` failed, by trying it under the
/// other last-flag and under nearby counters. Only runs on the error path.
fn diagnose(
    cipher: &SegmentCipher,
    region: &mut [u8],
    ct_start: usize,
    position: u64,
    last: bool,
) -> EnvelopeError {
    let len = region.len() - ct_start;
    let mut opens = |counter: u64, flag: bool| {
        matches!(
            cipher.open_shifted(counter, flag, region, ct_start),
            Ok(Some(_))
        )
    };
    // A valid non-final segment where the stream ends: cut at a boundary.
    // A valid final segment where more data follows: bytes were appended.
    if opens(position, !last) {
        return if last {
            EnvelopeError::Truncated {
                segments: position + 1,
            }
        } else {
            EnvelopeError::TrailingData { segment: position }
        };
    }
    let per_distance_bytes = 4 * len.max(1);
    let distance_limit = u64::try_from(REORDER_SEARCH_BYTES / per_distance_bytes)
        .unwrap_or(REORDER_SEARCH_DISTANCE)
        .clamp(1, REORDER_SEARCH_DISTANCE);
    for distance in 1..=distance_limit {
        let candidates = [
            position.checked_add(distance),
            position.checked_sub(distance),
        ];
        for counter in candidates.into_iter().flatten() {
            if opens(counter, false) || opens(counter, true) {
                return EnvelopeError::OutOfOrder {
                    position,
                    found: counter,
                };
            }
        }
    }
    if last {
        EnvelopeError::BadFinalSegment {
            segment: position,
            len,
        }
    } else {
        EnvelopeError::Tampered { segment: position }
    }
}

/// Encrypts file `input` to `output` (see [`encrypt`]). The output appears
/// only when encryption completed; on error no output file is created and
/// an existing one is left as it was.
pub fn encrypt_file(
    input: &Path,
    output: &Path,
    recipients: &[PublicKey],
    segment_size: usize,
) -> Result<EncryptSummary, EnvelopeError> {
    with_atomic_output(input, output, |reader, writer| {
        encrypt(reader, writer, recipients, segment_size)
    })
}

/// Decrypts file `input` to `output` (see [`decrypt`]). The output appears
/// only after the last segment verified; on any error no output file is
/// created and an existing one is left as it was.
pub fn decrypt_file(
    input: &Path,
    output: &Path,
    keys: &[NodeKey],
) -> Result<DecryptSummary, EnvelopeError> {
    with_atomic_output(input, output, |reader, writer| {
        decrypt(reader, writer, keys)
    })
}

/// How a temporary output's name ends; it starts with `.` and the output's
/// name.
const TEMP_SUFFIX: &str = ".tmp";

/// Runs `work` from `input` into a 0600 temporary file next to `output`,
/// then fsyncs it and renames it over `output`. If `work` fails, the
/// temporary file is deleted (when the `NamedTempFile` drops); a signal
/// handler can delete it through `fsutil::remove_pending`, and a process
/// killed outright leaves it for the next run for the same output to sweep.
fn with_atomic_output<T>(
    input: &Path,
    output: &Path,
    work: impl FnOnce(&mut File, &mut File) -> Result<T, EnvelopeError>,
) -> Result<T, EnvelopeError> {
    let file_err = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| EnvelopeError::File {
            action,
            path,
            source,
        }
    };
    let mut reader = File::open(input).map_err(file_err("open input", input))?;
    if is_same_file(input, output) {
        return Err(EnvelopeError::SameFile {
            path: output.to_path_buf(),
        });
    }
    let dir = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut prefix = OsString::from(".");
    prefix.push(output.file_name().unwrap_or_default());
    prefix.push(".");
    if let Some(prefix) = prefix.to_str() {
        fsutil::sweep_stale(dir, prefix, TEMP_SUFFIX);
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
        .map_err(file_err("create a temporary file in", dir))?;
    // Held until the file is renamed or removed: it tells a later run's
    // sweep that this file is not stale.
    tmp.as_file().lock().map_err(file_err("lock", tmp.path()))?;
    let _pending = fsutil::Pending::register(tmp.path());
    let result = work(&mut reader, tmp.as_file_mut())?;
    tmp.as_file()
        .sync_all()
        .map_err(file_err("sync", tmp.path()))?;
    tmp.persist(output)
        .map_err(|err| file_err("rename the finished output to", output)(err.error))?;
    fsutil::sync_dir(dir).map_err(file_err("sync directory", dir))?;
    Ok(result)
}

/// Whether `a` and `b` name the same existing file (also through symlinks
/// or hard links).
fn is_same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(meta_a), Ok(meta_b)) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                meta_a.dev() == meta_b.dev() && meta_a.ino() == meta_b.ino()
            }
            #[cfg(not(unix))]
            {
                let _ = (meta_a, meta_b);
                matches!(
                    (std::fs::canonicalize(a), std::fs::canonicalize(b)),
                    (Ok(ca), Ok(cb)) if ca == cb
                )
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::crypto::testutil::{shared_keys, vector_key};

    /// Small segments keep the tamper fixtures readable.
    const S: usize = MIN_SEGMENT_SIZE;
    const CHUNK: usize = S + TAG_LEN;

    /// Deterministic, incompressible-looking test data (xorshift64).
    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    fn seal(plaintext: &[u8], recipients: &[&NodeKey], segment_size: usize) -> Vec<u8> {
        let publics: Vec<PublicKey> = recipients.iter().map(|k| k.public().clone()).collect();
        let mut out = Vec::new();
        let summary = encrypt(plaintext, &mut out, &publics, segment_size).expect("encrypt");
        assert_eq!(summary.ciphertext_bytes, out.len() as u64);
        assert_eq!(summary.plaintext_bytes, plaintext.len() as u64);
        out
    }

    fn open(
        ciphertext: &[u8],
        keys: &[NodeKey],
    ) -> Result<(Vec<u8>, DecryptSummary), EnvelopeError> {
        let mut out = Vec::new();
        let summary = decrypt(ciphertext, &mut out, keys)?;
        Ok((out, summary))
    }

    fn header_len(ciphertext: &[u8]) -> usize {
        let (_, raw) = Header::read(&mut &ciphertext[..]).expect("header parses");
        raw.len()
    }

    fn roundtrip(len: usize, segment_size: usize, expected_segments: u64) {
        let key = &shared_keys()[0];
        let plaintext = pseudo_random(len, len as u64 + 7);
        let ciphertext = seal(&plaintext, &[key], segment_size);
        assert_eq!(
            ciphertext.len(),
            header_len(&ciphertext) + len + TAG_LEN * expected_segments as usize
        );
        let (decrypted, summary) = open(&ciphertext, std::slice::from_ref(key)).expect("decrypt");
        assert_eq!(decrypted, plaintext);
        assert_eq!(summary.segments, expected_segments);
        assert_eq!(summary.bytes, len as u64);
        assert_eq!(summary.recipient, key.node_id());
    }

    #[test]
    fn roundtrip_empty_input_is_one_empty_segment() {
        roundtrip(0, S, 1);
    }

    #[test]
    fn roundtrip_exactly_one_segment() {
        roundtrip(S, S, 1);
    }

    #[test]
    fn roundtrip_one_byte_over_a_segment() {
        roundtrip(S + 1, S, 2);
    }

    #[test]
    fn roundtrip_exact_multiple_has_full_last_segment() {
        roundtrip(3 * S, S, 3);
    }

    #[test]
    fn roundtrip_many_segments() {
        roundtrip(5 * 1024 * 1024, DEFAULT_SEGMENT_SIZE, 80);
    }

    /// Yields at most 7 bytes per read, with an `Interrupted` now and then,
    /// like a slow pipe.
    struct Trickle<'a> {
        data: &'a [u8],
        calls: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(5) {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            let n = buf.len().min(7).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_do_not_change_the_result() {
        let key = &shared_keys()[0];
        let plaintext = pseudo_random(5 * S + 3, 1);
        let mut ciphertext = Vec::new();
        let reader = Trickle {
            data: &plaintext,
            calls: 0,
        };
        encrypt(reader, &mut ciphertext, &[key.public().clone()], S).expect("encrypt");
        let mut decrypted = Vec::new();
        let reader = Trickle {
            data: &ciphertext,
            calls: 0,
        };
        decrypt(reader, &mut decrypted, std::slice::from_ref(key)).expect("decrypt");
        assert_eq!(decrypted, plaintext);
    }

    #[test]
    fn every_recipient_decrypts_and_others_get_wrong_key() {
        let [a, b, c, outsider] = shared_keys();
        let plaintext = pseudo_random(3000, 2);
        let ciphertext = seal(&plaintext, &[a, b, c], S);
        for key in [a, b, c] {
            let (decrypted, summary) =
                open(&ciphertext, std::slice::from_ref(key)).expect("recipient decrypts");
            assert_eq!(decrypted, plaintext);
            assert_eq!(summary.recipient, key.node_id());
        }
        // A node with several keys uses whichever matches.
        let (_, summary) = open(&ciphertext, &[outsider.clone(), c.clone()]).expect("decrypt");
        assert_eq!(summary.recipient, c.node_id());

        let err = open(&ciphertext, std::slice::from_ref(outsider)).unwrap_err();
        let EnvelopeError::WrongKey { recipients, ours } = &err else {
            panic!("expected WrongKey, got {err:?}");
        };
        assert_eq!(recipients, &[a.short_id(), b.short_id(), c.short_id()]);
        assert_eq!(ours, &[outsider.short_id()]);
        let message = err.to_string();
        assert!(message.contains(&a.short_id()) && message.contains(&outsider.short_id()));
    }

    #[test]
    fn duplicate_recipients_are_listed_once() {
        let key = &shared_keys()[1];
        let mut out = Vec::new();
        let publics = [key.public().clone(), key.public().clone()];
        let summary = encrypt(&b"x"[..], &mut out, &publics, S).expect("encrypt");
        assert_eq!(summary.recipients, [key.node_id()]);
        let (header, _) = Header::read(&mut &out[..]).expect("header");
        assert_eq!(header.recipients.len(), 1);
    }

    #[test]
    fn encrypt_rejects_bad_parameters() {
        let public = shared_keys()[0].public().clone();
        for size in [0, MIN_SEGMENT_SIZE - 1, MAX_SEGMENT_SIZE + 1] {
            let err =
                encrypt(&b""[..], Vec::new(), std::slice::from_ref(&public), size).unwrap_err();
            assert!(matches!(err, EnvelopeError::InvalidSegmentSize { size: s } if s == size));
        }
        let err = encrypt(&b""[..], Vec::new(), &[], S).unwrap_err();
        assert!(matches!(err, EnvelopeError::NoRecipients));
    }

    #[test]
    fn nonce_layout_and_counter_overflow() {
        let cipher = SegmentCipher::new(&[7; 32], [1, 2, 3, 4, 5, 6, 7], [0; 32], S).expect("key");
        let nonce = cipher.nonce(0x0102_0304, true).expect("nonce");
        assert_eq!(nonce.as_ref(), &[1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 1]);
        let nonce = cipher
            .nonce(u64::from(u32::MAX), false)
            .expect("last counter");
        assert_eq!(&nonce.as_ref()[7..], &[0xff, 0xff, 0xff, 0xff, 0]);
        let overflow = cipher.nonce(u64::from(u32::MAX) + 1, false);
        assert!(matches!(
            overflow,
            Err(EnvelopeError::TooManySegments { segment_size: S })
        ));
    }

    /// Three full segments and a 100-byte last one, for the recipient
    /// `shared_keys()[0]`. Returns (plaintext, ciphertext, header length).
    fn fixture(len: usize) -> (Vec<u8>, Vec<u8>, usize) {
        let plaintext = pseudo_random(len, 3);
        let ciphertext = seal(&plaintext, &[&shared_keys()[0]], S);
        let header = header_len(&ciphertext);
        (plaintext, ciphertext, header)
    }

    fn standard_fixture() -> (Vec<u8>, usize) {
        let (_, ciphertext, header) = fixture(3 * S + 100);
        (ciphertext, header)
    }

    /// Decrypts `ciphertext` with `decrypt_file` and checks the fail-closed
    /// guarantee: no output file appears, an existing output is left alone,
    /// and no temporary file is left behind. Returns the error.
    fn file_failure(ciphertext: &[u8], keys: &[NodeKey]) -> EnvelopeError {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("in.cmmenc");
        let output = dir.path().join("out.txt");
        fs::write(&input, ciphertext).expect("write input");
        let err = decrypt_file(&input, &output, keys).expect_err("decryption must fail");
        assert!(!output.exists(), "no output may exist after {err:?}");

        fs::write(&output, b"previous").expect("write old output");
        let again = decrypt_file(&input, &output, keys).expect_err("decryption must fail");
        assert_eq!(again.to_string(), err.to_string());
        assert_eq!(fs::read(&output).expect("read old output"), b"previous");

        let mut names: Vec<String> = fs::read_dir(dir.path())
            .expect("list dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["in.cmmenc", "out.txt"],
            "temporary file left behind"
        );
        err
    }

    fn tampered(mutate: impl FnOnce(&mut Vec<u8>, usize)) -> EnvelopeError {
        let (mut ciphertext, header) = standard_fixture();
        mutate(&mut ciphertext, header);
        file_failure(&ciphertext, std::slice::from_ref(&shared_keys()[0]))
    }

    /// Start of segment `i` in the standard fixture.
    fn seg(header: usize, i: usize) -> usize {
        header + i * CHUNK
    }

    #[test]
    fn bad_magic() {
        let err = tampered(|ct, _| ct[0] ^= 0x01);
        assert!(matches!(err, EnvelopeError::BadMagic), "{err:?}");
    }

    #[test]
    fn unsupported_version() {
        let err = tampered(|ct, _| ct[6] = 2);
        assert!(
            matches!(err, EnvelopeError::UnsupportedVersion { version: 2 }),
            "{err:?}"
        );
    }

    #[test]
    fn flipped_header_byte_fails_every_segment() {
        // A nonce-prefix byte: the header still parses but its hash (the AAD)
        // changed, so segment 0 already fails.
        let err = tampered(|ct, _| ct[11] ^= 0x80);
        assert!(
            matches!(err, EnvelopeError::Tampered { segment: 0 }),
            "{err:?}"
        );
    }

    #[test]
    fn changed_segment_size_fails_authentication() {
        let err = tampered(|ct, _| ct[7..11].copy_from_slice(&2048u32.to_be_bytes()));
        assert!(
            matches!(err, EnvelopeError::Tampered { segment: 0 }),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_header_fields() {
        let err = tampered(|ct, _| ct[18..20].copy_from_slice(&[0, 0]));
        assert!(
            matches!(err, EnvelopeError::MalformedHeader { .. }),
            "{err:?}"
        );
        let err = tampered(|ct, _| ct[7..11].copy_from_slice(&[0, 0, 0, 1]));
        assert!(
            matches!(err, EnvelopeError::MalformedHeader { .. }),
            "{err:?}"
        );
        let err = tampered(|ct, _| ct[52..54].copy_from_slice(&[0xff, 0xff]));
        assert!(
            matches!(err, EnvelopeError::MalformedHeader { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn flipped_recipient_key_id_is_wrong_key() {
        let err = tampered(|ct, _| ct[FIXED_HEADER_LEN] ^= 0x01);
        assert!(matches!(err, EnvelopeError::WrongKey { .. }), "{err:?}");
    }

    #[test]
    fn flipped_wrapped_key() {
        let err = tampered(|ct, _| ct[FIXED_HEADER_LEN + KEY_ID_LEN + 2 + 10] ^= 0x01);
        let EnvelopeError::BadWrappedKey { recipient } = &err else {
            panic!("expected BadWrappedKey, got {err:?}");
        };
        assert_eq!(recipient, &shared_keys()[0].short_id());
    }

    #[test]
    fn flipped_segment_byte() {
        let err = tampered(|ct, h| ct[seg(h, 1) + 5] ^= 0x01);
        assert!(
            matches!(err, EnvelopeError::Tampered { segment: 1 }),
            "{err:?}"
        );
    }

    #[test]
    fn flipped_tag_byte() {
        let err = tampered(|ct, h| ct[seg(h, 1) + S + 3] ^= 0x01);
        assert!(
            matches!(err, EnvelopeError::Tampered { segment: 1 }),
            "{err:?}"
        );
    }

    #[test]
    fn flipped_byte_in_final_segment() {
        let err = tampered(|ct, h| ct[seg(h, 3) + 1] ^= 0x01);
        assert!(
            matches!(
                err,
                EnvelopeError::BadFinalSegment {
                    segment: 3,
                    len: 116
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_mid_segment() {
        let err = tampered(|ct, h| ct.truncate(seg(h, 2) + 500));
        assert!(
            matches!(
                err,
                EnvelopeError::BadFinalSegment {
                    segment: 2,
                    len: 500
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_inside_a_tag_length() {
        let err = tampered(|ct, h| ct.truncate(seg(h, 2) + 10));
        assert!(
            matches!(err, EnvelopeError::Truncated { segments: 2 }),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_at_segment_boundary() {
        let err = tampered(|ct, h| ct.truncate(seg(h, 2)));
        assert!(
            matches!(err, EnvelopeError::Truncated { segments: 2 }),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_after_header() {
        let err = tampered(|ct, h| ct.truncate(h));
        assert!(
            matches!(err, EnvelopeError::Truncated { segments: 0 }),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_inside_header() {
        let err = tampered(|ct, h| ct.truncate(h - 1));
        assert!(
            matches!(err, EnvelopeError::MalformedHeader { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn appended_after_full_final_segment() {
        let (_, mut ciphertext, header) = fixture(2 * S);
        ciphertext.push(0);
        let err = file_failure(&ciphertext, std::slice::from_ref(&shared_keys()[0]));
        assert!(
            matches!(err, EnvelopeError::TrailingData { segment: 1 }),
            "{err:?}"
        );

        // Appending a copy of the final segment is caught the same way.
        let (_, mut ciphertext, _) = fixture(2 * S);
        let last = ciphertext[seg(header, 1)..].to_vec();
        ciphertext.extend_from_slice(&last);
        let err = file_failure(&ciphertext, std::slice::from_ref(&shared_keys()[0]));
        assert!(
            matches!(err, EnvelopeError::TrailingData { segment: 1 }),
            "{err:?}"
        );
    }

    #[test]
    fn appended_after_short_final_segment() {
        // Without a length field the appended bytes merge into the short
        // final segment, which then fails as a final segment.
        let err = tampered(|ct, _| ct.extend_from_slice(b"extra"));
        assert!(
            matches!(
                err,
                EnvelopeError::BadFinalSegment {
                    segment: 3,
                    len: 121
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn swapped_segments() {
        let err = tampered(|ct, h| {
            let first = ct[seg(h, 0)..seg(h, 1)].to_vec();
            let third = ct[seg(h, 2)..seg(h, 3)].to_vec();
            ct[seg(h, 0)..seg(h, 1)].copy_from_slice(&third);
            ct[seg(h, 2)..seg(h, 3)].copy_from_slice(&first);
        });
        assert!(
            matches!(
                err,
                EnvelopeError::OutOfOrder {
                    position: 0,
                    found: 2
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn duplicated_segment() {
        let err = tampered(|ct, h| {
            let second = ct[seg(h, 1)..seg(h, 2)].to_vec();
            ct.splice(seg(h, 2)..seg(h, 2), second);
        });
        assert!(
            matches!(
                err,
                EnvelopeError::OutOfOrder {
                    position: 2,
                    found: 1
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn removed_segment() {
        let err = tampered(|ct, h| {
            ct.drain(seg(h, 1)..seg(h, 2));
        });
        assert!(
            matches!(
                err,
                EnvelopeError::OutOfOrder {
                    position: 1,
                    found: 2
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn wrong_key_leaves_no_output() {
        let (ciphertext, _) = standard_fixture();
        let err = file_failure(&ciphertext, std::slice::from_ref(&shared_keys()[3]));
        assert!(matches!(err, EnvelopeError::WrongKey { .. }), "{err:?}");
    }

    #[test]
    fn streaming_writer_only_receives_verified_segments() {
        let (plaintext, mut ciphertext, header) = fixture(3 * S + 100);
        ciphertext[seg(header, 2) + 7] ^= 0x01;
        let mut out = Vec::new();
        let err = decrypt(
            &ciphertext[..],
            &mut out,
            std::slice::from_ref(&shared_keys()[0]),
        )
        .unwrap_err();
        assert!(
            matches!(err, EnvelopeError::Tampered { segment: 2 }),
            "{err:?}"
        );
        assert_eq!(out, plaintext[..2 * S]);
    }

    #[test]
    fn file_helpers_roundtrip_with_private_output() {
        let key = &shared_keys()[0];
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("prompt.txt");
        let sealed = dir.path().join("prompt.cmmenc");
        let opened = dir.path().join("prompt.out");
        let plaintext = pseudo_random(200_000, 4);
        fs::write(&plain, &plaintext).expect("write");
        let summary = encrypt_file(
            &plain,
            &sealed,
            &[key.public().clone()],
            DEFAULT_SEGMENT_SIZE,
        )
        .expect("encrypt_file");
        assert_eq!(summary.segments, 4);
        let summary =
            decrypt_file(&sealed, &opened, std::slice::from_ref(key)).expect("decrypt_file");
        assert_eq!(summary.bytes, plaintext.len() as u64);
        assert_eq!(fs::read(&opened).expect("read"), plaintext);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for path in [&sealed, &opened] {
                let mode = fs::metadata(path).expect("stat").permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", path.display());
            }
        }
    }

    #[test]
    fn file_helpers_refuse_output_equal_to_input() {
        let key = &shared_keys()[0];
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("a.txt");
        fs::write(&plain, b"keep me").expect("write");
        let err = encrypt_file(&plain, &plain, &[key.public().clone()], S).unwrap_err();
        assert!(matches!(err, EnvelopeError::SameFile { .. }), "{err:?}");
        let err = decrypt_file(&plain, &plain, std::slice::from_ref(key)).unwrap_err();
        assert!(matches!(err, EnvelopeError::SameFile { .. }), "{err:?}");
        #[cfg(unix)]
        {
            let link = dir.path().join("link.txt");
            std::os::unix::fs::symlink(&plain, &link).expect("symlink");
            let err = encrypt_file(&plain, &link, &[key.public().clone()], S).unwrap_err();
            assert!(matches!(err, EnvelopeError::SameFile { .. }), "{err:?}");
        }
        assert_eq!(fs::read(&plain).expect("read"), b"keep me");
    }

    #[test]
    fn missing_input_creates_no_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("out");
        let err = decrypt_file(&dir.path().join("absent"), &output, &[]).unwrap_err();
        assert!(
            matches!(
                err,
                EnvelopeError::File {
                    action: "open input",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!output.exists());
    }

    /// Seals `plaintext` with explicit key material and returns the
    /// ciphertext segments; used to check the published body vectors.
    fn seal_segments(
        content_key: &[u8; CONTENT_KEY_LEN],
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
        header_hash: [u8; 32],
        segment_size: usize,
        plaintext: &[u8],
    ) -> Result<Vec<Vec<u8>>, EnvelopeError> {
        let cipher = SegmentCipher::new(content_key, nonce_prefix, header_hash, segment_size)?;
        let mut body = Vec::new();
        encrypt_body(&mut &plaintext[..], &mut body, &cipher)?;
        Ok(body
            .chunks(segment_size + TAG_LEN)
            .map(<[u8]>::to_vec)
            .collect())
    }

    fn hex_field(value: &serde_json::Value, field: &str) -> Vec<u8> {
        let text = value[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is a string"));
        hex::decode(text).unwrap_or_else(|err| panic!("{field} is hex: {err}"))
    }

    #[test]
    fn body_vectors() {
        let json: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/vectors/body-vectors.json"
        )))
        .expect("vector JSON");
        let content_key: [u8; 32] = hex_field(&json, "content_key")
            .try_into()
            .expect("32 bytes");
        assert_eq!(content_key, std::array::from_fn::<u8, 32, _>(|i| i as u8));
        let vectors = json["vectors"].as_array().expect("vectors");
        assert_eq!(vectors.len(), 3);
        for vector in vectors {
            let name = vector["name"].as_str().expect("name");
            let plaintext = hex_field(vector, "plaintext");
            let header = hex_field(vector, "header");
            let prefix: [u8; 7] = hex_field(vector, "nonce_prefix")
                .try_into()
                .expect("7 bytes");
            let aad: [u8; 32] = hex_field(vector, "aad").try_into().expect("32 bytes");
            let segment_size = vector["segment_size"].as_u64().expect("size") as usize;
            let segments: Vec<Vec<u8>> = vector["segments"]
                .as_array()
                .expect("segments")
                .iter()
                .map(|s| hex::decode(s.as_str().expect("string")).expect("hex"))
                .collect();

            let (parsed, raw) = Header::read(&mut &header[..]).expect("vector header parses");
            assert_eq!(raw, header, "{name}");
            assert_eq!(parsed.nonce_prefix, prefix, "{name}");
            assert_eq!(parsed.segment_size as usize, segment_size, "{name}");
            assert_eq!(<[u8; 32]>::from(Sha256::digest(&header)), aad, "{name}");

            let sealed =
                seal_segments(&content_key, prefix, aad, segment_size, &plaintext).expect("seal");
            assert_eq!(sealed, segments, "{name}: segments differ");

            let mut file = header.clone();
            file.extend(segments.concat());
            let (decrypted, summary) = open(&file, &[vector_key()]).expect("vector decrypts");
            assert_eq!(decrypted, plaintext, "{name}");
            assert_eq!(summary.segments, segments.len() as u64, "{name}");
        }
        let names: Vec<&str> = vectors.iter().filter_map(|v| v["name"].as_str()).collect();
        assert_eq!(names, ["empty", "one-segment", "three-segments"]);
    }

    #[test]
    fn hello_vector_decrypts_with_test_key() {
        let ciphertext = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/vectors/hello.cmmenc"
        ));
        let expected = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/vectors/hello.txt"
        ));
        let key = vector_key();
        let (plaintext, summary) = open(ciphertext, std::slice::from_ref(&key)).expect("decrypt");
        assert_eq!(plaintext, expected);
        assert_eq!(summary.recipient, key.node_id());
        assert_eq!(summary.segments, 1);
        let (header, _) = Header::read(&mut &ciphertext[..]).expect("header");
        assert_eq!(header.segment_size as usize, DEFAULT_SEGMENT_SIZE);
    }
}
