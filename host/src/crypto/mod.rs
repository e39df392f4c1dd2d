//! End-to-end encryption for claude-max-market: node identity keys (with
//! rotation and a grace period for retired keys) and the streaming hybrid
//! encryption format used for prompts and results.
//!
//! - [`keys`]: RSA node keys, node ids, PEM encodings.
//! - [`keystore`]: the on-disk key store (`<home>/keys`, `keys.json`).
//! - [`signature`]: RSA-PSS-SHA256 signatures (policy bundles).
//! - [`anchor`]: the signed statement of the audit log's head.
//! - [`envelope`]: the `CMMENC` v1 format (RSA-OAEP-SHA256 key wrapping,
//!   AES-256-GCM segments), streaming and fail-closed file helpers.
//!
//! The format is specified in `docs/encryption.md`.

pub mod anchor;
pub mod envelope;
mod fsutil;
mod header;
pub mod keys;
pub mod keystore;
mod rng;
pub mod signature;

pub use anchor::{AnchorError, SignedHead, VerifiedHead};
pub use envelope::{
    DEFAULT_SEGMENT_SIZE, DecryptSummary, EncryptSummary, EnvelopeError, decrypt, decrypt_file,
    encrypt, encrypt_file,
};
pub use fsutil::remove_pending as remove_pending_outputs;
pub use keys::{DEFAULT_KEY_BITS, KeyError, NodeKey, PublicKey};
pub use keystore::{KeyInfo, KeyStore, Rotation};
pub use rng::RngError;

#[cfg(test)]
pub(crate) mod testutil;
