//! Node identity keys: RSA key pairs, their ids, and their PEM encodings.
//!
//! A node is identified by the SHA-256 of its public key's
//! SubjectPublicKeyInfo DER, written as 64 lowercase hex characters (the
//! "node id"). The same 32 bytes, raw, are the recipient key id inside
//! encrypted files, so a file's recipients can be matched to nodes without
//! any other registry.
//!
//! Private keys are stored as PKCS#8 PEM. With a passphrase they are
//! encrypted PKCS#8 (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC), which
//! `openssl pkey` can also read.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use pkcs8::der::pem::PemLabel;
use pkcs8::der::zeroize::Zeroizing;
use pkcs8::pkcs5::pbes2;
use pkcs8::{EncryptedPrivateKeyInfo, LineEnding, PrivateKeyInfo, SecretDocument};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

use super::rng::{self, OsRandom, RngError};

/// Key size used when the caller has no reason to choose another.
pub const DEFAULT_KEY_BITS: usize = 3072;
/// Smallest RSA modulus accepted for node keys and recipients.
pub const MIN_KEY_BITS: usize = 2048;
/// Largest RSA modulus accepted (the `rsa` crate's public-key limit).
pub const MAX_KEY_BITS: usize = 4096;
/// PBKDF2-HMAC-SHA256 iterations for passphrase-protected key files.
/// Explicit so that loading stays fast (scrypt defaults are slow in debug
/// builds) while still costing an attacker ~100k HMACs per guess.
pub const PBKDF2_ITERATIONS: u32 = 100_000;
/// Length of a node id in hex characters.
pub const NODE_ID_HEX_LEN: usize = 64;
/// Length of a short id (prefix of the node id) used in messages.
pub const SHORT_ID_LEN: usize = 12;

/// Errors from node keys and the key store. Each message says what
/// happened and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "RSA key size {bits} is not supported; use {MIN_KEY_BITS} to {MAX_KEY_BITS} bits ({DEFAULT_KEY_BITS} is the default)"
    )]
    InvalidKeySize { bits: usize },

    #[error(
        "generating a {bits}-bit RSA key failed: {source}; retry, and report a bug if it persists"
    )]
    Generate { bits: usize, source: rsa::Error },

    #[error("encoding the key as {format} failed: {reason}; report a bug")]
    Encode {
        format: &'static str,
        reason: String,
    },

    #[error(
        "not a usable RSA public key ({reason}); expected a PEM block \"-----BEGIN PUBLIC KEY-----\" (SubjectPublicKeyInfo) of {MIN_KEY_BITS} to {MAX_KEY_BITS} bits"
    )]
    InvalidPublicKey { reason: String },

    #[error(
        "the private key at {location} is protected by a passphrase, but none was given; {hint}"
    )]
    PassphraseRequired { location: String, hint: String },

    #[error(
        "the passphrase does not decrypt the private key at {location} (wrong passphrase, or the file is corrupt); {hint}"
    )]
    WrongPassphrase { location: String, hint: String },

    #[error("the passphrase is empty; {hint}")]
    EmptyPassphrase { hint: String },

    #[error(
        "the private key at {location} is not a usable PKCS#8 RSA private key ({reason}); restore it from a backup, or make a new one"
    )]
    InvalidKeyFile { location: String, reason: String },

    #[error("signing failed: {reason}; retry, and report a bug if it persists")]
    Sign { reason: String },

    #[error(
        "key file {} is readable by others (mode {mode:04o}); run `chmod 600 {}`", path.display(), path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },

    #[error(
        "key file {} holds key {actual}, not {expected} as its name and keys.json say; put the right file back or restore the key store from a backup", path.display()
    )]
    KeyMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error(
        "the key file {} listed in keys.json is missing; restore it from a backup, or remove the entry for {id} from keys.json (files encrypted to that key can then no longer be decrypted)", path.display()
    )]
    KeyFileMissing { path: PathBuf, id: String },

    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "the key metadata file {} is invalid ({reason}); fix it by hand (format: docs/encryption.md, \"Key store\") or restore it from a backup", path.display()
    )]
    InvalidMetadata { path: PathBuf, reason: String },

    #[error("the key store has no key with id {id}; list the key store to see the known ids")]
    UnknownKey { id: String },

    #[error("the key store at {} has no current key yet; one is created the first time it is needed", dir.display())]
    NoCurrentKey { dir: PathBuf },

    #[error(transparent)]
    Rng(#[from] RngError),
}

impl KeyError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        KeyError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What to tell the user when a passphrase is missing, given the name of the
/// environment variable that is supposed to hold it.
pub(crate) fn missing_passphrase_hint(passphrase_var: Option<&str>) -> String {
    match passphrase_var {
        Some(var) => format!(
            "set the environment variable {var} (named by security.keyPassphraseEnv) to the key passphrase"
        ),
        None => "set security.keyPassphraseEnv to the name of an environment variable and put the key passphrase in that variable".to_string(),
    }
}

fn wrong_passphrase_hint(passphrase_var: Option<&str>) -> String {
    match passphrase_var {
        Some(var) => format!(
            "check the value of the environment variable {var} (named by security.keyPassphraseEnv)"
        ),
        None => "check the passphrase given to the key store".to_string(),
    }
}

/// Lowercase hex of `id`'s first [`SHORT_ID_LEN`] characters.
pub(crate) fn short_hex(id: &[u8; 32]) -> String {
    hex::encode(&id[..SHORT_ID_LEN / 2])
}

/// An RSA public key together with its id (SHA-256 of its SPKI DER).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: RsaPublicKey,
    id: [u8; 32],
}

impl PublicKey {
    /// Wraps an RSA public key, checking that its size is acceptable.
    pub fn from_rsa(key: RsaPublicKey) -> Result<Self, KeyError> {
        let bits = key.size() * 8;
        if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
            return Err(KeyError::InvalidPublicKey {
                reason: format!("the key has {bits} bits"),
            });
        }
        let der = key.to_public_key_der().map_err(|err| KeyError::Encode {
            format: "SubjectPublicKeyInfo DER",
            reason: err.to_string(),
        })?;
        let id = Sha256::digest(der.as_bytes()).into();
        Ok(PublicKey { key, id })
    }

    /// Parses an SPKI ("-----BEGIN PUBLIC KEY-----") PEM block.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = RsaPublicKey::from_public_key_pem(pem.trim()).map_err(|err| {
            KeyError::InvalidPublicKey {
                reason: err.to_string(),
            }
        })?;
        Self::from_rsa(key)
    }

    /// Parses SubjectPublicKeyInfo DER: how market messages carry their
    /// signer's key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let key =
            RsaPublicKey::from_public_key_der(der).map_err(|err| KeyError::InvalidPublicKey {
                reason: err.to_string(),
            })?;
        Self::from_rsa(key)
    }

    /// The key as SubjectPublicKeyInfo DER (what its id is the hash of).
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.key
            .to_public_key_der()
            .expect("a key that was encoded once to make its id encodes again")
            .into_vec()
    }

    /// Encodes the key as an SPKI ("PUBLIC KEY") PEM block with LF line endings.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|err| KeyError::Encode {
                format: "SubjectPublicKeyInfo PEM",
                reason: err.to_string(),
            })
    }

    /// SHA-256 of the SubjectPublicKeyInfo DER: the recipient key id in
    /// encrypted files.
    pub fn key_id(&self) -> &[u8; 32] {
        &self.id
    }

    /// The node id: [`key_id`](Self::key_id) as 64 lowercase hex characters.
    pub fn node_id(&self) -> String {
        hex::encode(self.id)
    }

    /// The first 12 characters of the node id, for messages and logs.
    pub fn short_id(&self) -> String {
        short_hex(&self.id)
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.size() * 8
    }

    pub(crate) fn rsa(&self) -> &RsaPublicKey {
        &self.key
    }

    /// RSA-OAEP (SHA-256, MGF1-SHA-256, empty label) encryption of a content key.
    pub(crate) fn wrap(&self, content_key: &[u8]) -> Result<Vec<u8>, rsa::Error> {
        self.key
            .encrypt(&mut OsRandom, Oaep::new::<Sha256>(), content_key)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("node_id", &self.node_id())
            .field("bits", &self.bits())
            .finish()
    }
}

/// A node's private key (RSA) with its public half.
#[derive(Clone)]
pub struct NodeKey {
    private: RsaPrivateKey,
    public: PublicKey,
}

impl NodeKey {
    /// Generates a new key pair of `bits` bits ([`DEFAULT_KEY_BITS`] in
    /// production; tests use 2048 because generation is slow).
    pub fn generate(bits: usize) -> Result<Self, KeyError> {
        if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
            return Err(KeyError::InvalidKeySize { bits });
        }
        let private = RsaPrivateKey::new(&mut OsRandom, bits)
            .map_err(|source| KeyError::Generate { bits, source })?;
        Self::from_rsa(private)
    }

    /// Wraps an existing RSA private key.
    pub fn from_rsa(private: RsaPrivateKey) -> Result<Self, KeyError> {
        let public = PublicKey::from_rsa(private.to_public_key())?;
        Ok(NodeKey { private, public })
    }

    pub(crate) fn private(&self) -> &RsaPrivateKey {
        &self.private
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// See [`PublicKey::key_id`].
    pub fn key_id(&self) -> &[u8; 32] {
        self.public.key_id()
    }

    /// See [`PublicKey::node_id`].
    pub fn node_id(&self) -> String {
        self.public.node_id()
    }

    /// See [`PublicKey::short_id`].
    pub fn short_id(&self) -> String {
        self.public.short_id()
    }

    /// Encodes the private key as PKCS#8 PEM ("PRIVATE KEY"), or with a
    /// passphrase as encrypted PKCS#8 ("ENCRYPTED PRIVATE KEY": PBES2 with
    /// PBKDF2-HMAC-SHA256 ([`PBKDF2_ITERATIONS`]) and AES-256-CBC).
    pub fn to_pem(&self, passphrase: Option<&str>) -> Result<Zeroizing<String>, KeyError> {
        let encode_err = |reason: String| KeyError::Encode {
            format: "PKCS#8",
            reason,
        };
        let plain = self
            .private
            .to_pkcs8_der()
            .map_err(|err| encode_err(err.to_string()))?;
        let Some(passphrase) = passphrase else {
            return plain
                .to_pem(PrivateKeyInfo::PEM_LABEL, LineEnding::LF)
                .map_err(|err| encode_err(err.to_string()));
        };
        let info = PrivateKeyInfo::try_from(plain.as_bytes())
            .map_err(|err| encode_err(err.to_string()))?;
        let salt: [u8; 16] = rng::random_array()?;
        let iv: [u8; 16] = rng::random_array()?;
        let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
            .map_err(|err| encode_err(err.to_string()))?;
        info.encrypt_with_params(params, passphrase.as_bytes())
            .and_then(|doc| Ok(doc.to_pem(EncryptedPrivateKeyInfo::PEM_LABEL, LineEnding::LF)?))
            .map_err(|err| encode_err(err.to_string()))
    }

    /// Parses a PKCS#8 PEM private key, encrypted or not. `location` names
    /// where the text came from and `passphrase_var` the environment
    /// variable holding the passphrase; both only feed error messages.
    pub fn from_pem(
        pem: &str,
        passphrase: Option<&str>,
        location: &str,
        passphrase_var: Option<&str>,
    ) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::InvalidKeyFile {
            location: location.to_string(),
            reason,
        };
        let (label, doc) =
            SecretDocument::from_pem(pem.trim()).map_err(|err| invalid(err.to_string()))?;
        let private = if label == PrivateKeyInfo::PEM_LABEL {
            RsaPrivateKey::from_pkcs8_der(doc.as_bytes()).map_err(|err| invalid(err.to_string()))?
        } else if label == EncryptedPrivateKeyInfo::PEM_LABEL {
            let Some(passphrase) = passphrase else {
                return Err(KeyError::PassphraseRequired {
                    location: location.to_string(),
                    hint: missing_passphrase_hint(passphrase_var),
                });
            };
            let wrong = || KeyError::WrongPassphrase {
                location: location.to_string(),
                hint: wrong_passphrase_hint(passphrase_var),
            };
            let info = EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
                .map_err(|err| invalid(err.to_string()))?;
            let decrypted = info
                .decrypt(passphrase.as_bytes())
                .map_err(|err| match err {
                    // A bad padding block or garbage DER after decryption is what
                    // a wrong passphrase produces; anything else (unsupported
                    // algorithm, malformed parameters) is a file problem.
                    // pkcs5 0.7 reports bad padding while decrypting as
                    // `EncryptFailed`, so both variants mean "wrong passphrase".
                    pkcs8::Error::EncryptedPrivateKey(
                        pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed,
                    )
                    | pkcs8::Error::Asn1(_) => wrong(),
                    other => invalid(other.to_string()),
                })?;
            RsaPrivateKey::from_pkcs8_der(decrypted.as_bytes()).map_err(|_| wrong())?
        } else {
            return Err(invalid(format!(
                "PEM label is \"{label}\", expected \"PRIVATE KEY\" or \"ENCRYPTED PRIVATE KEY\""
            )));
        };
        Self::from_rsa(private)
    }

    /// Writes the key to a new file `path` with mode 0600 (set at creation,
    /// so the key is never briefly readable by others). Refuses to overwrite.
    pub fn write_file(&self, path: &Path, passphrase: Option<&str>) -> Result<(), KeyError> {
        let pem = self.to_pem(passphrase)?;
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(path)
            .map_err(|err| KeyError::io("create key file", path, err))?;
        file.write_all(pem.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|err| KeyError::io("write key file", path, err))
    }

    /// Reads a key file written by [`write_file`](Self::write_file) (or any
    /// PKCS#8 PEM RSA key). Refuses files that group or others can access.
    pub fn read_file(
        path: &Path,
        passphrase: Option<&str>,
        passphrase_var: Option<&str>,
    ) -> Result<Self, KeyError> {
        check_private_mode(path)?;
        let pem = Zeroizing::new(
            fs::read_to_string(path).map_err(|err| KeyError::io("read key file", path, err))?,
        );
        Self::from_pem(
            &pem,
            passphrase,
            &path.display().to_string(),
            passphrase_var,
        )
    }

    /// RSA-OAEP-SHA256 decryption of a wrapped content key (blinded, so
    /// timing does not depend on the private exponent).
    pub(crate) fn unwrap_key(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, rsa::Error> {
        self.private
            .decrypt_blinded(&mut OsRandom, Oaep::new::<Sha256>(), wrapped)
            .map(Zeroizing::new)
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("node_id", &self.node_id())
            .finish_non_exhaustive()
    }
}

/// Refuses a private key file whose mode grants any access to group or
/// others: such a key may already have been copied, and silently using it
/// would hide that.
#[cfg(unix)]
fn check_private_mode(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|err| KeyError::io("read key file", path, err))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::testutil::{TEST_BITS, VECTOR_KEY_PEM, shared_keys, vector_key};

    #[test]
    fn node_id_is_sha256_of_spki_der() {
        let key = &shared_keys()[1];
        let der = key.public().key.to_public_key_der().expect("der");
        let expected = hex::encode(Sha256::digest(der.as_bytes()));
        assert_eq!(key.node_id(), expected);
        assert_eq!(key.node_id().len(), NODE_ID_HEX_LEN);
        assert!(
            key.node_id()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(key.short_id(), key.node_id()[..SHORT_ID_LEN]);
        assert_eq!(hex::encode(key.key_id()), key.node_id());
    }

    #[test]
    fn vector_key_has_the_published_node_id() {
        // Same value as `openssl pkey -in test-key.pem -pubout -outform DER | sha256sum`.
        assert_eq!(
            vector_key().node_id(),
            "4d5d0485842db358302320cee581148c3d0a07e41a5fa3d809acbf6a695931a4"
        );
    }

    #[test]
    fn public_key_pem_roundtrip() {
        let key = &shared_keys()[1];
        let pem = key.public().to_pem().expect("pem");
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let parsed = PublicKey::from_pem(&pem).expect("parse");
        assert_eq!(&parsed, key.public());
        assert_eq!(parsed.node_id(), key.node_id());
        assert_eq!(parsed.bits(), TEST_BITS);
    }

    #[test]
    fn public_key_rejects_garbage_and_small_keys() {
        let err = PublicKey::from_pem("not a key").unwrap_err();
        assert!(matches!(err, KeyError::InvalidPublicKey { .. }), "{err:?}");
        let small = RsaPrivateKey::new(&mut OsRandom, 1024).expect("1024-bit key");
        let pem = small
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        let err = PublicKey::from_pem(&pem).unwrap_err();
        assert!(err.to_string().contains("1024 bits"), "{err}");
    }

    #[test]
    fn generate_rejects_unsupported_sizes() {
        for bits in [1024, 8192] {
            let err = NodeKey::generate(bits).unwrap_err();
            assert!(matches!(err, KeyError::InvalidKeySize { bits: b } if b == bits));
        }
    }

    #[test]
    fn private_pem_roundtrip_plain_and_encrypted() {
        let key = vector_key();
        let plain = key.to_pem(None).expect("plain pem");
        assert_eq!(plain.as_str(), VECTOR_KEY_PEM);
        let encrypted = key.to_pem(Some("correct horse")).expect("encrypted pem");
        assert!(encrypted.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
        let loaded =
            NodeKey::from_pem(&encrypted, Some("correct horse"), "memory", None).expect("load");
        assert_eq!(loaded.node_id(), key.node_id());
    }

    #[test]
    fn passphrase_errors_name_the_variable() {
        let encrypted = vector_key().to_pem(Some("secret")).expect("encrypted pem");
        let err =
            NodeKey::from_pem(&encrypted, None, "/keys/a.pem", Some("CMM_KEY_PASS")).unwrap_err();
        assert!(
            matches!(err, KeyError::PassphraseRequired { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("/keys/a.pem")
                && message.contains("CMM_KEY_PASS")
                && message.contains("security.keyPassphraseEnv"),
            "{message}"
        );

        let err = NodeKey::from_pem(
            &encrypted,
            Some("wrong"),
            "/keys/a.pem",
            Some("CMM_KEY_PASS"),
        )
        .unwrap_err();
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err:?}");
        assert!(err.to_string().contains("CMM_KEY_PASS"), "{err}");
    }

    #[test]
    fn rejects_non_key_pem() {
        let pem = shared_keys()[0].public().to_pem().expect("pem");
        let err = NodeKey::from_pem(&pem, None, "x.pem", None).unwrap_err();
        assert!(matches!(err, KeyError::InvalidKeyFile { .. }), "{err:?}");
        assert!(err.to_string().contains("PUBLIC KEY"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.pem");
        let key = vector_key();
        key.write_file(&path, None).expect("write");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = key.write_file(&path, None).unwrap_err();
        assert!(matches!(err, KeyError::Io { .. }), "{err:?}");

        let loaded = NodeKey::read_file(&path, None, None).expect("read");
        assert_eq!(loaded.node_id(), key.node_id());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = NodeKey::read_file(&path, None, None).unwrap_err();
        assert!(
            matches!(err, KeyError::InsecurePermissions { mode: 0o640, .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("mode 0640")
                && message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
    }
}
