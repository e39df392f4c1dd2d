//! Signed policy bundles on this node: the keys it trusts to sign policy,
//! every bundle revision it accepted, and the URLs and OCI tags it installs
//! from. An install, activation or rollback changes the active policies of
//! all the bundle's roles in one transaction with its audit rows, so a node
//! never runs half a bundle. Like `policies`, this records choices only: the
//! checks happen in `bundle` and `ops` before anything is written here.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::Value;

use super::error::{During, StoreError};
use super::policies::{ActivePolicy, activate, reset};
use super::{Store, audit};

/// A public key trusted to sign policy bundles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustedKeyRow {
    pub key_id: String,
    pub name: String,
    pub public_pem: String,
    pub added_at: String,
}

/// One accepted revision of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BundleRevision {
    pub name: String,
    pub revision: i64,
    /// sha256 of the bundle file.
    pub sha256: String,
    /// The canonical manifest bytes, as text.
    pub manifest: String,
    /// signatures.json's entries, as JSON.
    pub signatures: String,
    /// The file path or URL it was installed from.
    pub source: String,
    pub installed_at: String,
}

/// A URL or OCI tag installed from, with what it last served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BundleSource {
    /// An http(s) URL or an `oci://` reference to a tag.
    pub url: String,
    /// The URL's ETag, or the digest of the manifest the tag named.
    pub etag: Option<String>,
    pub checked_at: String,
}

/// How a bundle revision became active, for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleChange {
    /// `policy install` or `policy update`: a new revision.
    Installed,
    /// `policy activate` of an installed revision.
    Activated,
    /// Going back to an older revision (`--allow-downgrade`).
    RolledBack,
}

impl BundleChange {
    fn kind(self) -> &'static str {
        match self {
            BundleChange::Installed => "policy.installed",
            BundleChange::Activated => "policy.bundle-activated",
            BundleChange::RolledBack => "policy.rolled-back",
        }
    }
}

const REVISION_COLUMNS: &str = "name, revision, sha256, manifest, signatures, source, installed_at";

fn revision_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BundleRevision> {
    Ok(BundleRevision {
        name: row.get(0)?,
        revision: row.get(1)?,
        sha256: row.get(2)?,
        manifest: row.get(3)?,
        signatures: row.get(4)?,
        source: row.get(5)?,
        installed_at: row.get(6)?,
    })
}

impl Store {
    /// Every trusted key, oldest first.
    pub fn trusted_keys(&self) -> Result<Vec<TrustedKeyRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key_id, name, public_pem, added_at FROM trusted_keys ORDER BY added_at, key_id")
            .during("reading trusted keys")?;
        let rows = stmt
            .query_map([], |row| {
                Ok(TrustedKeyRow {
                    key_id: row.get(0)?,
                    name: row.get(1)?,
                    public_pem: row.get(2)?,
                    added_at: row.get(3)?,
                })
            })
            .during("reading trusted keys")?;
        rows.map(|r| r.during("reading trusted keys")).collect()
    }

    /// Trusts `key`. `false` if it was already trusted (nothing changes).
    pub fn add_trusted_key(&mut self, key: &TrustedKeyRow) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting to trust a key")?;
        let added = tx
            .execute(
                "INSERT INTO trusted_keys (key_id, name, public_pem, added_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key_id) DO NOTHING",
                params![key.key_id, key.name, key.public_pem, key.added_at],
            )
            .during("trusting a key")?;
        if added == 0 {
            return Ok(false);
        }
        let details = serde_json::json!({ "key_id": key.key_id, "name": key.name });
        audit::append(&tx, "trust.added", &key.key_id, &details)?;
        tx.commit().during("committing a trusted key")?;
        Ok(true)
    }

    /// Stops trusting the key with id `key_id`. `false` if it was not trusted.
    pub fn remove_trusted_key(&mut self, key_id: &str) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting to remove a trusted key")?;
        let removed = tx
            .execute("DELETE FROM trusted_keys WHERE key_id = ?1", [key_id])
            .during("removing a trusted key")?;
        if removed == 0 {
            return Ok(false);
        }
        let details = serde_json::json!({ "key_id": key_id });
        audit::append(&tx, "trust.removed", key_id, &details)?;
        tx.commit().during("committing a trusted key removal")?;
        Ok(true)
    }

    /// The highest revision of `name` this node ever accepted.
    pub fn highest_bundle_revision(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(
                "SELECT MAX(revision) FROM bundle_revisions WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .during("reading the highest bundle revision")
    }

    /// One accepted revision.
    pub fn bundle_revision(
        &self,
        name: &str,
        revision: i64,
    ) -> Result<Option<BundleRevision>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {REVISION_COLUMNS} FROM bundle_revisions WHERE name = ?1 AND revision = ?2"),
                params![name, revision],
                revision_row,
            )
            .optional()
            .during("reading a bundle revision")
    }

    /// Every accepted revision, by name then revision.
    pub fn bundle_revisions(&self) -> Result<Vec<BundleRevision>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {REVISION_COLUMNS} FROM bundle_revisions ORDER BY name, revision"
            ))
            .during("reading bundle revisions")?;
        let rows = stmt
            .query_map([], revision_row)
            .during("reading bundle revisions")?;
        rows.map(|r| r.during("reading bundle revisions")).collect()
    }

    /// Records a newly accepted revision (when `new` is given), makes
    /// `roles` active and returns `released` roles to their defaults, in one
    /// transaction with the audit rows. `details` (name, revision, digests,
    /// signers) goes on the change's audit row.
    pub fn switch_bundle(
        &mut self,
        change: BundleChange,
        new: Option<&BundleRevision>,
        roles: &[ActivePolicy],
        released: &[String],
        details: &Value,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting a bundle activation")?;
        if let Some(r) = new {
            tx.execute(
                &format!("INSERT INTO bundle_revisions ({REVISION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![r.name, r.revision, r.sha256, r.manifest, r.signatures, r.source, r.installed_at],
            )
            .during("recording a bundle revision")?;
        }
        let subject = roles
            .first()
            .and_then(|p| p.bundle.clone())
            .unwrap_or_default();
        audit::append(&tx, change.kind(), &subject, details)?;
        for policy in roles {
            activate(&tx, policy)?;
        }
        for role in released {
            reset(&tx, role)?;
        }
        tx.commit().during("committing a bundle activation")
    }

    /// Every URL and OCI tag installed from.
    pub fn bundle_sources(&self) -> Result<Vec<BundleSource>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT url, etag, checked_at FROM bundle_sources ORDER BY url")
            .during("reading bundle sources")?;
        let rows = stmt
            .query_map([], |row| {
                Ok(BundleSource {
                    url: row.get(0)?,
                    etag: row.get(1)?,
                    checked_at: row.get(2)?,
                })
            })
            .during("reading bundle sources")?;
        rows.map(|r| r.during("reading bundle sources")).collect()
    }

    /// Remembers what `source.url` served last.
    pub fn save_bundle_source(&mut self, source: &BundleSource) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO bundle_sources (url, etag, checked_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (url) DO UPDATE SET etag = excluded.etag, checked_at = excluded.checked_at",
                params![source.url, source.etag, source.checked_at],
            )
            .during("saving a bundle source")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    fn revision(name: &str, revision: i64) -> BundleRevision {
        BundleRevision {
            name: name.into(),
            revision,
            sha256: "cd".repeat(32),
            manifest: "{}".into(),
            signatures: "[]".into(),
            source: "/tmp/b.cmmpol".into(),
            installed_at: "2026-11-24T10:00:00.000000Z".into(),
        }
    }

    fn role(role: &str, bundle: &str, rev: i64) -> ActivePolicy {
        ActivePolicy {
            role: role.into(),
            origin: "bundle".into(),
            name: format!("{bundle}-{role}"),
            sha256: "ef".repeat(32),
            activated_at: "2026-11-24T10:00:00.000000Z".into(),
            bundle: Some(bundle.into()),
            revision: Some(rev),
        }
    }

    #[test]
    fn an_install_records_the_revision_and_activates_every_role_at_once() {
        let (_dir, mut store) = temp_store();
        assert_eq!(store.highest_bundle_revision("acme").unwrap(), None);
        let roles = [role("approval", "acme", 2), role("limits", "acme", 2)];
        store
            .switch_bundle(
                BundleChange::Installed,
                Some(&revision("acme", 2)),
                &roles,
                &[],
                &serde_json::json!({"revision": 2}),
            )
            .unwrap();
        assert_eq!(store.highest_bundle_revision("acme").unwrap(), Some(2));
        assert_eq!(store.active_policies().unwrap(), roles);
        assert_eq!(
            store.bundle_revision("acme", 2).unwrap(),
            Some(revision("acme", 2))
        );
        let err = store
            .switch_bundle(
                BundleChange::Installed,
                Some(&revision("acme", 2)),
                &roles,
                &[],
                &Value::Null,
            )
            .unwrap_err();
        assert!(err.to_string().contains("bundle revision"), "{err}");
        let kinds: Vec<_> = store
            .audit_entries(None)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            ["policy.installed", "policy.activated", "policy.activated"]
        );
    }

    #[test]
    fn trusting_is_idempotent_and_audited() {
        let (_dir, mut store) = temp_store();
        let key = TrustedKeyRow {
            key_id: "ab".repeat(32),
            name: "ops".into(),
            public_pem: "-----BEGIN PUBLIC KEY-----".into(),
            added_at: "2026-11-24T10:00:00.000000Z".into(),
        };
        assert!(store.add_trusted_key(&key).unwrap());
        assert!(!store.add_trusted_key(&key).unwrap());
        assert_eq!(store.trusted_keys().unwrap(), std::slice::from_ref(&key));
        assert!(store.remove_trusted_key(&key.key_id).unwrap());
        assert!(!store.remove_trusted_key(&key.key_id).unwrap());
        let kinds: Vec<_> = store
            .audit_entries(None)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["trust.added", "trust.removed"]);
    }
}
