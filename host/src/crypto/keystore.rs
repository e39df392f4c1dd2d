//! The node's key store: a directory of key pairs plus `keys.json`, which
//! says which key is current and when each was created and retired.
//!
//! Keys are created on first need and rotated explicitly. A rotated-out
//! key stays usable for decryption for a grace period (so files encrypted
//! to it shortly before the rotation can still be opened), then is pruned.
//! Times are passed in by the caller so that tests can move the clock.
//!
//! `keys.json` is deliberately simple and stable, because operators and the
//! host's tests edit it by hand (for example to backdate a key):
//!
//! ```json
//! {
//!   "current": "<node id>",
//!   "keys": [
//!     { "id": "<node id>", "created": "2026-01-01T00:00:00Z", "retired": null }
//!   ]
//! }
//! ```
//!
//! Every call re-reads `keys.json`, so such edits take effect immediately.
//! Changes (creation, rotation, pruning, backdating) hold an exclusive lock
//! on `keys.lock`, so concurrent processes cannot both create a first key
//! or interleave rotations; `keys.json` itself is always replaced
//! atomically, so readers need no lock.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use pkcs8::der::zeroize::Zeroizing;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime, UtcOffset};

use super::fsutil;
use super::keys::{KeyError, NODE_ID_HEX_LEN, NodeKey, SHORT_ID_LEN, missing_passphrase_hint};

/// Name of the metadata file inside the key store directory.
pub const METADATA_FILE: &str = "keys.json";
/// Name of the lock file that serializes changes to the key store.
pub const LOCK_FILE: &str = "keys.lock";

/// What the key store records about one key pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Node id (64 lowercase hex characters); the key file is `<id>.pem`.
    pub id: String,
    /// When the key was created (RFC 3339 in `keys.json`, whole seconds, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// When the key stopped being current, or `None` for the current key.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub retired: Option<OffsetDateTime>,
}

impl KeyInfo {
    /// The first 12 characters of the node id.
    pub fn short_id(&self) -> &str {
        self.id.get(..SHORT_ID_LEN).unwrap_or(&self.id)
    }

    /// Whole days since the key was created (negative if `now` is earlier).
    pub fn age_days(&self, now: OffsetDateTime) -> i64 {
        (now - self.created).whole_days()
    }

    /// Whether the key may still decrypt at `now`: the current key always,
    /// a retired key until `retired + grace_days`.
    pub fn usable_for_decryption(&self, now: OffsetDateTime, grace_days: u32) -> bool {
        match self.retired {
            None => true,
            Some(retired) => retired
                .checked_add(Duration::days(i64::from(grace_days)))
                .is_none_or(|expiry| now < expiry),
        }
    }
}

/// Result of [`KeyStore::rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The previous current key, now retired.
    pub old: KeyInfo,
    /// The new current key.
    pub new: KeyInfo,
}

/// Contents of `keys.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Metadata {
    current: String,
    keys: Vec<KeyInfo>,
}

impl Metadata {
    /// Checks what the rest of the code relies on. Ids become file names, so
    /// they must be plain hex (no path separators from a hand edit).
    fn validate(&self) -> Result<(), String> {
        for (index, key) in self.keys.iter().enumerate() {
            let well_formed = key.id.len() == NODE_ID_HEX_LEN
                && key
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !well_formed {
                return Err(format!(
                    "key id \"{}\" is not 64 lowercase hex characters",
                    key.id
                ));
            }
            if self.keys[..index].iter().any(|other| other.id == key.id) {
                return Err(format!("key id {} is listed twice", key.id));
            }
        }
        match self.keys.iter().find(|key| key.id == self.current) {
            None => Err(format!(
                "\"current\" is {}, which is not in \"keys\"",
                self.current
            )),
            Some(key) if key.retired.is_some() => Err(format!(
                "the current key {} is marked retired",
                self.current
            )),
            Some(_) => Ok(()),
        }
    }

    fn current_info(&self) -> Result<&KeyInfo, String> {
        self.keys
            .iter()
            .find(|key| key.id == self.current)
            .ok_or_else(|| format!("\"current\" is {}, which is not in \"keys\"", self.current))
    }
}

/// Timestamps are stored in UTC with whole seconds so that what callers get
/// back equals what is on disk.
fn normalize(when: OffsetDateTime) -> OffsetDateTime {
    let utc = when.to_offset(UtcOffset::UTC);
    utc.replace_nanosecond(0).unwrap_or(utc)
}

/// The node's key pairs in one directory (`<home>/keys`).
pub struct KeyStore {
    dir: PathBuf,
    passphrase: Option<Zeroizing<String>>,
    passphrase_var: Option<String>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<set>"))
            .field("passphrase_var", &self.passphrase_var)
            .finish()
    }
}

impl KeyStore {
    /// Opens (creating it with mode 0700 if missing) the key store in `dir`.
    ///
    /// With `passphrase`, new keys are written encrypted and encrypted keys
    /// can be read; `passphrase_var` is the name of the environment variable
    /// it came from, used only in error messages. Fails early if
    /// `keys.json` exists but is invalid.
    pub fn open(
        dir: &Path,
        passphrase: Option<&str>,
        passphrase_var: Option<&str>,
    ) -> Result<KeyStore, KeyError> {
        if passphrase.is_some_and(str::is_empty) {
            return Err(KeyError::EmptyPassphrase {
                hint: missing_passphrase_hint(passphrase_var),
            });
        }
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .map_err(|err| KeyError::io("create key directory", dir, err))?;
        let store = KeyStore {
            dir: dir.to_path_buf(),
            passphrase: passphrase.map(|p| Zeroizing::new(p.to_string())),
            passphrase_var: passphrase_var.map(str::to_string),
        };
        store.load_metadata()?;
        Ok(store)
    }

    /// The key store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `keys.json`.
    pub fn metadata_path(&self) -> PathBuf {
        self.dir.join(METADATA_FILE)
    }

    /// Path of the private key file for node id `id`.
    pub fn key_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.pem"))
    }

    /// The current key, creating a `bits`-bit key pair if the store is empty.
    /// The flag is `true` when the key was created by this call.
    pub fn current_or_create(
        &self,
        now: OffsetDateTime,
        bits: usize,
    ) -> Result<(NodeKey, KeyInfo, bool), KeyError> {
        if let Some((key, info)) = self.current()? {
            return Ok((key, info, false));
        }
        // Another process may be creating the key right now; check again
        // under the lock so that exactly one key becomes current.
        let _lock = self.lock()?;
        if let Some((key, info)) = self.current()? {
            return Ok((key, info, false));
        }
        let (key, info) = self.create_key(now, bits)?;
        self.save_metadata(&Metadata {
            current: info.id.clone(),
            keys: vec![info.clone()],
        })?;
        Ok((key, info, true))
    }

    /// The current key, or `None` if no key has been created yet.
    pub fn current(&self) -> Result<Option<(NodeKey, KeyInfo)>, KeyError> {
        let Some(meta) = self.load_metadata()? else {
            return Ok(None);
        };
        let info = meta
            .current_info()
            .map_err(|reason| self.invalid_metadata(reason))?
            .clone();
        let key = self.load_key(&info.id)?;
        Ok(Some((key, info)))
    }

    /// All keys in the store (current and retired), oldest first.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        Ok(self
            .load_metadata()?
            .map(|meta| meta.keys)
            .unwrap_or_default())
    }

    /// Makes a new `bits`-bit key pair current and retires the old one as
    /// of `now`. The old key stays usable for decryption during the grace
    /// period (see [`decryption_keys`](Self::decryption_keys)).
    pub fn rotate(&self, now: OffsetDateTime, bits: usize) -> Result<Rotation, KeyError> {
        let _lock = self.lock()?;
        let Some(mut meta) = self.load_metadata()? else {
            return Err(KeyError::NoCurrentKey {
                dir: self.dir.clone(),
            });
        };
        let old_id = meta
            .current_info()
            .map_err(|reason| self.invalid_metadata(reason))?
            .id
            .clone();
        // Loading the current key first proves the passphrase is right, so a
        // rotation never writes a new key under a mistyped passphrase.
        self.load_key(&old_id)?;
        let (_, new) = self.create_key(now, bits)?;
        let retired_at = normalize(now);
        let mut old = None;
        for key in &mut meta.keys {
            if key.id == old_id {
                key.retired = Some(retired_at);
                old = Some(key.clone());
            }
        }
        let old = old.ok_or_else(|| self.invalid_metadata(format!("key {old_id} vanished")))?;
        meta.keys.push(new.clone());
        meta.current = new.id.clone();
        self.save_metadata(&meta)?;
        Ok(Rotation { old, new })
    }

    /// Deletes retired keys whose grace period is over
    /// (`retired + grace_days <= now`) and returns what was removed.
    /// `keys.json` is updated before the key files are deleted, so it never
    /// names a missing file.
    pub fn prune(&self, now: OffsetDateTime, grace_days: u32) -> Result<Vec<KeyInfo>, KeyError> {
        let _lock = self.lock()?;
        let Some(mut meta) = self.load_metadata()? else {
            return Ok(Vec::new());
        };
        let (keep, removed): (Vec<KeyInfo>, Vec<KeyInfo>) = meta
            .keys
            .into_iter()
            .partition(|key| key.usable_for_decryption(now, grace_days));
        if removed.is_empty() {
            return Ok(removed);
        }
        meta.keys = keep;
        self.save_metadata(&meta)?;
        for key in &removed {
            let path = self.key_path(&key.id);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(KeyError::io("delete retired key file", &path, err)),
            }
        }
        Ok(removed)
    }

    /// Keys that may decrypt at `now`: the current key first, then retired
    /// keys still within `grace_days` of their retirement, newest first. A
    /// key past its grace period is excluded even if its file still exists.
    pub fn decryption_keys(
        &self,
        now: OffsetDateTime,
        grace_days: u32,
    ) -> Result<Vec<NodeKey>, KeyError> {
        let Some(meta) = self.load_metadata()? else {
            return Ok(Vec::new());
        };
        let current = meta
            .current_info()
            .map_err(|reason| self.invalid_metadata(reason))?;
        let mut retired: Vec<&KeyInfo> = meta
            .keys
            .iter()
            .filter(|key| key.retired.is_some() && key.usable_for_decryption(now, grace_days))
            .collect();
        retired.sort_by_key(|key| std::cmp::Reverse(key.retired));
        std::iter::once(current)
            .chain(retired)
            .map(|key| self.load_key(&key.id))
            .collect()
    }

    /// Rewrites the `created` time of key `id` in `keys.json`. For tests and
    /// operators that need to backdate a key (for example to exercise
    /// age-based rotation); editing `keys.json` by hand has the same effect.
    pub fn set_created(&self, id: &str, when: OffsetDateTime) -> Result<KeyInfo, KeyError> {
        let unknown = || KeyError::UnknownKey { id: id.to_string() };
        let _lock = self.lock()?;
        let mut meta = self.load_metadata()?.ok_or_else(unknown)?;
        let key = meta
            .keys
            .iter_mut()
            .find(|key| key.id == id)
            .ok_or_else(unknown)?;
        key.created = normalize(when);
        let info = key.clone();
        self.save_metadata(&meta)?;
        Ok(info)
    }

    fn create_key(&self, now: OffsetDateTime, bits: usize) -> Result<(NodeKey, KeyInfo), KeyError> {
        let key = NodeKey::generate(bits)?;
        let info = KeyInfo {
            id: key.node_id(),
            created: normalize(now),
            retired: None,
        };
        key.write_file(
            &self.key_path(&info.id),
            self.passphrase.as_ref().map(|p| p.as_str()),
        )?;
        Ok((key, info))
    }

    /// Takes the store's exclusive lock, which serializes every change to
    /// `keys.json` and the key files across threads and processes. The
    /// lock is released when the returned file is dropped.
    fn lock(&self) -> Result<File, KeyError> {
        let path = self.dir.join(LOCK_FILE);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&path)
            .map_err(|err| KeyError::io("open lock file", &path, err))?;
        file.lock()
            .map_err(|err| KeyError::io("lock", &path, err))?;
        Ok(file)
    }

    fn load_key(&self, id: &str) -> Result<NodeKey, KeyError> {
        let path = self.key_path(id);
        let key = NodeKey::read_file(
            &path,
            self.passphrase.as_ref().map(|p| p.as_str()),
            self.passphrase_var.as_deref(),
        )
        .map_err(|err| match err {
            KeyError::Io { source, .. } if source.kind() == ErrorKind::NotFound => {
                KeyError::KeyFileMissing {
                    path: path.clone(),
                    id: id.to_string(),
                }
            }
            other => other,
        })?;
        let actual = key.node_id();
        if actual != id {
            return Err(KeyError::KeyMismatch {
                path,
                expected: id.to_string(),
                actual,
            });
        }
        Ok(key)
    }

    fn invalid_metadata(&self, reason: String) -> KeyError {
        KeyError::InvalidMetadata {
            path: self.metadata_path(),
            reason,
        }
    }

    /// Reads and validates `keys.json`; `None` if it does not exist yet.
    fn load_metadata(&self) -> Result<Option<Metadata>, KeyError> {
        let path = self.metadata_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(KeyError::io("read key metadata", &path, err)),
        };
        let meta: Metadata =
            serde_json::from_str(&text).map_err(|err| self.invalid_metadata(err.to_string()))?;
        meta.validate()
            .map_err(|reason| self.invalid_metadata(reason))?;
        Ok(Some(meta))
    }

    /// Replaces `keys.json` atomically: a 0600 temporary file in the same
    /// directory, fsynced, renamed over the old file, then the directory
    /// fsynced so the rename itself survives a crash.
    fn save_metadata(&self, meta: &Metadata) -> Result<(), KeyError> {
        let path = self.metadata_path();
        let mut json = serde_json::to_string_pretty(meta).map_err(|err| KeyError::Encode {
            format: "JSON",
            reason: err.to_string(),
        })?;
        json.push('\n');
        let mut tmp = tempfile::Builder::new()
            .prefix(".keys.json.")
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(|err| KeyError::io("create a temporary file in", &self.dir, err))?;
        tmp.write_all(json.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|err| KeyError::io("write", tmp.path(), err))?;
        tmp.persist(&path)
            .map_err(|err| KeyError::io("replace", &path, err.error))?;
        fsutil::sync_dir(&self.dir).map_err(|err| KeyError::io("sync directory", &self.dir, err))
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::crypto::envelope::{DEFAULT_SEGMENT_SIZE, EnvelopeError, decrypt, encrypt};
    use crate::crypto::testutil::TEST_BITS;

    const T0: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);
    const GRACE: u32 = 7;

    fn store(dir: &Path) -> KeyStore {
        KeyStore::open(dir, None, None).expect("open")
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn key_is_created_on_first_need_only() {
        let home = tempfile::tempdir().expect("tempdir");
        let dir = home.path().join("keys");
        let store = store(&dir);
        assert!(store.current().expect("current").is_none());
        assert!(store.list().expect("list").is_empty());
        assert!(!store.metadata_path().exists());

        let (key, info, created) = store.current_or_create(T0, TEST_BITS).expect("create");
        assert!(created);
        assert_eq!(info.id, key.node_id());
        assert_eq!(info.created, T0);
        assert_eq!(info.retired, None);

        let (again, info_again, created_again) = store
            .current_or_create(T0 + Duration::days(1), TEST_BITS)
            .expect("reuse");
        assert!(!created_again);
        assert_eq!(again.node_id(), key.node_id());
        assert_eq!(info_again, info);
        assert_eq!(store.list().expect("list"), std::slice::from_ref(&info));

        #[cfg(unix)]
        {
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&store.key_path(&info.id)), 0o600);
            assert_eq!(mode(&store.metadata_path()), 0o600);
        }
    }

    #[test]
    fn concurrent_first_use_creates_one_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        let (key, _, _) = store(dir.path())
                            .current_or_create(T0, TEST_BITS)
                            .expect("create");
                        key.node_id()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(ids[0], ids[1]);
        assert_eq!(store(dir.path()).list().expect("list").len(), 1);
        let pem_files = fs::read_dir(dir.path())
            .expect("list dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "pem"))
            })
            .count();
        assert_eq!(pem_files, 1);
    }

    #[test]
    fn missing_key_file_says_how_to_recover() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let (_, info, _) = store.current_or_create(T0, TEST_BITS).expect("create");
        fs::remove_file(store.key_path(&info.id)).expect("remove");
        let err = store.current().unwrap_err();
        assert!(matches!(err, KeyError::KeyFileMissing { .. }), "{err:?}");
        assert!(err.to_string().contains("keys.json"), "{err}");
    }

    #[test]
    fn metadata_file_has_the_documented_shape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let (_, info, _) = store.current_or_create(T0, TEST_BITS).expect("create");
        let text = fs::read_to_string(store.metadata_path()).expect("read");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "current": info.id,
                "keys": [{ "id": info.id, "created": "2026-03-01T12:00:00Z", "retired": null }]
            })
        );
    }

    #[test]
    fn node_id_is_stable_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, _, _) = store(dir.path())
            .current_or_create(T0, TEST_BITS)
            .expect("create");
        let (reloaded, info) = store(dir.path())
            .current()
            .expect("current")
            .expect("a key exists");
        assert_eq!(reloaded.node_id(), key.node_id());
        assert_eq!(info.id, key.node_id());
        assert!(dir.path().join(format!("{}.pem", key.node_id())).exists());
    }

    #[test]
    fn passphrase_protected_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let var = Some("CMM_KEY_PASSPHRASE");
        let locked = KeyStore::open(dir.path(), Some("s3cret"), var).expect("open");
        let (key, info, _) = locked.current_or_create(T0, TEST_BITS).expect("create");
        let pem = fs::read_to_string(locked.key_path(&info.id)).expect("read pem");
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

        let reopened = KeyStore::open(dir.path(), Some("s3cret"), var).expect("open");
        let (loaded, _) = reopened.current().expect("current").expect("key");
        assert_eq!(loaded.node_id(), key.node_id());

        let err = KeyStore::open(dir.path(), None, var)
            .expect("open")
            .current()
            .unwrap_err();
        assert!(
            matches!(err, KeyError::PassphraseRequired { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("CMM_KEY_PASSPHRASE"), "{message}");
        assert!(
            message.contains(&locked.key_path(&info.id).display().to_string()),
            "{message}"
        );

        let err = KeyStore::open(dir.path(), Some("guess"), var)
            .expect("open")
            .current()
            .unwrap_err();
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err:?}");
        assert!(err.to_string().contains("CMM_KEY_PASSPHRASE"), "{err}");

        // Rotation under a wrong passphrase is refused before anything is written.
        let err = KeyStore::open(dir.path(), Some("guess"), var)
            .expect("open")
            .rotate(T0, TEST_BITS)
            .unwrap_err();
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err:?}");
        assert_eq!(reopened.list().expect("list").len(), 1);

        let err = KeyStore::open(dir.path(), Some(""), var).unwrap_err();
        assert!(matches!(err, KeyError::EmptyPassphrase { .. }), "{err:?}");
    }

    fn seal_to(key: &NodeKey, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encrypt(
            plaintext,
            &mut out,
            &[key.public().clone()],
            DEFAULT_SEGMENT_SIZE,
        )
        .expect("encrypt");
        out
    }

    fn open_with(keys: &[NodeKey], ciphertext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::new();
        decrypt(ciphertext, &mut out, keys)?;
        Ok(out)
    }

    #[test]
    fn rotation_grace_and_prune() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let (old_key, old_info, _) = store.current_or_create(T0, TEST_BITS).expect("create");
        let old_ciphertext = seal_to(&old_key, b"sent before the rotation");

        let rotated_at = T0 + Duration::days(30);
        let rotation = store.rotate(rotated_at, TEST_BITS).expect("rotate");
        assert_eq!(rotation.old.id, old_info.id);
        assert_eq!(rotation.old.retired, Some(rotated_at));
        assert_ne!(rotation.new.id, old_info.id);
        let (current, current_info) = store.current().expect("current").expect("key");
        assert_eq!(current.node_id(), rotation.new.id);
        assert_eq!(current_info, rotation.new);

        // Within the grace period the old key still decrypts, current first.
        let within = rotated_at + Duration::days(i64::from(GRACE)) - Duration::seconds(1);
        let keys = store.decryption_keys(within, GRACE).expect("keys");
        let ids: Vec<String> = keys.iter().map(NodeKey::node_id).collect();
        assert_eq!(ids, [rotation.new.id.clone(), old_info.id.clone()]);
        assert_eq!(
            open_with(&keys, &old_ciphertext).expect("old file decrypts"),
            b"sent before the rotation"
        );
        assert!(store.prune(within, GRACE).expect("prune").is_empty());

        // Past the grace period the old key is unusable even though its
        // file still exists...
        let expired = rotated_at + Duration::days(i64::from(GRACE));
        assert!(store.key_path(&old_info.id).exists());
        let keys = store.decryption_keys(expired, GRACE).expect("keys");
        assert_eq!(keys.len(), 1);
        let err = open_with(&keys, &old_ciphertext).unwrap_err();
        assert!(matches!(err, EnvelopeError::WrongKey { .. }), "{err:?}");

        // ...and prune removes it from keys.json and deletes its file.
        let removed = store.prune(expired, GRACE).expect("prune");
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].id, old_info.id);
        assert!(!store.key_path(&old_info.id).exists());
        assert_eq!(
            store.list().expect("list"),
            std::slice::from_ref(&rotation.new)
        );
        let err = open_with(
            &store.decryption_keys(within, GRACE).expect("keys"),
            &old_ciphertext,
        )
        .unwrap_err();
        assert!(matches!(err, EnvelopeError::WrongKey { .. }), "{err:?}");
    }

    #[test]
    fn rotate_needs_a_current_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = store(dir.path()).rotate(T0, TEST_BITS).unwrap_err();
        assert!(matches!(err, KeyError::NoCurrentKey { .. }), "{err:?}");
    }

    #[test]
    fn backdating_through_the_api_and_by_hand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let (_, info, _) = store.current_or_create(T0, TEST_BITS).expect("create");
        assert_eq!(info.age_days(T0 + Duration::hours(47)), 1);

        let backdated = store
            .set_created(&info.id, T0 - Duration::days(100))
            .expect("set_created");
        assert_eq!(backdated.age_days(T0), 100);
        assert_eq!(store.list().expect("list")[0].age_days(T0), 100);

        let text = fs::read_to_string(store.metadata_path()).expect("read");
        let edited = text.replace("2025-11-21T12:00:00Z", "2025-03-01T12:00:00Z");
        assert_ne!(edited, text);
        fs::write(store.metadata_path(), edited).expect("write");
        assert_eq!(store.list().expect("list")[0].age_days(T0), 365);

        let err = store.set_created(&"0".repeat(64), T0).unwrap_err();
        assert!(matches!(err, KeyError::UnknownKey { .. }), "{err:?}");
    }

    #[test]
    fn invalid_metadata_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            "not json",
            r#"{"current": "../../etc/passwd", "keys": [{"id": "../../etc/passwd", "created": "2026-01-01T00:00:00Z", "retired": null}]}"#,
            r#"{"current": "aa", "keys": []}"#,
        ];
        for text in cases {
            fs::write(dir.path().join(METADATA_FILE), text).expect("write");
            let err = KeyStore::open(dir.path(), None, None).unwrap_err();
            assert!(
                matches!(err, KeyError::InvalidMetadata { .. }),
                "{text}: {err:?}"
            );
            assert!(err.to_string().contains("keys.json"), "{err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn group_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let (_, info, _) = store.current_or_create(T0, TEST_BITS).expect("create");
        let path = store.key_path(&info.id);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = store.current().unwrap_err();
        assert!(
            matches!(err, KeyError::InsecurePermissions { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let err = store.decryption_keys(T0, GRACE).unwrap_err();
        assert!(
            matches!(err, KeyError::InsecurePermissions { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn swapped_key_file_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let (_, info, _) = store.current_or_create(T0, TEST_BITS).expect("create");
        let path = store.key_path(&info.id);
        fs::remove_file(&path).expect("remove");
        crate::crypto::testutil::vector_key()
            .write_file(&path, None)
            .expect("write other key");
        let err = store.current().unwrap_err();
        assert!(matches!(err, KeyError::KeyMismatch { .. }), "{err:?}");
    }
}
