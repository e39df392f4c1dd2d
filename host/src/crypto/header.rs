//! The envelope header: format constants, encoding, and a strict parser.
//!
//! The header's exact bytes are hashed into the AAD of every segment, so the
//! parser keeps the raw bytes it consumed alongside the parsed fields. The
//! parser enforces size limits before allocating, so a hostile header cannot
//! make the reader allocate more than about 1 MiB.

use std::io::{self, Read};

use super::envelope::EnvelopeError;

/// First six bytes of every encrypted file.
pub const MAGIC: &[u8; 6] = b"CMMENC";
/// The only format version this code reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the random per-file nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Bytes before the first recipient entry: magic, version, segment size,
/// nonce prefix, recipient count.
pub const FIXED_HEADER_LEN: usize = 20;
/// Length of a recipient key id (SHA-256 of the recipient's SPKI DER).
pub const KEY_ID_LEN: usize = 32;
/// AES-256-GCM tag length appended to every segment.
pub const TAG_LEN: usize = 16;
/// Smallest allowed plaintext segment size.
pub const MIN_SEGMENT_SIZE: usize = 1024;
/// Largest allowed plaintext segment size.
pub const MAX_SEGMENT_SIZE: usize = 16 * 1024 * 1024;
/// Segment size used unless the caller chooses another.
pub const DEFAULT_SEGMENT_SIZE: usize = 64 * 1024;
/// Most recipients one file may have (an implementation limit that bounds
/// header size; the count field itself is a u16).
pub const MAX_RECIPIENTS: usize = 1024;
/// Largest accepted wrapped key: one RSA-8192 ciphertext. Keys are capped
/// at 4096 bits today; the margin keeps larger future keys readable.
pub const MAX_WRAPPED_KEY_LEN: usize = 1024;

/// One recipient entry: who can unwrap, and the wrapped content key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    pub(crate) key_id: [u8; KEY_ID_LEN],
    pub(crate) wrapped_key: Vec<u8>,
}

/// Parsed header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) segment_size: u32,
    pub(crate) nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub(crate) recipients: Vec<Recipient>,
}

impl Header {
    /// Serializes the header. Callers validate sizes first (see
    /// [`Header::check_sizes`]), so the length conversions cannot truncate.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        self.check_sizes()?;
        let count =
            u16::try_from(self.recipients.len()).map_err(|_| EnvelopeError::TooManyRecipients {
                count: self.recipients.len(),
            })?;
        let mut out = Vec::with_capacity(
            FIXED_HEADER_LEN
                + self
                    .recipients
                    .iter()
                    .map(|r| KEY_ID_LEN + 2 + r.wrapped_key.len())
                    .sum::<usize>(),
        );
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        out.extend_from_slice(&self.nonce_prefix);
        out.extend_from_slice(&count.to_be_bytes());
        for recipient in &self.recipients {
            let len = u16::try_from(recipient.wrapped_key.len()).map_err(|_| {
                EnvelopeError::MalformedHeader {
                    reason: "a wrapped key is longer than 65535 bytes".to_string(),
                }
            })?;
            out.extend_from_slice(&recipient.key_id);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&recipient.wrapped_key);
        }
        Ok(out)
    }

    /// The limits shared by the writer and the parser.
    fn check_sizes(&self) -> Result<(), EnvelopeError> {
        check_segment_size(self.segment_size as usize)?;
        if self.recipients.is_empty() {
            return Err(EnvelopeError::NoRecipients);
        }
        if self.recipients.len() > MAX_RECIPIENTS {
            return Err(EnvelopeError::TooManyRecipients {
                count: self.recipients.len(),
            });
        }
        Ok(())
    }

    /// Reads exactly one header from `reader`, returning it with the raw
    /// bytes it was parsed from (for the AAD).
    pub(crate) fn read<R: Read>(reader: &mut R) -> Result<(Header, Vec<u8>), EnvelopeError> {
        let mut raw = Vec::with_capacity(512);

        let mut magic = [0u8; MAGIC.len()];
        let got = read_full(reader, &mut magic).map_err(EnvelopeError::Read)?;
        if got < magic.len() || &magic != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        raw.extend_from_slice(&magic);

        let [version] = take::<1, _>(reader, &mut raw, "version")?;
        if version != FORMAT_VERSION {
            return Err(EnvelopeError::UnsupportedVersion { version });
        }

        let segment_size = u32::from_be_bytes(take(reader, &mut raw, "segment size")?);
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&(segment_size as usize)) {
            return Err(malformed(format!(
                "segment size {segment_size} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}"
            )));
        }
        let nonce_prefix = take(reader, &mut raw, "nonce prefix")?;

        let count = usize::from(u16::from_be_bytes(take(
            reader,
            &mut raw,
            "recipient count",
        )?));
        if count == 0 {
            return Err(malformed("the recipient count is 0".to_string()));
        }
        if count > MAX_RECIPIENTS {
            return Err(malformed(format!(
                "{count} recipients exceeds the limit of {MAX_RECIPIENTS}"
            )));
        }

        let mut recipients = Vec::with_capacity(count);
        for _ in 0..count {
            let key_id = take(reader, &mut raw, "recipient key id")?;
            let len = usize::from(u16::from_be_bytes(take(
                reader,
                &mut raw,
                "wrapped key length",
            )?));
            if len == 0 || len > MAX_WRAPPED_KEY_LEN {
                return Err(malformed(format!(
                    "a wrapped key length of {len} is outside 1..={MAX_WRAPPED_KEY_LEN}"
                )));
            }
            let start = raw.len();
            raw.resize(start + len, 0);
            read_exact_or_malformed(reader, &mut raw[start..], "wrapped key")?;
            recipients.push(Recipient {
                key_id,
                wrapped_key: raw[start..].to_vec(),
            });
        }

        Ok((
            Header {
                segment_size,
                nonce_prefix,
                recipients,
            },
            raw,
        ))
    }
}

/// Checks a segment size against the format's limits.
pub(crate) fn check_segment_size(size: usize) -> Result<(), EnvelopeError> {
    if (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(EnvelopeError::InvalidSegmentSize { size })
    }
}

fn malformed(reason: String) -> EnvelopeError {
    EnvelopeError::MalformedHeader { reason }
}

/// Reads an `N`-byte header field, appending it to `raw`.
fn take<const N: usize, R: Read>(
    reader: &mut R,
    raw: &mut Vec<u8>,
    field: &str,
) -> Result<[u8; N], EnvelopeError> {
    let mut field_bytes = [0u8; N];
    read_exact_or_malformed(reader, &mut field_bytes, field)?;
    raw.extend_from_slice(&field_bytes);
    Ok(field_bytes)
}

fn read_exact_or_malformed<R: Read>(
    reader: &mut R,
    buf: &mut [u8],
    field: &str,
) -> Result<(), EnvelopeError> {
    let got = read_full(reader, buf).map_err(EnvelopeError::Read)?;
    if got < buf.len() {
        return Err(malformed(format!(
            "the input ends inside the header ({field}); the file is truncated"
        )));
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
/// Unlike `read_exact`, a short count at end of input is not an error,
/// which is how the segment reader detects the end of the stream.
pub(crate) fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}
