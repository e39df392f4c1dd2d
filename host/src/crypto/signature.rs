//! RSA-PSS signatures with SHA-256: what policy bundles (and, later, market
//! messages) are signed with.
//!
//! The salt is fixed at 32 bytes (the digest length), the choice RFC 8017
//! recommends and the one `openssl pkeyutl -pkeyopt rsa_pss_saltlen:digest`
//! makes, so a signature can be checked without this tool.

use rsa::pss::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use sha2::Sha256;

use super::keys::{KeyError, NodeKey, PublicKey};
use super::rng::OsRandom;

/// PSS salt length in bytes.
pub const PSS_SALT_LEN: usize = 32;

impl NodeKey {
    /// Signs `message` with RSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt).
    pub fn sign_pss(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = SigningKey::<Sha256>::new_with_salt_len(self.private().clone(), PSS_SALT_LEN);
        key.try_sign_with_rng(&mut OsRandom, message)
            .map(|sig| sig.to_vec())
            .map_err(|err| KeyError::Sign {
                reason: err.to_string(),
            })
    }
}

impl PublicKey {
    /// True when `signature` is this key's RSA-PSS signature over `message`.
    pub fn verify_pss(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::try_from(signature) else {
            return false;
        };
        VerifyingKey::<Sha256>::new_with_salt_len(self.rsa().clone(), PSS_SALT_LEN)
            .verify(message, &signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::shared_keys;

    #[test]
    fn a_signature_verifies_only_for_its_message_and_key() {
        let key = &shared_keys()[0];
        let other = &shared_keys()[1];
        let sig = key.sign_pss(b"manifest bytes").unwrap();
        assert_eq!(sig.len(), key.public().bits() / 8);
        assert!(key.public().verify_pss(b"manifest bytes", &sig));
        assert!(!key.public().verify_pss(b"manifest bytez", &sig));
        assert!(!other.public().verify_pss(b"manifest bytes", &sig));
        let mut flipped = sig.clone();
        flipped[10] ^= 1;
        assert!(!key.public().verify_pss(b"manifest bytes", &flipped));
        assert!(!key.public().verify_pss(b"manifest bytes", &sig[1..]));
        assert!(!key.public().verify_pss(b"manifest bytes", &[]));
    }

    #[test]
    fn signing_is_randomized() {
        let key = &shared_keys()[0];
        assert_ne!(key.sign_pss(b"m").unwrap(), key.sign_pss(b"m").unwrap());
    }
}
