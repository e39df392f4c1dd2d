//! `policy install|update|activate|rollback|verify|inspect`: taking a signed
//! bundle from a file, URL or OCI registry through every check, in order,
//! and making its plugins active all at once.
//!
//! The order is the contract: structure → signatures → expiry → revision →
//! WIT version → digests → compile → WIT role → validate-config →
//! activation. The first failure stops the run, is audited as
//! `policy.refused` with the bundle's name, revision and digests, and
//! leaves the active policy exactly as it was.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bundle::{
    Bundle, BundleError, Loader, Manifest, Revision, RoleEntry, RoleLimits, Rules, SignatureCheck,
    SignatureEntry, Verified,
};
pub use crate::bundle::{Refusal, Step};
use crate::policy::{
    CompileCache, LoadError, PluginOrigin, PluginPre, PolicyEngine, Role, SandboxLimits,
};
use crate::store::{ActivePolicy, BundleChange, BundleRevision, BundleSource};

use super::bundle_fetch::{BundleLocation, Fetched, Progress, fetch, read_bundle_file};
use super::policy::{store_component, stored_name};
use super::{Context, OpsError, now_rfc3339, policy_trust};

/// A role's component as `inspect` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RoleReport {
    pub role: String,
    pub file: String,
    pub sha256: String,
    pub bytes: usize,
    pub limits: RoleLimits,
    pub config: BTreeMap<String, String>,
}

/// Everything known about a bundle after running the checks.
#[derive(Serialize)]
pub struct Evaluation {
    pub source: String,
    /// sha256 of the bundle file (or, for a stored revision, as installed).
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestReport>,
    pub roles: Vec<RoleReport>,
    pub signatures: Vec<SignatureCheck>,
    pub trusted_keys: usize,
    pub min_signatures: u32,
    pub checks: Vec<Step>,
    pub accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// The bundle and its loaded components, once every check passed.
    #[serde(skip)]
    verified: Option<Verified<PluginPre>>,
}

/// The manifest's top-level fields.
#[derive(Clone, Debug, Serialize)]
pub struct ManifestReport {
    pub name: String,
    pub revision: u64,
    pub created: String,
    pub expires: String,
    pub wit: String,
}

/// What an install, activation or rollback made active.
#[derive(Debug, Serialize)]
pub struct Switched {
    pub name: String,
    pub revision: u64,
    pub source: String,
    pub sha256: String,
    pub roles: Vec<SwitchedRole>,
    /// Roles the previous revision of this bundle filled and this one does
    /// not: they went back to their defaults.
    pub released: Vec<String>,
    /// Key ids whose signatures verified.
    pub signers: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SwitchedRole {
    pub role: String,
    pub sha256: String,
}

/// What `policy update` did for one URL or OCI tag (`url` is either).
#[derive(Debug, Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Updated {
    /// The server answered 304, or the tag still names the same manifest.
    Unchanged {
        url: String,
    },
    Installed(Switched),
    Refused {
        url: String,
        error: String,
    },
}

/// Whether the revision rule applies: `inspect` and `install` ask "would
/// this node take it now", `verify` only "is it intact and signed".
#[derive(Clone, Copy, PartialEq, Eq)]
enum RevisionRule {
    Apply,
    Skip,
}

/// Checks the bundle at `path` as `install` would, without the revision
/// rule and without activating anything.
pub fn verify(ctx: &Context, path: &Path) -> Result<Evaluation, OpsError> {
    let bytes = read_bundle_file(path)?;
    verify_bytes(ctx, &bytes, &path.display().to_string())
}

/// [`verify`] on bytes already read (`push` checks what it sends).
pub(super) fn verify_bytes(
    ctx: &Context,
    bytes: &[u8],
    source: &str,
) -> Result<Evaluation, OpsError> {
    let engine = ctx.engine()?;
    Ok(evaluate(ctx, &engine, bytes, source, RevisionRule::Skip))
}

/// What is in the bundle at `path`, who signed it and whether this node
/// would install it now.
pub fn inspect(ctx: &Context, path: &Path) -> Result<Evaluation, OpsError> {
    let bytes = read_bundle_file(path)?;
    let engine = ctx.engine()?;
    Ok(evaluate(
        ctx,
        &engine,
        &bytes,
        &path.display().to_string(),
        RevisionRule::Apply,
    ))
}

/// Installs a bundle from a file, an http(s) URL or an OCI reference and
/// activates it; a URL or OCI tag is remembered for `update`.
pub fn install(
    ctx: &mut Context,
    location: &BundleLocation,
    progress: Progress<'_>,
) -> Result<Switched, OpsError> {
    let Fetched::Body {
        bytes,
        validator,
        source,
    } = fetch(location, None, progress)?
    else {
        unreachable!("a fetch with nothing to compare with always gets the body");
    };
    let switched = install_bytes(ctx, &bytes, &source)?;
    if location.followed() {
        ctx.store.save_bundle_source(&BundleSource {
            url: location.to_string(),
            etag: validator,
            checked_at: now_rfc3339(),
        })?;
    }
    Ok(switched)
}

/// Asks every remembered URL (sending the ETag it last served) and OCI tag
/// (comparing the manifest digest it last named) for its bundle, and
/// installs what changed.
pub fn update(ctx: &mut Context, progress: Progress<'_>) -> Result<Vec<Updated>, OpsError> {
    let mut results = Vec::new();
    for source in ctx.store.bundle_sources()? {
        let url = source.url.clone();
        let fetched = url
            .parse::<BundleLocation>()
            .map_err(OpsError::from)
            .and_then(|location| fetch(&location, source.etag.as_deref(), &mut *progress));
        let result = match fetched {
            Err(e) => Updated::Refused {
                url,
                error: e.to_string(),
            },
            Ok(Fetched::NotModified) => {
                ctx.store.save_bundle_source(&BundleSource {
                    checked_at: now_rfc3339(),
                    ..source
                })?;
                Updated::Unchanged { url }
            }
            Ok(Fetched::Body {
                bytes,
                validator,
                source,
            }) => match install_bytes(ctx, &bytes, &source) {
                Ok(switched) => {
                    ctx.store.save_bundle_source(&BundleSource {
                        url,
                        etag: validator,
                        checked_at: now_rfc3339(),
                    })?;
                    Updated::Installed(switched)
                }
                Err(e) => Updated::Refused {
                    url,
                    error: e.to_string(),
                },
            },
        };
        results.push(result);
    }
    if results.is_empty() {
        return Err(OpsError::InvalidInput {
            what: "no bundle was installed from a URL or an OCI tag; `policy install URL` or `policy install oci://HOST/REPOSITORY:TAG` first".into(),
        });
    }
    Ok(results)
}

/// Makes installed revision `revision` of `name` active again, after
/// checking it as an install would (trust may have changed since).
/// Going below the active revision needs `allow_downgrade`.
pub fn activate(
    ctx: &mut Context,
    name: &str,
    revision: u64,
    allow_downgrade: bool,
) -> Result<Switched, OpsError> {
    let active = active_revision(ctx, name)?;
    let downgrade = active.is_some_and(|a| revision < a);
    let change = if downgrade {
        BundleChange::RolledBack
    } else {
        BundleChange::Activated
    };
    switch_to_stored(ctx, name, revision, change, allow_downgrade)
}

/// Goes back to the newest installed revision below the active one of
/// `name` (or of the only active bundle). Always a downgrade, so it needs
/// `allow_downgrade`.
pub fn rollback(
    ctx: &mut Context,
    name: Option<&str>,
    allow_downgrade: bool,
) -> Result<Switched, OpsError> {
    let name = match name {
        Some(name) => name.to_string(),
        None => only_active_bundle(ctx)?,
    };
    let active = active_revision(ctx, &name)?.ok_or_else(|| OpsError::InvalidInput {
        what: format!("bundle '{name}' is not active; `policy list` shows what is"),
    })?;
    let previous = ctx
        .store
        .bundle_revisions()?
        .into_iter()
        .filter(|r| r.name == name && (r.revision as u64) < active)
        .map(|r| r.revision as u64)
        .max()
        .ok_or_else(|| OpsError::InvalidInput {
            what: format!(
                "no revision of '{name}' older than {active} is installed; nothing to roll back to"
            ),
        })?;
    switch_to_stored(
        ctx,
        &name,
        previous,
        BundleChange::RolledBack,
        allow_downgrade,
    )
}

fn switch_to_stored(
    ctx: &mut Context,
    name: &str,
    revision: u64,
    change: BundleChange,
    allow_downgrade: bool,
) -> Result<Switched, OpsError> {
    let label = format!("{name}@{revision}");
    let row = ctx
        .store
        .bundle_revision(name, revision as i64)?
        .ok_or_else(|| not_installed(ctx, name, revision))?;
    if change == BundleChange::RolledBack && !allow_downgrade {
        let refusal = Refusal {
            check: "revision",
            reason: format!(
                "going back to {label} is a downgrade from the active revision; pass --allow-downgrade to do it on purpose"
            ),
        };
        let manifest = ManifestReport {
            name: name.to_string(),
            revision,
            created: String::new(),
            expires: String::new(),
            wit: String::new(),
        };
        audit_refusal(ctx, &row.source, &row.sha256, Some(&manifest), &refusal)?;
        return Err(refused(&label, refusal));
    }
    let engine = ctx.engine()?;
    let mut evaluation = evaluate_stored(ctx, &engine, &row);
    match evaluation.verdict() {
        Ok(verified) => activate_verified(ctx, &evaluation, &verified, change, None),
        Err(refusal) => {
            audit_refusal(
                ctx,
                &row.source,
                &row.sha256,
                evaluation.manifest.as_ref(),
                &refusal,
            )?;
            Err(refused(&label, refusal))
        }
    }
}

fn install_bytes(ctx: &mut Context, bytes: &[u8], source: &str) -> Result<Switched, OpsError> {
    let engine = ctx.engine()?;
    let mut evaluation = evaluate(ctx, &engine, bytes, source, RevisionRule::Apply);
    let verified = match evaluation.verdict() {
        Ok(verified) => verified,
        Err(refusal) => {
            let label = evaluation.manifest.as_ref().map_or_else(
                || source.to_string(),
                |m| format!("{}@{}", m.name, m.revision),
            );
            audit_refusal(
                ctx,
                source,
                &evaluation.sha256,
                evaluation.manifest.as_ref(),
                &refusal,
            )?;
            return Err(refused(&label, refusal));
        }
    };
    let bundle = verified.bundle();
    let new = BundleRevision {
        name: bundle.manifest.name.clone(),
        revision: bundle.manifest.revision as i64,
        sha256: evaluation.sha256.clone(),
        manifest: String::from_utf8_lossy(&bundle.manifest_bytes).into_owned(),
        signatures: serde_json::to_string(&bundle.signatures).expect("signatures always serialize"),
        source: source.to_string(),
        installed_at: now_rfc3339(),
    };
    activate_verified(
        ctx,
        &evaluation,
        &verified,
        BundleChange::Installed,
        Some(new),
    )
}

/// Stores the components and switches every role of the bundle in one
/// transaction; roles the same bundle held before but this revision does
/// not fill go back to their defaults.
fn activate_verified(
    ctx: &mut Context,
    evaluation: &Evaluation,
    verified: &Verified<PluginPre>,
    change: BundleChange,
    new: Option<BundleRevision>,
) -> Result<Switched, OpsError> {
    let signers = verified.signers().to_vec();
    let bundle = verified.bundle();
    let manifest = &bundle.manifest;
    for entry in &manifest.roles {
        store_component(ctx, &entry.sha256, bundle.component(entry))?;
    }
    let now = now_rfc3339();
    let roles: Vec<ActivePolicy> = manifest
        .roles
        .iter()
        .map(|entry| ActivePolicy {
            role: entry.role.clone(),
            origin: PluginOrigin::Bundle.as_str().into(),
            name: format!("{}-{}", manifest.name, entry.role),
            sha256: entry.sha256.clone(),
            activated_at: now.clone(),
            bundle: Some(manifest.name.clone()),
            revision: Some(manifest.revision as i64),
        })
        .collect();
    let released: Vec<String> = ctx
        .store
        .active_policies()?
        .into_iter()
        .filter(|p| p.bundle.as_deref() == Some(manifest.name.as_str()))
        .filter(|p| manifest.role(&p.role).is_none())
        .map(|p| p.role)
        .collect();
    let details = serde_json::json!({
        "name": manifest.name,
        "revision": manifest.revision,
        "sha256": evaluation.sha256,
        "source": evaluation.source,
        "components": manifest.roles.iter().map(|e| (e.role.clone(), e.sha256.clone())).collect::<BTreeMap<_, _>>(),
        "signers": signers,
        "released": released,
    });
    ctx.store
        .switch_bundle(change, new.as_ref(), &roles, &released, &details)?;
    Ok(Switched {
        name: manifest.name.clone(),
        revision: manifest.revision,
        source: evaluation.source.clone(),
        sha256: evaluation.sha256.clone(),
        roles: manifest
            .roles
            .iter()
            .map(|e| SwitchedRole {
                role: e.role.clone(),
                sha256: e.sha256.clone(),
            })
            .collect(),
        released,
        signers,
    })
}

/// Runs the checks on a bundle file's bytes.
fn evaluate(
    ctx: &Context,
    engine: &Arc<PolicyEngine>,
    bytes: &[u8],
    source: &str,
    rule: RevisionRule,
) -> Evaluation {
    let sha256 = hex::encode(Sha256::digest(bytes));
    evaluate_read(ctx, engine, Bundle::read(bytes), source, sha256, rule)
}

/// Runs the checks on a stored revision: its manifest and signatures from
/// the database, its components from `policies/`.
fn evaluate_stored(ctx: &Context, engine: &Arc<PolicyEngine>, row: &BundleRevision) -> Evaluation {
    evaluate_read(
        ctx,
        engine,
        reassemble(ctx, row),
        &row.source,
        row.sha256.clone(),
        RevisionRule::Skip,
    )
}

/// Runs every check ([`crate::bundle::verify`]) on a bundle as read, with
/// this node's trust, revisions, engine and settings.
fn evaluate_read(
    ctx: &Context,
    engine: &Arc<PolicyEngine>,
    read: Result<Bundle, BundleError>,
    source: &str,
    sha256: String,
    rule: RevisionRule,
) -> Evaluation {
    let mut ev = Evaluation::new(ctx, source, sha256);
    if let Ok(bundle) = &read {
        ev.describe(bundle);
    }
    let trusted = match policy_trust::trusted_keys(ctx) {
        Ok(trusted) => trusted,
        Err(e) => {
            ev.refuse(Refusal {
                check: "signatures",
                reason: e.to_string(),
            });
            return ev;
        }
    };
    let highest = |name: &str| {
        ctx.store
            .highest_bundle_revision(name)
            .map(|h| h.map(|h| h as u64))
            .map_err(|e| e.to_string())
    };
    let rules = Rules {
        trust: policy_trust::policy(ctx, &trusted),
        now: time::OffsetDateTime::now_utc(),
        revision: match rule {
            RevisionRule::Apply => Revision::Newer(&highest),
            RevisionRule::Skip => Revision::Skip,
        },
    };
    let mut loader = NodeLoader {
        engine,
        cache: ctx.compile_cache(),
        settings: ctx.settings.flatten(),
    };
    let checked = crate::bundle::verify(read, &rules, &mut loader);
    ev.checks = checked.steps;
    ev.signatures = checked.signatures;
    match checked.verdict {
        Ok(verified) => {
            ev.accepted = true;
            ev.verified = Some(verified);
        }
        Err(refusal) => ev.refused = Some(refusal),
    }
    ev
}

/// The node's half of the checks: compiling and linking each component
/// for its role, and its `validate-config` under the node's settings.
struct NodeLoader<'a> {
    engine: &'a PolicyEngine,
    cache: Option<CompileCache>,
    settings: Vec<(String, String)>,
}

impl Loader for NodeLoader<'_> {
    type Plugin = PluginPre;

    fn load(&mut self, bundle: &Bundle, entry: &RoleEntry) -> Result<PluginPre, Refusal> {
        load_plugin(self.engine, self.cache.as_ref(), bundle, entry).map_err(|e| Refusal {
            check: match e {
                LoadError::Compile { .. } | LoadError::StartingMemory { .. } => "compile",
                LoadError::WrongRole { .. }
                | LoadError::Link { .. }
                | LoadError::WitVersion { .. } => "wit",
            },
            reason: e.to_string(),
        })
    }

    fn validate(&mut self, plugin: &PluginPre) -> Result<(), String> {
        plugin
            .validate(self.engine, self.settings.clone())
            .map_err(|f| f.message)
    }
}

/// A stored revision as a bundle again. A component missing from
/// `policies/` is reported as missing from the bundle, and a changed one
/// fails the digest check like a tampered file would.
pub(super) fn reassemble(ctx: &Context, row: &BundleRevision) -> Result<Bundle, BundleError> {
    let manifest = Manifest::parse(row.manifest.as_bytes())?;
    let signatures: Vec<SignatureEntry> =
        serde_json::from_str(&row.signatures).map_err(|e| BundleError::Corrupt {
            detail: format!(
                "the stored signatures of {} do not parse ({e})",
                manifest.label()
            ),
        })?;
    let dir = ctx
        .home
        .subdir("policies")
        .map_err(|e| BundleError::Corrupt {
            detail: e.to_string(),
        })?;
    let mut files = BTreeMap::new();
    for entry in &manifest.roles {
        if let Ok(wasm) = dir.read(stored_name(&entry.sha256)) {
            files.insert(entry.file.clone(), wasm);
        }
    }
    Bundle::from_parts(row.manifest.clone().into_bytes(), signatures, files)
}

impl Evaluation {
    fn new(ctx: &Context, source: &str, sha256: String) -> Evaluation {
        Evaluation {
            source: source.to_string(),
            sha256,
            manifest: None,
            roles: Vec::new(),
            signatures: Vec::new(),
            trusted_keys: ctx.store.trusted_keys().map_or(0, |k| k.len()),
            min_signatures: ctx.settings.policy.min_signatures,
            checks: Vec::new(),
            accepted: false,
            refused: None,
            verified: None,
        }
    }

    /// What the bundle says it is, shown whether or not it passes.
    fn describe(&mut self, bundle: &Bundle) {
        let m = &bundle.manifest;
        self.manifest = Some(ManifestReport {
            name: m.name.clone(),
            revision: m.revision,
            created: m.created.clone(),
            expires: m.expires.clone(),
            wit: m.wit.clone(),
        });
        self.roles = m
            .roles
            .iter()
            .map(|e| RoleReport {
                role: e.role.clone(),
                file: e.file.clone(),
                sha256: e.sha256.clone(),
                bytes: bundle.component(e).len(),
                limits: e.limits,
                config: e.config.clone(),
            })
            .collect();
    }

    /// A refusal before the checks could run (the trust store unreadable).
    fn refuse(&mut self, refusal: Refusal) {
        self.checks.push(Step {
            check: refusal.check,
            passed: false,
            detail: refusal.reason.clone(),
        });
        self.refused = Some(refusal);
    }

    /// The verified bundle to activate, or why there is none.
    fn verdict(&mut self) -> Result<Verified<PluginPre>, Refusal> {
        self.verified.take().ok_or_else(|| {
            self.refused.clone().unwrap_or_else(|| Refusal {
                check: "structure",
                reason: "the bundle was not checked".into(),
            })
        })
    }
}

/// Compiles and links one of a bundle's components for its role, under the
/// bundle's limits and with its configuration: how every caller (install,
/// each load, `policy test`) turns a bundle entry into a plugin.
pub(super) fn load_plugin(
    engine: &PolicyEngine,
    cache: Option<&CompileCache>,
    bundle: &Bundle,
    entry: &RoleEntry,
) -> Result<PluginPre, LoadError> {
    let m = &bundle.manifest;
    let role: Role = entry.role.parse().expect("the manifest checked its roles");
    let plugin = PluginPre::load(
        engine,
        cache,
        role,
        &format!("{}-{}", m.name, entry.role),
        PluginOrigin::Bundle,
        bundle.component(entry),
    )?;
    Ok(plugin.from_bundle(
        m.label(),
        requested_limits(&entry.limits),
        entry.config.clone(),
    ))
}

/// A manifest's limits as the sandbox's type; the answer cap is the
/// node's alone.
pub(super) fn requested_limits(limits: &RoleLimits) -> SandboxLimits {
    SandboxLimits {
        fuel: limits.fuel,
        timeout: Duration::from_millis(limits.timeout_ms),
        memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
        max_answer_bytes: usize::MAX,
    }
}

fn refused(label: &str, refusal: Refusal) -> OpsError {
    OpsError::BundleRefused {
        bundle: label.to_string(),
        check: refusal.check,
        reason: refusal.reason,
    }
}

fn audit_refusal(
    ctx: &mut Context,
    source: &str,
    sha256: &str,
    manifest: Option<&ManifestReport>,
    refusal: &Refusal,
) -> Result<(), OpsError> {
    let details = serde_json::json!({
        "source": source,
        "sha256": sha256,
        "name": manifest.map(|m| m.name.clone()),
        "revision": manifest.map(|m| m.revision),
        "check": refusal.check,
        "reason": refusal.reason,
    });
    let subject = manifest.map_or_else(
        || source.to_string(),
        |m| format!("{}@{}", m.name, m.revision),
    );
    ctx.store
        .append_audit("policy.refused", &subject, &details)?;
    Ok(())
}

fn active_revision(ctx: &Context, name: &str) -> Result<Option<u64>, OpsError> {
    Ok(ctx
        .store
        .active_policies()?
        .into_iter()
        .filter(|p| p.bundle.as_deref() == Some(name))
        .filter_map(|p| p.revision.map(|r| r as u64))
        .max())
}

fn only_active_bundle(ctx: &Context) -> Result<String, OpsError> {
    let mut names: Vec<String> = ctx
        .store
        .active_policies()?
        .into_iter()
        .filter_map(|p| p.bundle)
        .collect();
    names.sort();
    names.dedup();
    match names.len() {
        1 => Ok(names.remove(0)),
        0 => Err(OpsError::InvalidInput {
            what: "no bundle is active; nothing to roll back".into(),
        }),
        _ => Err(OpsError::InvalidInput {
            what: format!(
                "several bundles are active ({}); name the one to roll back",
                names.join(", ")
            ),
        }),
    }
}

fn not_installed(ctx: &Context, name: &str, revision: u64) -> OpsError {
    let installed: Vec<String> = ctx
        .store
        .bundle_revisions()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.name == name)
        .map(|r| r.revision.to_string())
        .collect();
    let have = if installed.is_empty() {
        "none is".to_string()
    } else {
        format!("installed: {}", installed.join(", "))
    };
    OpsError::InvalidInput {
        what: format!(
            "revision {revision} of '{name}' is not installed ({have}); install it with `policy install FILE|URL`"
        ),
    }
}
