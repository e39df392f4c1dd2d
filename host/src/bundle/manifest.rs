//! The bundle manifest and its canonical bytes.
//!
//! The canonical form is the manifest as compact JSON with every object's
//! keys in byte order and integers only: the structs below declare their
//! fields in that order and `config` is a sorted map, so serde_json writes
//! exactly it. A manifest is accepted only if it is byte-for-byte the
//! canonical form of what it parses to, so there is one encoding per
//! manifest: whitespace, reordered or duplicate keys are refused rather than
//! signed one way and read another.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::BundleError;

/// The WIT package this host implements; a manifest must target it.
pub use crate::wit::WIT_PACKAGE;

/// The manifest format this host reads.
pub const FORMAT: u32 = 1;

/// The roles a bundle may fill.
const ROLES: [&str; 4] = ["approval", "limits", "pricing", "compliance"];

/// What a bundle claims, signed as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// RFC 3339 UTC, when the bundle was built.
    pub created: String,
    /// RFC 3339 UTC; after this, nodes refuse the bundle.
    pub expires: String,
    pub format: u32,
    pub name: String,
    /// Only ever increases for one name.
    pub revision: u64,
    pub roles: Vec<RoleEntry>,
    /// The WIT package the components target.
    pub wit: String,
}

/// One role's component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleEntry {
    /// The plugin's own values; it reads them as `plugin.<key>`.
    pub config: BTreeMap<String, String>,
    /// The component's file name inside the bundle.
    pub file: String,
    pub limits: RoleLimits,
    pub role: String,
    /// Hex sha256 of the component file.
    pub sha256: String,
}

/// Per-call limits the publisher asks for. A node applies the smaller of
/// these and its own `policy.*` caps: a bundle can only tighten the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleLimits {
    pub fuel: u64,
    pub memory_bytes: u64,
    pub timeout_ms: u64,
}

impl Manifest {
    /// The canonical bytes: what is signed and stored as `manifest.json`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serializes")
    }

    /// Parses and checks a manifest's bytes: canonical form, format, name,
    /// times, roles and file names. Signatures, digests, expiry and the
    /// revision rule are checked by the caller, who knows the trust store,
    /// the clock and the history.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BundleError> {
        let invalid = |detail: String| BundleError::Manifest { detail };
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if manifest.canonical_bytes() != bytes {
            return Err(invalid(
                "manifest.json is not in canonical form (compact JSON, keys in byte order); rebuild the bundle with `policy build`".into(),
            ));
        }
        manifest.check()?;
        Ok(manifest)
    }

    /// The structural rules every manifest obeys, also applied by `build`.
    pub fn check(&self) -> Result<(), BundleError> {
        let invalid = |detail: String| Err(BundleError::Manifest { detail });
        if self.format != FORMAT {
            return invalid(format!(
                "format {} is not one this host reads (it reads {FORMAT})",
                self.format
            ));
        }
        if !valid_name(&self.name) {
            return invalid(format!(
                "name '{}' must be 1 to 64 characters of a-z, 0-9 and '-', starting with a letter",
                self.name
            ));
        }
        if self.revision == 0 || self.revision > i64::MAX as u64 {
            return invalid(format!("revision must be between 1 and {}", i64::MAX));
        }
        let created = parse_time("created", &self.created)?;
        let expires = parse_time("expires", &self.expires)?;
        if expires <= created {
            return invalid(format!(
                "expires ({}) is not after created ({})",
                self.expires, self.created
            ));
        }
        if self.roles.is_empty() {
            return invalid("it names no roles".into());
        }
        let mut files: Vec<&str> = Vec::new();
        for (i, entry) in self.roles.iter().enumerate() {
            if !ROLES.contains(&entry.role.as_str()) {
                return invalid(format!(
                    "unknown role '{}' (roles: {})",
                    entry.role,
                    ROLES.join(", ")
                ));
            }
            if self.roles[..i].iter().any(|e| e.role == entry.role) {
                return Err(BundleError::DuplicateRole {
                    role: entry.role.clone(),
                });
            }
            if !valid_file_name(&entry.file) || is_reserved(&entry.file) {
                return invalid(format!(
                    "file name '{}' for the {} role must be 1 to 100 characters of A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.', and not manifest.json or signatures.json",
                    entry.file, entry.role
                ));
            }
            if files.contains(&entry.file.as_str()) {
                return invalid(format!(
                    "'{}' is named for two roles; each role needs its own component",
                    entry.file
                ));
            }
            files.push(&entry.file);
            if entry.sha256.len() != 64
                || !entry
                    .sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return invalid(format!(
                    "sha256 of the {} component must be 64 lowercase hex digits",
                    entry.role
                ));
            }
            let l = entry.limits;
            if l.fuel == 0 || l.memory_bytes == 0 || l.timeout_ms == 0 {
                return invalid(format!(
                    "limits of the {} role must all be above zero",
                    entry.role
                ));
            }
            if let Some(key) = entry.config.keys().find(|k| !valid_config_key(k)) {
                return invalid(format!(
                    "config key '{key}' of the {} role must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
                    entry.role
                ));
            }
        }
        Ok(())
    }

    /// True once `expires` has passed at `now`.
    pub fn expired_at(&self, now: OffsetDateTime) -> bool {
        parse_time("expires", &self.expires).map_or(true, |expires| expires <= now)
    }

    /// The entry for `role`, if this bundle fills it.
    pub fn role(&self, role: &str) -> Option<&RoleEntry> {
        self.roles.iter().find(|e| e.role == role)
    }

    /// `name@revision`, as users and the audit log name a bundle.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.revision)
    }
}

/// A bundle name: what `policy activate NAME@REVISION` and stored paths use.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= 64
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

pub(super) fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(super) fn is_reserved(name: &str) -> bool {
    matches!(name, "manifest.json" | "signatures.json")
}

fn valid_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Only UTC with a `Z` is accepted, so that a time has one spelling.
fn parse_time(field: &str, text: &str) -> Result<OffsetDateTime, BundleError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .filter(|t| t.offset().is_utc() && text.ends_with('Z'))
        .ok_or_else(|| BundleError::Manifest {
            detail: format!(
                "{field} '{text}' is not an RFC 3339 UTC time like 2026-11-24T10:00:00Z"
            ),
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            created: "2026-11-24T10:00:00Z".into(),
            expires: "2027-11-24T10:00:00Z".into(),
            format: FORMAT,
            name: "acme".into(),
            revision: 3,
            roles: vec![RoleEntry {
                config: BTreeMap::from([("models".into(), "claude-sonnet-4-5".into())]),
                file: "approval.wasm".into(),
                limits: RoleLimits {
                    fuel: 1_000_000,
                    memory_bytes: 8 << 20,
                    timeout_ms: 20,
                },
                role: "approval".into(),
                sha256: "ab".repeat(32),
            }],
            wit: WIT_PACKAGE.into(),
        }
    }

    #[test]
    fn canonical_bytes_have_sorted_keys_and_round_trip() {
        let bytes = sample().canonical_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(r#"{"created":"2026-11-24T10:00:00Z","expires":"#));
        assert!(text.contains(r#"{"config":{"models":"claude-sonnet-4-5"},"file":"approval.wasm","limits":{"fuel":1000000,"memory_bytes":8388608,"timeout_ms":20},"role":"approval","sha256":"#));
        assert!(!text.contains(' '));
        assert_eq!(Manifest::parse(&bytes).unwrap(), sample());
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            serde_json::to_vec(&value).unwrap(),
            bytes,
            "serde_json's own map order agrees"
        );
    }

    #[test]
    fn non_canonical_encodings_are_refused() {
        let pretty = serde_json::to_vec_pretty(&sample()).unwrap();
        assert!(matches!(
            Manifest::parse(&pretty),
            Err(BundleError::Manifest { .. })
        ));
        let bytes = String::from_utf8(sample().canonical_bytes()).unwrap();
        let duplicated = bytes.replacen(r#""format":1,"#, r#""format":1,"format":1,"#, 1);
        assert!(matches!(
            Manifest::parse(duplicated.as_bytes()),
            Err(BundleError::Manifest { .. })
        ));
        let extra = bytes.replacen(r#""format":1,"#, r#""format":1,"extra":1,"#, 1);
        let err = Manifest::parse(extra.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn structural_rules_each_have_their_message() {
        let refuse = |edit: fn(&mut Manifest), needle: &str| {
            let mut m = sample();
            edit(&mut m);
            let err = m.check().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        };
        refuse(|m| m.format = 2, "format 2");
        refuse(|m| m.name = "../etc".into(), "name '../etc'");
        refuse(|m| m.revision = 0, "between 1 and");
        refuse(
            |m| m.expires = "2027-11-24T10:00:00+01:00".into(),
            "not an RFC 3339 UTC",
        );
        refuse(|m| m.expires = m.created.clone(), "is not after created");
        refuse(|m| m.roles.clear(), "no roles");
        refuse(
            |m| m.roles[0].role = "routing".into(),
            "unknown role 'routing'",
        );
        refuse(
            |m| m.roles.push(m.roles[0].clone()),
            "lists the approval role twice",
        );
        refuse(
            |m| m.roles[0].file = "../x.wasm".into(),
            "file name '../x.wasm'",
        );
        refuse(
            |m| m.roles[0].file = "manifest.json".into(),
            "file name 'manifest.json'",
        );
        refuse(|m| m.roles[0].sha256 = "AB".repeat(32), "64 lowercase hex");
        refuse(|m| m.roles[0].limits.fuel = 0, "above zero");
        refuse(
            |m| {
                m.roles[0].config.insert("a b".into(), "x".into());
            },
            "config key 'a b'",
        );
        let mut two = sample();
        let mut second = two.roles[0].clone();
        second.role = "limits".into();
        two.roles.push(second);
        assert!(
            two.check()
                .unwrap_err()
                .to_string()
                .contains("named for two roles")
        );
    }

    #[test]
    fn expiry_is_inclusive_of_the_instant() {
        let m = sample();
        let at = OffsetDateTime::parse(&m.expires, &Rfc3339).unwrap();
        assert!(m.expired_at(at));
        assert!(!m.expired_at(at - time::Duration::seconds(1)));
    }

    #[test]
    fn names() {
        assert!(valid_name("acme-policies2"));
        for bad in ["", "Acme", "1acme", "a_b", "a/b", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
