//! A signed statement of the audit log's head, to keep somewhere the data
//! folder's owner cannot write (another machine, a ticket, a printout).
//!
//! The hash chain shows edits and removals, but whoever can write the data
//! folder can rewrite the whole log and its head. A head kept elsewhere
//! cannot be rewritten with it: if the log no longer holds that row with that
//! hash, it was cut or replaced. The node key's signature shows the statement
//! itself came from the node. The statement is plain JSON and the signed
//! message plain text, so it can be checked without this tool (`openssl
//! pkeyutl -verify` with RSA-PSS, SHA-256, salt length 32).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::keys::{KeyError, NodeKey, PublicKey};

/// Names the format and is the first line of the signed message.
pub const FORMAT: &str = "claude-max-market audit head 1";

/// The statement as written to a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    pub format: String,
    pub node_id: String,
    /// The signing key, PEM (SubjectPublicKeyInfo); its SHA-256 is `node_id`.
    pub public_key: String,
    pub seq: i64,
    pub hash: String,
    /// RFC 3339, when the statement was signed.
    pub signed_at: String,
    /// RSA-PSS over [`SignedHead::message`], base64.
    pub signature: String,
}

/// A statement whose signature checked out against the key it names. Only
/// [`SignedHead::verify`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedHead {
    head: SignedHead,
}

impl VerifiedHead {
    pub fn node_id(&self) -> &str {
        &self.head.node_id
    }

    pub fn seq(&self) -> i64 {
        self.head.seq
    }

    pub fn hash(&self) -> &str {
        &self.head.hash
    }

    pub fn signed_at(&self) -> &str {
        &self.head.signed_at
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("not an audit head statement: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("the statement's format is '{found}', not '{FORMAT}'")]
    Format { found: String },
    #[error("the statement's public key cannot be read: {0}")]
    Key(KeyError),
    #[error("the statement names node {claimed} but its key is node {actual}")]
    NodeMismatch { claimed: String, actual: String },
    #[error("the statement's signature does not verify: it was altered or not signed by its key")]
    BadSignature,
}

impl SignedHead {
    /// Signs the head (`seq`, `hash`) with the node key.
    pub fn sign(
        key: &NodeKey,
        seq: i64,
        hash: &str,
        signed_at: &str,
    ) -> Result<SignedHead, KeyError> {
        let mut head = SignedHead {
            format: FORMAT.to_owned(),
            node_id: key.node_id(),
            public_key: key.public().to_pem()?,
            seq,
            hash: hash.to_owned(),
            signed_at: signed_at.to_owned(),
            signature: String::new(),
        };
        head.signature = STANDARD.encode(key.sign_pss(head.message().as_bytes())?);
        Ok(head)
    }

    /// Parses a statement and checks its signature against the key it carries.
    pub fn verify(text: &str) -> Result<VerifiedHead, AnchorError> {
        let head: SignedHead = serde_json::from_str(text)?;
        if head.format != FORMAT {
            return Err(AnchorError::Format {
                found: head.format.clone(),
            });
        }
        let key = PublicKey::from_pem(&head.public_key).map_err(AnchorError::Key)?;
        if key.node_id() != head.node_id {
            return Err(AnchorError::NodeMismatch {
                claimed: head.node_id.clone(),
                actual: key.node_id(),
            });
        }
        let signature = STANDARD
            .decode(&head.signature)
            .map_err(|_| AnchorError::BadSignature)?;
        if !key.verify_pss(head.message().as_bytes(), &signature) {
            return Err(AnchorError::BadSignature);
        }
        Ok(VerifiedHead { head })
    }

    /// One field per line, in a fixed order: what is signed.
    fn message(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}\n",
            self.format, self.node_id, self.seq, self.hash, self.signed_at
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::shared_keys;
    use super::*;

    fn signed() -> SignedHead {
        SignedHead::sign(
            &shared_keys()[0],
            7,
            &"ab".repeat(32),
            "2026-12-05T00:00:00Z",
        )
        .unwrap()
    }

    #[test]
    fn a_signed_head_verifies_and_says_what_it_anchors() {
        let text = serde_json::to_string(&signed()).unwrap();
        let head = SignedHead::verify(&text).unwrap();
        assert_eq!(head.seq(), 7);
        assert_eq!(head.hash(), "ab".repeat(32));
        assert_eq!(head.node_id(), shared_keys()[0].node_id());
    }

    #[test]
    fn any_change_to_the_statement_is_refused() {
        let mut moved = signed();
        moved.seq = 6;
        let err = SignedHead::verify(&serde_json::to_string(&moved).unwrap()).unwrap_err();
        assert!(matches!(err, AnchorError::BadSignature), "{err}");

        let mut rekeyed = signed();
        rekeyed.public_key = shared_keys()[1].public().to_pem().unwrap();
        let err = SignedHead::verify(&serde_json::to_string(&rekeyed).unwrap()).unwrap_err();
        assert!(matches!(err, AnchorError::NodeMismatch { .. }), "{err}");

        rekeyed.node_id = shared_keys()[1].node_id();
        let err = SignedHead::verify(&serde_json::to_string(&rekeyed).unwrap()).unwrap_err();
        assert!(matches!(err, AnchorError::BadSignature), "{err}");

        let err = SignedHead::verify("{}").unwrap_err();
        assert!(matches!(err, AnchorError::Parse(_)), "{err}");
    }
}
