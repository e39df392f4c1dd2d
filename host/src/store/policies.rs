//! Which policy plugin is active for each role. A role with no row runs the
//! policy embedded in the host. Every change is audited in its own
//! transaction. It records the choice only: it must not load, verify or trust
//! a plugin; the bundle and policy engines do that before calling here.

use rusqlite::{Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::error::{During, StoreError};
use super::{Store, audit};

/// The roles a policy plugin can fill.
pub const POLICY_ROLES: [&str; 4] = ["approval", "limits", "pricing", "compliance"];

/// The plugin chosen for one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivePolicy {
    pub role: String,
    /// "file" (a loose component) or "bundle" (a signed policy bundle).
    pub origin: String,
    pub name: String,
    pub sha256: String,
    pub activated_at: String,
    /// The bundle and revision, when `origin` is "bundle".
    pub bundle: Option<String>,
    pub revision: Option<i64>,
}

fn check_role(role: &str) -> Result<(), StoreError> {
    if POLICY_ROLES.contains(&role) {
        Ok(())
    } else {
        Err(StoreError::UnknownRole {
            role: role.to_owned(),
        })
    }
}

impl Store {
    /// Every role with a chosen plugin, in role order.
    pub fn active_policies(&self) -> Result<Vec<ActivePolicy>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT role, origin, name, sha256, activated_at, bundle, revision
                 FROM active_policies ORDER BY role",
            )
            .during("reading active policies")?;
        let rows = stmt
            .query_map([], |row| {
                Ok(ActivePolicy {
                    role: row.get(0)?,
                    origin: row.get(1)?,
                    name: row.get(2)?,
                    sha256: row.get(3)?,
                    activated_at: row.get(4)?,
                    bundle: row.get(5)?,
                    revision: row.get(6)?,
                })
            })
            .during("reading active policies")?;
        rows.map(|row| row.during("reading active policies"))
            .collect()
    }

    /// Makes `policy` the active one for its role, replacing any other.
    pub fn set_active_policy(&mut self, policy: &ActivePolicy) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting a policy activation")?;
        activate(&tx, policy)?;
        tx.commit().during("committing a policy activation")
    }

    /// Returns `role` to its embedded default. `false` if nothing was set, in
    /// which case nothing changed and nothing is audited.
    pub fn reset_active_policy(&mut self, role: &str) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting a policy reset")?;
        if !reset(&tx, role)? {
            return Ok(false);
        }
        tx.commit().during("committing a policy reset")?;
        Ok(true)
    }
}

/// Removes one role's active policy, auditing it if there was one, inside
/// the caller's transaction.
pub(super) fn reset(tx: &Transaction<'_>, role: &str) -> Result<bool, StoreError> {
    check_role(role)?;
    let removed = tx
        .execute("DELETE FROM active_policies WHERE role = ?1", [role])
        .during("resetting a policy")?;
    if removed > 0 {
        audit::append(
            tx,
            "policy.reset",
            role,
            &serde_json::json!({ "role": role }),
        )?;
    }
    Ok(removed > 0)
}

/// Upserts one role's active policy and audits it, inside the caller's
/// transaction.
pub(super) fn activate(tx: &Transaction<'_>, policy: &ActivePolicy) -> Result<(), StoreError> {
    check_role(&policy.role)?;
    tx.execute(
        "INSERT INTO active_policies (role, origin, name, sha256, activated_at, bundle, revision)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (role) DO UPDATE SET origin = excluded.origin, name = excluded.name,
             sha256 = excluded.sha256, activated_at = excluded.activated_at,
             bundle = excluded.bundle, revision = excluded.revision",
        params![
            policy.role,
            policy.origin,
            policy.name,
            policy.sha256,
            policy.activated_at,
            policy.bundle,
            policy.revision
        ],
    )
    .during("activating a policy")?;
    let details = audit::to_details("the activated policy", policy)?;
    audit::append(tx, "policy.activated", &policy.role, &details)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    fn policy(role: &str, name: &str) -> ActivePolicy {
        ActivePolicy {
            role: role.to_owned(),
            origin: "file".to_owned(),
            name: name.to_owned(),
            sha256: "ef".repeat(32),
            activated_at: "2026-02-10T12:00:00.000000Z".to_owned(),
            bundle: None,
            revision: None,
        }
    }

    #[test]
    fn activation_upserts_per_role_and_reset_removes() {
        let (_dir, mut store) = temp_store();
        assert!(store.active_policies().unwrap().is_empty());
        store
            .set_active_policy(&policy("limits", "strict"))
            .unwrap();
        store
            .set_active_policy(&policy("approval", "ask-me"))
            .unwrap();
        store
            .set_active_policy(&policy("limits", "stricter"))
            .unwrap();
        let active = store.active_policies().unwrap();
        assert_eq!(
            active,
            [policy("approval", "ask-me"), policy("limits", "stricter")]
        );

        assert!(store.reset_active_policy("limits").unwrap());
        assert!(!store.reset_active_policy("limits").unwrap());
        assert_eq!(
            store.active_policies().unwrap(),
            [policy("approval", "ask-me")]
        );

        let kinds: Vec<_> = store
            .audit_entries(None)
            .unwrap()
            .into_iter()
            .map(|entry| entry.kind)
            .collect();
        let expected = [
            "policy.activated",
            "policy.activated",
            "policy.activated",
            "policy.reset",
        ];
        assert_eq!(kinds, expected);
        assert!(store.verify_audit().unwrap().broken.is_none());
    }

    #[test]
    fn an_unknown_role_is_refused() {
        let (_dir, mut store) = temp_store();
        let err = store
            .set_active_policy(&policy("routing", "x"))
            .unwrap_err();
        assert!(matches!(err, StoreError::UnknownRole { ref role } if role == "routing"));
        assert!(matches!(
            store.reset_active_policy("routing"),
            Err(StoreError::UnknownRole { .. })
        ));
    }
}
