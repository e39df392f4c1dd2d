//! `policy keygen|build|sign`: what a policy publisher runs on their own
//! machine. Nothing here reads or changes the node's data folder.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bundle::{self, Bundle, RoleLimits, SignatureEntry};
use crate::crypto::{DEFAULT_KEY_BITS, NodeKey};
use crate::policy::SandboxLimits;

use super::OpsError;
use super::bundle_fetch::read_bundle_file;

/// The key pair `keygen` wrote.
#[derive(Debug, Serialize)]
pub struct KeyPair {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub key_id: String,
    pub bits: usize,
}

/// A bundle `build` or `sign` wrote.
#[derive(Debug, Serialize)]
pub struct Written {
    pub path: PathBuf,
    pub name: String,
    pub revision: u64,
    pub roles: Vec<String>,
    pub expires: String,
    /// Key ids of every signature the file now carries.
    pub signatures: Vec<String>,
    pub bytes: usize,
}

/// Makes a signing key pair: `NAME.pem` (0600; encrypted when
/// `passphrase` is given) and `NAME.pub` beside it. Refuses to overwrite.
pub fn keygen(out: &Path, passphrase: Option<&str>) -> Result<KeyPair, OpsError> {
    let private_key = with_extension(out, "pem");
    let public_key = with_extension(out, "pub");
    for path in [&private_key, &public_key] {
        if path.exists() {
            return Err(OpsError::InvalidInput {
                what: format!(
                    "{} already exists; choose another --out name",
                    path.display()
                ),
            });
        }
    }
    let key = NodeKey::generate(DEFAULT_KEY_BITS).map_err(OpsError::Key)?;
    key.write_file(&private_key, passphrase)
        .map_err(OpsError::Key)?;
    let pem = key.public().to_pem().map_err(OpsError::Key)?;
    std::fs::write(&public_key, pem).map_err(|source| OpsError::Write {
        path: public_key.clone(),
        source,
    })?;
    Ok(KeyPair {
        private_key,
        public_key,
        key_id: key.node_id(),
        bits: key.public().bits(),
    })
}

/// Builds an unsigned bundle from `source` (a folder with `bundle.toml`, or
/// the file) and writes it to `out`. Limits `bundle.toml` leaves unset are
/// `defaults`: the ceiling, so that each node's own caps decide them, and a
/// bundle does not depend on the machine it was built on.
pub fn build(source: &Path, out: &Path, defaults: &SandboxLimits) -> Result<Written, OpsError> {
    let defaults = RoleLimits {
        fuel: defaults.fuel,
        memory_bytes: defaults.memory_bytes as u64,
        timeout_ms: defaults.timeout.as_millis() as u64,
    };
    let bundle = bundle::build(source, defaults, time::OffsetDateTime::now_utc())?;
    write(&bundle, out)
}

/// Adds a signature by the private key at `key` to the bundle at `file`,
/// in place. A second signature by the same key replaces the first.
pub fn sign(
    file: &Path,
    key: &Path,
    passphrase: Option<&str>,
    passphrase_var: Option<&str>,
) -> Result<Written, OpsError> {
    let mut bundle = Bundle::read(&read_bundle_file(file)?)?;
    let key = NodeKey::read_file(key, passphrase, passphrase_var).map_err(|e| match e {
        crate::crypto::KeyError::PassphraseRequired { location, .. } => OpsError::InvalidInput {
            what: format!(
                "the key at {location} is encrypted; pass --passphrase-env VAR naming the environment variable that holds its passphrase"
            ),
        },
        other => OpsError::Key(other),
    })?;
    let signature = SignatureEntry::sign(&key, &bundle.manifest_bytes).map_err(OpsError::Key)?;
    bundle.add_signature(signature);
    write(&bundle, file)
}

/// Writes through a temporary file and a rename, so a failed write never
/// leaves a half bundle where a good one was.
fn write(bundle: &Bundle, out: &Path) -> Result<Written, OpsError> {
    let bytes = bundle.to_bytes();
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let write_err = |source| OpsError::Write {
        path: out.to_path_buf(),
        source,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(write_err)?;
    let mut perms = tmp.as_file().metadata().map_err(write_err)?.permissions();
    // Bundles are published: readable by all, unlike the temp file's 0600.
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    tmp.as_file().set_permissions(perms).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(out).map_err(|e| write_err(e.error))?;
    let m = &bundle.manifest;
    Ok(Written {
        path: out.to_path_buf(),
        name: m.name.clone(),
        revision: m.revision,
        roles: m.roles.iter().map(|e| e.role.clone()).collect(),
        expires: m.expires.clone(),
        signatures: bundle.signatures.iter().map(|s| s.key_id.clone()).collect(),
        bytes: bytes.len(),
    })
}

fn with_extension(out: &Path, ext: &str) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}
