//! `bundle.toml`: how an author describes a bundle, and `build`, which turns
//! it and the components it names into an unsigned bundle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::archive::Bundle;
use super::error::BundleError;
use super::manifest::{FORMAT, Manifest, RoleEntry, RoleLimits, WIT_PACKAGE};

/// The source file `policy build DIR` looks for.
pub const SOURCE_FILE: &str = "bundle.toml";

/// Validity when `bundle.toml` sets neither `expires` nor `expires_in_days`.
const DEFAULT_VALID_DAYS: u32 = 365;

/// The author's description of a bundle.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceManifest {
    pub name: String,
    pub revision: u64,
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    pub roles: BTreeMap<String, SourceRole>,
}

/// One role in `bundle.toml`; unset limits take the host's defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRole {
    /// Path of the component, relative to `bundle.toml`.
    pub component: PathBuf,
    pub fuel: Option<u64>,
    pub memory_mib: Option<u64>,
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// Builds an unsigned bundle from `path` (a folder holding `bundle.toml`, or
/// the file itself), created at `now`.
pub fn build(
    path: &Path,
    defaults: RoleLimits,
    now: OffsetDateTime,
) -> Result<Bundle, BundleError> {
    let file = if path.is_dir() {
        path.join(SOURCE_FILE)
    } else {
        path.to_path_buf()
    };
    let base = file.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(&file).map_err(|source| BundleError::Read {
        path: file.clone(),
        source,
    })?;
    let source: SourceManifest = toml::from_str(&text).map_err(|e| BundleError::Manifest {
        detail: format!("{}: {e}", file.display()),
    })?;
    let expires = match (&source.expires, source.expires_in_days) {
        (Some(_), Some(_)) => {
            return Err(BundleError::Manifest {
                detail: format!(
                    "{}: set expires or expires_in_days, not both",
                    file.display()
                ),
            });
        }
        (Some(at), None) => at.clone(),
        (None, days) => {
            rfc3339(now + time::Duration::days(days.unwrap_or(DEFAULT_VALID_DAYS).into()))
        }
    };
    let mut components = BTreeMap::new();
    let mut roles = Vec::new();
    for (role, spec) in source.roles {
        let component_path = base.join(&spec.component);
        let wasm = std::fs::read(&component_path).map_err(|source| BundleError::Read {
            path: component_path.clone(),
            source,
        })?;
        let file_name = format!("{role}.wasm");
        roles.push(RoleEntry {
            config: spec.config,
            file: file_name.clone(),
            limits: RoleLimits {
                fuel: spec.fuel.unwrap_or(defaults.fuel),
                memory_bytes: spec.memory_mib.map_or(defaults.memory_bytes, |m| m << 20),
                timeout_ms: spec.timeout_ms.unwrap_or(defaults.timeout_ms),
            },
            role,
            sha256: hex::encode(Sha256::digest(&wasm)),
        });
        components.insert(file_name, wasm);
    }
    let manifest = Manifest {
        created: rfc3339(now),
        expires,
        format: FORMAT,
        name: source.name,
        revision: source.revision,
        roles,
        wit: WIT_PACKAGE.into(),
    };
    manifest.check()?;
    Ok(Bundle::new(manifest, components))
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .expect("zero nanoseconds is valid")
        .format(&Rfc3339)
        .expect("a UTC time always formats as RFC 3339")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: RoleLimits = RoleLimits {
        fuel: 10_000_000,
        memory_bytes: 16 << 20,
        timeout_ms: 50,
    };

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2026-11-24T10:00:00.5Z", &Rfc3339).unwrap()
    }

    #[test]
    fn builds_from_a_folder_with_defaults_filled_in() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        std::fs::write(dir.path().join("out/a.wasm"), b"component").unwrap();
        std::fs::write(
            dir.path().join(SOURCE_FILE),
            "name = \"acme\"\nrevision = 2\n[roles.approval]\ncomponent = \"out/a.wasm\"\ntimeout_ms = 20\n[roles.approval.config]\nmodels = \"m\"\n",
        )
        .unwrap();
        let bundle = build(dir.path(), DEFAULTS, now()).unwrap();
        let m = &bundle.manifest;
        assert_eq!((m.name.as_str(), m.revision), ("acme", 2));
        assert_eq!(m.created, "2026-11-24T10:00:00Z");
        assert_eq!(m.expires, "2027-11-24T10:00:00Z");
        let entry = &m.roles[0];
        assert_eq!(entry.file, "approval.wasm");
        assert_eq!(
            entry.limits,
            RoleLimits {
                timeout_ms: 20,
                ..DEFAULTS
            }
        );
        assert_eq!(entry.config["models"], "m");
        bundle.check_digests().unwrap();
    }

    #[test]
    fn bad_sources_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join(SOURCE_FILE);
        let err = build(dir.path(), DEFAULTS, now()).unwrap_err();
        assert!(matches!(err, BundleError::Read { .. }), "{err}");
        std::fs::write(
            &source,
            "name = \"acme\"\nrevision = 1\n[roles.routing]\ncomponent = \"x\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("x"), b"c").unwrap();
        assert!(
            build(&source, DEFAULTS, now())
                .unwrap_err()
                .to_string()
                .contains("unknown role 'routing'")
        );
        std::fs::write(
            &source,
            "name = \"acme\"\nrevision = 1\ncolour = 3\n[roles.limits]\ncomponent = \"x\"\n",
        )
        .unwrap();
        assert!(
            build(&source, DEFAULTS, now())
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
    }
}
