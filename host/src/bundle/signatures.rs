//! Signatures over a bundle's manifest, and the rules that decide whether a
//! bundle is signed well enough for this node.
//!
//! A signature is RSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt) over the
//! manifest's canonical bytes, tagged with the signer's key id (hex sha256
//! of its SubjectPublicKeyInfo DER). The manifest pins every component's
//! digest, so signing it signs the components.

use serde::{Deserialize, Serialize};

use super::error::BundleError;
use crate::crypto::{NodeKey, PublicKey};

/// The one signature algorithm this format has.
pub const ALGORITHM: &str = "rsa-pss-sha256";

/// One signature as stored in `signatures.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    pub algorithm: String,
    /// Hex sha256 of the signer's public key (SPKI DER).
    pub key_id: String,
    /// Hex of the signature bytes.
    pub signature: String,
}

impl SignatureEntry {
    /// Signs `manifest_bytes` with `key`.
    pub fn sign(
        key: &NodeKey,
        manifest_bytes: &[u8],
    ) -> Result<SignatureEntry, crate::crypto::KeyError> {
        Ok(SignatureEntry {
            algorithm: ALGORITHM.into(),
            key_id: key.node_id(),
            signature: hex::encode(key.sign_pss(manifest_bytes)?),
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignatureFile {
    signatures: Vec<SignatureEntry>,
}

impl SignatureFile {
    pub(super) fn parse(bytes: &[u8]) -> Result<Vec<SignatureEntry>, BundleError> {
        let file: SignatureFile =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Corrupt {
                detail: format!("signatures.json is not valid ({e})"),
            })?;
        if let Some(other) = file.signatures.iter().find(|s| s.algorithm != ALGORITHM) {
            return Err(BundleError::Corrupt {
                detail: format!(
                    "signatures.json uses algorithm '{}'; this host knows only {ALGORITHM}",
                    other.algorithm
                ),
            });
        }
        Ok(file.signatures)
    }

    pub(super) fn to_bytes(signatures: &[SignatureEntry]) -> Vec<u8> {
        serde_json::to_vec(&SignatureFile {
            signatures: signatures.to_vec(),
        })
        .expect("signatures always serialize")
    }
}

/// A public key this node trusts to sign policy.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    pub name: String,
    pub key: PublicKey,
}

/// What became of one signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureStatus {
    /// By a trusted key, and it verifies.
    Valid,
    /// By a key this node does not trust (not checked further).
    Untrusted,
    /// Claims a trusted key but does not verify.
    Invalid,
}

/// One signature's key and status, for `inspect` and the audit log.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureCheck {
    pub key_id: String,
    /// The trusted key's name, when the key is trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_as: Option<String>,
    pub status: SignatureStatus,
}

/// The node's rules: its trusted keys and how many must have signed.
pub struct TrustPolicy<'a> {
    pub trusted: &'a [TrustedKey],
    pub min_signatures: u32,
}

impl TrustPolicy<'_> {
    /// Checks every signature over `manifest_bytes`. Each key counts once,
    /// however many times it signed.
    pub fn check(
        &self,
        manifest_bytes: &[u8],
        signatures: &[SignatureEntry],
    ) -> Vec<SignatureCheck> {
        let mut seen: Vec<&str> = Vec::new();
        let mut checks = Vec::new();
        for sig in signatures {
            if seen.contains(&sig.key_id.as_str()) {
                continue;
            }
            seen.push(&sig.key_id);
            let trusted = self.trusted.iter().find(|t| t.key.node_id() == sig.key_id);
            let status = match trusted {
                None => SignatureStatus::Untrusted,
                Some(t) => {
                    let verifies = hex::decode(&sig.signature)
                        .is_ok_and(|bytes| t.key.verify_pss(manifest_bytes, &bytes));
                    if verifies {
                        SignatureStatus::Valid
                    } else {
                        SignatureStatus::Invalid
                    }
                }
            };
            checks.push(SignatureCheck {
                key_id: sig.key_id.clone(),
                trusted_as: trusted.map(|t| t.name.clone()),
                status,
            });
        }
        checks
    }

    /// Whether `checks` satisfy this node. With no trusted keys (a
    /// developer's machine) anything passes; with any, an unsigned bundle
    /// and one with fewer than `min_signatures` valid trusted signatures do
    /// not, so leaving signatures out is never a way around them.
    pub fn accept(&self, checks: &[SignatureCheck]) -> Result<(), BundleError> {
        if self.trusted.is_empty() {
            return Ok(());
        }
        if checks.is_empty() {
            return Err(BundleError::Unsigned {
                trusted: self.trusted.len(),
            });
        }
        let valid = checks
            .iter()
            .filter(|c| c.status == SignatureStatus::Valid)
            .count();
        let required = self.min_signatures.max(1) as usize;
        if valid >= required {
            return Ok(());
        }
        let with = |status| {
            checks
                .iter()
                .filter(|c| c.status == status)
                .map(|c| c.key_id[..12.min(c.key_id.len())].to_string())
                .collect()
        };
        Err(BundleError::TooFewSignatures {
            valid,
            required,
            untrusted: with(SignatureStatus::Untrusted),
            invalid: with(SignatureStatus::Invalid),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::NodeKey;
    use std::sync::OnceLock;

    fn keys() -> &'static [NodeKey; 3] {
        static KEYS: OnceLock<[NodeKey; 3]> = OnceLock::new();
        KEYS.get_or_init(|| std::array::from_fn(|_| NodeKey::generate(2048).unwrap()))
    }

    fn trusted(indices: &[usize]) -> Vec<TrustedKey> {
        indices
            .iter()
            .map(|&i| TrustedKey {
                name: format!("k{i}"),
                key: keys()[i].public().clone(),
            })
            .collect()
    }

    #[test]
    fn without_trusted_keys_anything_passes() {
        let policy = TrustPolicy {
            trusted: &[],
            min_signatures: 1,
        };
        assert!(policy.accept(&policy.check(b"m", &[])).is_ok());
    }

    #[test]
    fn with_trust_an_unsigned_bundle_is_refused() {
        let t = trusted(&[0]);
        let policy = TrustPolicy {
            trusted: &t,
            min_signatures: 1,
        };
        let err = policy.accept(&policy.check(b"m", &[])).unwrap_err();
        assert!(matches!(err, BundleError::Unsigned { trusted: 1 }));
    }

    #[test]
    fn signatures_count_once_per_trusted_valid_key() {
        let t = trusted(&[0, 1]);
        let sig = |i: usize| SignatureEntry::sign(&keys()[i], b"m").unwrap();
        let policy = TrustPolicy {
            trusted: &t,
            min_signatures: 2,
        };

        let twice = [sig(0), sig(0)];
        let err = policy.accept(&policy.check(b"m", &twice)).unwrap_err();
        assert!(matches!(
            err,
            BundleError::TooFewSignatures {
                valid: 1,
                required: 2,
                ..
            }
        ));

        let with_stranger = [sig(0), sig(2)];
        let checks = policy.check(b"m", &with_stranger);
        assert_eq!(checks[1].status, SignatureStatus::Untrusted);
        let err = policy.accept(&checks).unwrap_err().to_string();
        assert!(err.contains("untrusted key(s)"), "{err}");

        assert!(
            policy
                .accept(&policy.check(b"m", &[sig(0), sig(1)]))
                .is_ok()
        );
    }

    #[test]
    fn a_signature_over_other_bytes_is_invalid() {
        let t = trusted(&[0]);
        let policy = TrustPolicy {
            trusted: &t,
            min_signatures: 1,
        };
        let sig = SignatureEntry::sign(&keys()[0], b"other manifest").unwrap();
        let checks = policy.check(b"m", &[sig]);
        assert_eq!(checks[0].status, SignatureStatus::Invalid);
        let err = policy.accept(&checks).unwrap_err().to_string();
        assert!(err.contains("invalid signature(s)"), "{err}");
    }

    #[test]
    fn signatures_json_round_trips_and_refuses_other_algorithms() {
        let entries = vec![SignatureEntry::sign(&keys()[0], b"m").unwrap()];
        let bytes = SignatureFile::to_bytes(&entries);
        assert_eq!(SignatureFile::parse(&bytes).unwrap(), entries);
        let other = String::from_utf8(bytes)
            .unwrap()
            .replace(ALGORITHM, "rsa-pkcs1-sha1");
        assert!(SignatureFile::parse(other.as_bytes()).is_err());
    }
}
