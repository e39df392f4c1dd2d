//! Checking a bundle, in the order that is the contract: structure →
//! signatures → expiry → revision → WIT version → digests → compile → WIT
//! role → validate-config. The first failure stops the run.
//!
//! Only [`verify`] makes a [`Verified`] bundle, and activating takes nothing
//! else, so an unchecked bundle can never become active. The checks that
//! need the host (compiling and linking the components, and asking each to
//! validate its configuration) are the [`Loader`]'s, which the caller
//! supplies; the rest are here.

use serde::Serialize;
use time::OffsetDateTime;

use super::archive::Bundle;
use super::error::BundleError;
use super::manifest::{RoleEntry, WIT_PACKAGE};
use super::signatures::{SignatureCheck, SignatureStatus, TrustPolicy};

/// Why a bundle was refused: the check and what it found.
#[derive(Clone, Debug, Serialize)]
pub struct Refusal {
    pub check: &'static str,
    pub reason: String,
}

impl From<BundleError> for Refusal {
    fn from(e: BundleError) -> Refusal {
        Refusal {
            check: e.check(),
            reason: e.to_string(),
        }
    }
}

/// One check as `inspect` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub check: &'static str,
    pub passed: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The revision rule: whether this node would take the bundle now
/// (`install`), or only whether it is intact and signed (`verify`, a
/// stored revision being activated again).
pub enum Revision<'a> {
    /// Newer than the highest revision of the bundle's name this node has
    /// accepted, looked up by name.
    Newer(&'a dyn Fn(&str) -> Result<Option<u64>, String>),
    Skip,
}

/// What this node checks a bundle against.
pub struct Rules<'a> {
    pub trust: TrustPolicy<'a>,
    pub now: OffsetDateTime,
    pub revision: Revision<'a>,
}

/// The host's part of the checks: turning each component into what the
/// node runs, and asking it whether its configuration is valid.
pub trait Loader {
    type Plugin;
    /// Compiles and links `entry`'s component for its role; a failure names
    /// its check (`compile` or `wit`).
    fn load(&mut self, bundle: &Bundle, entry: &RoleEntry) -> Result<Self::Plugin, Refusal>;
    /// The plugin's `validate-config` under the node's settings.
    fn validate(&mut self, plugin: &Self::Plugin) -> Result<(), String>;
}

/// A bundle that passed every check, with its components loaded. Only
/// [`verify`] makes one.
pub struct Verified<P> {
    bundle: Bundle,
    plugins: Vec<P>,
    signers: Vec<String>,
}

impl<P> Verified<P> {
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The loaded components, in the manifest's role order.
    pub fn plugins(&self) -> &[P] {
        &self.plugins
    }

    /// Key ids whose signatures verified.
    pub fn signers(&self) -> &[String] {
        &self.signers
    }
}

/// Every check that ran, the signatures as checked, and the verdict.
pub struct Checked<P> {
    pub steps: Vec<Step>,
    pub signatures: Vec<SignatureCheck>,
    pub verdict: Result<Verified<P>, Refusal>,
}

impl<P> Checked<P> {
    fn pass(&mut self, check: &'static str, detail: impl Into<String>) {
        self.steps.push(Step {
            check,
            passed: true,
            detail: detail.into(),
        });
    }
}

/// Runs every check on a bundle as read (`read` is the structure check),
/// stopping at the first failure.
pub fn verify<L: Loader>(
    read: Result<Bundle, BundleError>,
    rules: &Rules<'_>,
    loader: &mut L,
) -> Checked<L::Plugin> {
    let mut checked = Checked {
        steps: Vec::new(),
        signatures: Vec::new(),
        verdict: Err(Refusal {
            check: "structure",
            reason: String::new(),
        }),
    };
    let refusal = match read {
        Err(e) => Refusal::from(e),
        Ok(bundle) => match run(&mut checked, &bundle, rules, loader) {
            Ok(plugins) => {
                let signers = checked
                    .signatures
                    .iter()
                    .filter(|s| s.status == SignatureStatus::Valid)
                    .map(|s| s.key_id.clone())
                    .collect();
                checked.verdict = Ok(Verified {
                    bundle,
                    plugins,
                    signers,
                });
                return checked;
            }
            Err(refusal) => refusal,
        },
    };
    checked.steps.push(Step {
        check: refusal.check,
        passed: false,
        detail: refusal.reason.clone(),
    });
    checked.verdict = Err(refusal);
    checked
}

/// Every check after structure, in order.
fn run<L: Loader>(
    checked: &mut Checked<L::Plugin>,
    bundle: &Bundle,
    rules: &Rules<'_>,
    loader: &mut L,
) -> Result<Vec<L::Plugin>, Refusal> {
    checked.pass("structure", "");
    let m = &bundle.manifest;
    checked.signatures = rules
        .trust
        .check(&bundle.manifest_bytes, &bundle.signatures);
    rules.trust.accept(&checked.signatures)?;
    let valid = checked
        .signatures
        .iter()
        .filter(|s| s.status == SignatureStatus::Valid)
        .count();
    checked.pass(
        "signatures",
        if rules.trust.trusted.is_empty() {
            "no trusted keys: signatures are not required on this node".to_string()
        } else {
            format!("{valid} valid signature(s) from trusted keys")
        },
    );
    if m.expired_at(rules.now) {
        return Err(BundleError::Expired {
            expires: m.expires.clone(),
        }
        .into());
    }
    checked.pass("expiry", format!("valid until {}", m.expires));
    if let Revision::Newer(highest) = &rules.revision {
        let highest = highest(&m.name).map_err(|reason| Refusal {
            check: "revision",
            reason,
        })?;
        if let Some(highest) = highest.filter(|&h| m.revision <= h) {
            return Err(BundleError::NotNewer {
                name: m.name.clone(),
                revision: m.revision,
                highest,
            }
            .into());
        }
        checked.pass("revision", "");
    }
    if m.wit != WIT_PACKAGE {
        return Err(BundleError::WitVersion {
            found: m.wit.clone(),
            expected: WIT_PACKAGE.into(),
        }
        .into());
    }
    checked.pass("wit-version", WIT_PACKAGE);
    bundle.check_digests()?;
    checked.pass("digests", "");
    let plugins = m
        .roles
        .iter()
        .map(|entry| loader.load(bundle, entry))
        .collect::<Result<Vec<_>, _>>()?;
    checked.pass("compile", "");
    checked.pass("wit", "every component implements its role's world");
    for plugin in &plugins {
        loader.validate(plugin).map_err(|reason| Refusal {
            check: "config",
            reason,
        })?;
    }
    checked.pass("config", "");
    Ok(plugins)
}

#[cfg(test)]
mod tests {
    use super::super::archive::tests::bundle;
    use super::*;

    /// Loads every component as its file name, and refuses the config of
    /// the ones named in `bad_config`.
    struct Names {
        bad_config: bool,
        loaded: usize,
    }

    impl Loader for Names {
        type Plugin = String;
        fn load(&mut self, _bundle: &Bundle, entry: &RoleEntry) -> Result<String, Refusal> {
            self.loaded += 1;
            Ok(entry.file.clone())
        }
        fn validate(&mut self, _plugin: &String) -> Result<(), String> {
            if self.bad_config {
                Err("models: no".into())
            } else {
                Ok(())
            }
        }
    }

    fn rules<'a>(revision: Revision<'a>, now: &str) -> Rules<'a> {
        Rules {
            trust: TrustPolicy {
                trusted: &[],
                min_signatures: 1,
            },
            now: OffsetDateTime::parse(now, &time::format_description::well_known::Rfc3339)
                .unwrap(),
            revision,
        }
    }

    fn names(steps: &[Step]) -> Vec<(&'static str, bool)> {
        steps.iter().map(|s| (s.check, s.passed)).collect()
    }

    #[test]
    fn a_bundle_that_passes_every_check_comes_out_verified_with_its_plugins() {
        let mut loader = Names {
            bad_config: false,
            loaded: 0,
        };
        let highest = |_: &str| Ok(Some(2));
        let checked = verify(
            Ok(bundle()),
            &rules(Revision::Newer(&highest), "2026-12-01T00:00:00Z"),
            &mut loader,
        );
        let order: Vec<&str> = checked.steps.iter().map(|s| s.check).collect();
        assert_eq!(
            order,
            [
                "structure",
                "signatures",
                "expiry",
                "revision",
                "wit-version",
                "digests",
                "compile",
                "wit",
                "config"
            ]
        );
        let verified = checked.verdict.expect("every check passed");
        assert_eq!(verified.plugins(), ["approval.wasm"]);
        assert_eq!(verified.bundle().manifest.revision, 3);
    }

    #[test]
    fn the_first_failure_stops_the_checks_and_nothing_is_verified() {
        let mut loader = Names {
            bad_config: false,
            loaded: 0,
        };
        let highest = |_: &str| Ok(Some(3));
        let checked = verify(
            Ok(bundle()),
            &rules(Revision::Newer(&highest), "2026-12-01T00:00:00Z"),
            &mut loader,
        );
        assert_eq!(
            names(&checked.steps).last(),
            Some(&("revision", false)),
            "revision 3 is not newer than 3"
        );
        assert_eq!(loader.loaded, 0, "nothing is compiled after a refusal");
        assert!(checked.verdict.is_err());

        let expired = verify(
            Ok(bundle()),
            &rules(Revision::Skip, "2028-01-01T00:00:00Z"),
            &mut loader,
        );
        assert_eq!(expired.verdict.err().map(|r| r.check), Some("expiry"));

        let mut refusing = Names {
            bad_config: true,
            loaded: 0,
        };
        let checked = verify(
            Ok(bundle()),
            &rules(Revision::Skip, "2026-12-01T00:00:00Z"),
            &mut refusing,
        );
        let refusal = checked.verdict.err().expect("the config was refused");
        assert_eq!(
            (refusal.check, refusal.reason.as_str()),
            ("config", "models: no")
        );

        let mut tampered = bundle();
        tampered.manifest.roles[0].sha256 = "00".repeat(32);
        let checked = verify(
            Ok(tampered),
            &rules(Revision::Skip, "2026-12-01T00:00:00Z"),
            &mut loader,
        );
        assert_eq!(checked.verdict.err().map(|r| r.check), Some("digests"));
    }
}
