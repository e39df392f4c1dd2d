//! The facts about this node that the compliance role judges. The host
//! gathers them; it never decides on them itself. Admission gets the cheap
//! ones on every job; `compliance-check` adds whole-file scans and the
//! Docker daemon's mode.

use crate::gateway::{CREDENTIAL_PREFIX, credentials_in};
use crate::policy::{Fact, FactStatus};
use crate::runner::{EngineVersion, Hardening};
use crate::store::{ConsentState, POLICY_ROLES};

use super::{Context, OpsError, terms};

/// How many job starts `job-hardening` looks back over.
const HARDENING_LOOKBACK: usize = 5;

/// Gathers the facts every admission is judged on. These stay cheap: they
/// run on each `execute`.
pub(crate) fn gather(ctx: &Context) -> Result<Vec<Fact>, OpsError> {
    let consent = ctx.store.consent_state()?;
    Ok(vec![
        consent_fact(&consent),
        terms_fact(&consent),
        config_credentials_fact(ctx),
        audit_credentials_fact(ctx)?,
        audit_fact(ctx)?,
        key_age_fact(ctx),
        policy_signatures_fact(ctx)?,
        hardening_fact(ctx)?,
        subscription_fact(ctx),
    ])
}

/// The admission facts plus the ones too slow for every job, for
/// `compliance-check`: whole-file scans of the database and the job logs,
/// and how the Docker daemon runs (`docker` is its version, or why it could
/// not be asked).
pub(crate) fn gather_full(
    ctx: &Context,
    docker: Result<&EngineVersion, String>,
) -> Result<Vec<Fact>, OpsError> {
    let mut facts = gather(ctx)?;
    facts.push(database_credentials_fact(ctx));
    facts.push(job_log_credentials_fact(ctx));
    facts.push(docker_fact(docker));
    Ok(facts)
}

fn fact(name: &str, value: impl Into<String>, status: FactStatus) -> Fact {
    Fact {
        name: name.into(),
        value: value.into(),
        status,
    }
}

fn consent_fact(consent: &ConsentState) -> Fact {
    match (
        &consent.opted_in_at,
        consent.opted_in && consent.claude_jobs,
    ) {
        (Some(at), true) => fact(
            "consent-recorded",
            format!("opted in to Claude jobs at {at}"),
            FactStatus::Ok,
        ),
        _ => fact(
            "consent-recorded",
            "not opted in to Claude jobs",
            FactStatus::Failed,
        ),
    }
}

fn terms_fact(consent: &ConsentState) -> Fact {
    let current = terms::version();
    match consent.terms_version.as_deref() {
        Some(v) if v == current => fact(
            "terms-current",
            format!("accepted terms {v}"),
            FactStatus::Ok,
        ),
        Some(v) => fact(
            "terms-current",
            format!("accepted terms {v}, current are {current}"),
            FactStatus::Failed,
        ),
        None => fact(
            "terms-current",
            format!("terms {current} never accepted"),
            FactStatus::Failed,
        ),
    }
}

fn config_credentials_fact(ctx: &Context) -> Fact {
    const NAME: &str = "no-credentials-in-config";
    match std::fs::read(ctx.home.config_path()) {
        Ok(text) if credentials_in(&text) > 0 => fact(
            NAME,
            "config.toml contains a credential",
            FactStatus::Failed,
        ),
        Ok(_) => fact(NAME, "config.toml holds no credential", FactStatus::Ok),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fact(NAME, "no config.toml (defaults)", FactStatus::Ok)
        }
        Err(e) => fact(
            NAME,
            format!("config.toml unreadable: {e}"),
            FactStatus::Unknown,
        ),
    }
}

fn audit_credentials_fact(ctx: &Context) -> Result<Fact, OpsError> {
    const NAME: &str = "no-credentials-in-audit";
    let prefix = std::str::from_utf8(CREDENTIAL_PREFIX).unwrap_or_default();
    // Stricter than the file scans: an audit row has no business quoting
    // even the start of a key, so any row with the prefix counts.
    let leaked: Vec<String> = ctx
        .store
        .audit_rows_containing(prefix)?
        .iter()
        .map(i64::to_string)
        .collect();
    Ok(if leaked.is_empty() {
        fact(NAME, "the audit log holds no credential", FactStatus::Ok)
    } else {
        let value = format!("credential in audit rows {}", leaked.join(", "));
        fact(NAME, value, FactStatus::Failed)
    })
}

/// The raw bytes of the database and its write-ahead log: every table,
/// including rows not yet checkpointed into the main file.
fn database_credentials_fact(ctx: &Context) -> Fact {
    const NAME: &str = "no-credentials-in-database";
    let db = ctx.home.database_path();
    let wal = db.with_extension("db-wal");
    let mut found = 0;
    for path in [&db, &wal] {
        match std::fs::read(path) {
            Ok(bytes) => found += credentials_in(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let value = format!("{} unreadable: {e}", path.display());
                return fact(NAME, value, FactStatus::Unknown);
            }
        }
    }
    if found == 0 {
        fact(NAME, "state.db holds no credential", FactStatus::Ok)
    } else {
        let value = format!("{found} credential-shaped strings in state.db");
        fact(NAME, value, FactStatus::Failed)
    }
}

/// Every job's stored output, `logs/*.log`.
fn job_log_credentials_fact(ctx: &Context) -> Fact {
    const NAME: &str = "no-credentials-in-logs";
    let dir = ctx.home.root().join("logs");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fact(NAME, "no job logs yet", FactStatus::Ok);
        }
        Err(e) => return fact(NAME, format!("{}: {e}", dir.display()), FactStatus::Unknown),
    };
    let (mut files, mut leaked) = (0, Vec::new());
    for entry in entries.flatten() {
        files += 1;
        if std::fs::read(entry.path()).is_ok_and(|bytes| credentials_in(&bytes) > 0) {
            leaked.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    if leaked.is_empty() {
        fact(
            NAME,
            format!("{files} job logs hold no credential"),
            FactStatus::Ok,
        )
    } else {
        let value = format!("credential in job logs {}", leaked.join(", "));
        fact(NAME, value, FactStatus::Failed)
    }
}

fn audit_fact(ctx: &Context) -> Result<Fact, OpsError> {
    let chain = ctx.store.verify_audit()?;
    Ok(match chain.broken {
        None => {
            let restarted = match chain.restarts.last() {
                Some(r) => format!(
                    " (restarted at row {} after a break at row {})",
                    r.seq, r.repaired.seq
                ),
                None => String::new(),
            };
            fact(
                "audit-chain",
                format!("{} rows, chain intact{restarted}", chain.rows),
                FactStatus::Ok,
            )
        }
        Some(b) => fact(
            "audit-chain",
            format!(
                "broken at row {}: {}; `audit --recover` starts a new chain that records the break",
                b.seq, b.reason
            ),
            FactStatus::Failed,
        ),
    })
}

/// Whole days since the current node key was made; the compliance plugin
/// judges them against `security.keyRotationDays`. Read from the key
/// store's metadata, so no passphrase is needed.
fn key_age_fact(ctx: &Context) -> Fact {
    const NAME: &str = "key-age";
    let current = super::keys::store(ctx).and_then(|store| Ok(store.list()?));
    match current {
        Ok(keys) => match keys.iter().find(|k| k.retired.is_none()) {
            Some(k) => fact(
                NAME,
                k.age_days(time::OffsetDateTime::now_utc()).to_string(),
                FactStatus::Ok,
            ),
            None => fact(NAME, "this node has no key pair yet", FactStatus::Unknown),
        },
        Err(e) => fact(
            NAME,
            format!("the key store is unreadable: {e}"),
            FactStatus::Unknown,
        ),
    }
}

/// Whether the code deciding on jobs is what its publisher shipped. The
/// embedded defaults are part of this binary; a component activated with
/// `policy set` carries no signature (signed bundles come with their own
/// check).
fn policy_signatures_fact(ctx: &Context) -> Result<Fact, OpsError> {
    const NAME: &str = "policy-signatures";
    let unsigned: Vec<String> = ctx
        .store
        .active_policies()?
        .into_iter()
        .filter(|p| p.origin == "file")
        .map(|p| format!("{} ({})", p.role, p.name))
        .collect();
    let mut bundles: Vec<String> = ctx
        .store
        .active_policies()?
        .into_iter()
        .filter_map(|p| Some(format!("{} ({}@{})", p.role, p.bundle?, p.revision?)))
        .collect();
    bundles.sort();
    Ok(if unsigned.is_empty() && bundles.is_empty() {
        let value = format!(
            "all {} roles run the defaults built into this binary",
            POLICY_ROLES.len()
        );
        fact(NAME, value, FactStatus::Ok)
    } else if unsigned.is_empty() {
        let value = format!(
            "bundles checked against the trust store at every load: {}; other roles run the defaults",
            bundles.join(", ")
        );
        fact(NAME, value, FactStatus::Ok)
    } else {
        let value = format!("unsigned local components: {}", unsigned.join(", "));
        fact(NAME, value, FactStatus::Failed)
    })
}

/// The hardening recorded when the last few jobs started.
fn hardening_fact(ctx: &Context) -> Result<Fact, OpsError> {
    const NAME: &str = "job-hardening";
    let started = ctx
        .store
        .latest_audit_of_kind("job.started", HARDENING_LOOKBACK)?;
    if started.is_empty() {
        return Ok(fact(NAME, "no job has run yet", FactStatus::Unknown));
    }
    let mut problems = Vec::new();
    for entry in &started {
        match serde_json::from_value::<Hardening>(entry.details["hardening"].clone()) {
            Ok(h) => problems.extend(
                h.problems()
                    .into_iter()
                    .map(|p| format!("job {}: {p}", entry.subject)),
            ),
            Err(_) => problems.push(format!("job {}: no hardening recorded", entry.subject)),
        }
    }
    Ok(if problems.is_empty() {
        let value = format!("the last {} job containers kept every limit", started.len());
        fact(NAME, value, FactStatus::Ok)
    } else {
        fact(NAME, problems.join("; "), FactStatus::Failed)
    })
}

/// How the Docker daemon runs: rootless or with user namespaces remapped,
/// a container's root is not the host's.
fn docker_fact(docker: Result<&EngineVersion, String>) -> Fact {
    const NAME: &str = "docker-rootless";
    match docker {
        Ok(v) if v.rootless => fact(NAME, "rootless", FactStatus::Ok),
        Ok(v) if v.userns_remap => fact(NAME, "user namespaces remapped", FactStatus::Ok),
        Ok(v) => fact(
            NAME,
            format!(
                "Docker {} runs as root without user-namespace remapping",
                v.engine
            ),
            FactStatus::Failed,
        ),
        Err(e) => fact(
            NAME,
            format!("Docker not reachable: {e}"),
            FactStatus::Unknown,
        ),
    }
}

/// Jobs from others must never be paid with a Claude subscription: its
/// OAuth token is for the owner's own use. The gateway's key is the one
/// credential jobs use, so its shape says which kind it is.
fn subscription_fact(ctx: &Context) -> Fact {
    const NAME: &str = "subscription-for-others";
    let market_on = !ctx.settings.market.url.is_empty();
    match ctx.api_key() {
        Ok((key, source)) if key.is_subscription_token() && market_on => fact(
            NAME,
            format!("the key from {source} is a subscription (OAuth) token and the market is on"),
            FactStatus::Failed,
        ),
        Ok((key, source)) if key.is_subscription_token() => fact(
            NAME,
            format!(
                "the key from {source} is a subscription token, used for the owner's own jobs only"
            ),
            FactStatus::Ok,
        ),
        Ok((_, source)) => fact(
            NAME,
            format!("jobs are paid with the API key from {source}"),
            FactStatus::Ok,
        ),
        Err(_) => fact(NAME, "no credential configured for jobs", FactStatus::Ok),
    }
}
