//! The facts about this node that the compliance role judges. The host
//! gathers them; it never decides on them itself.

use crate::policy::{Fact, FactStatus};
use crate::store::ConsentState;

use super::{Context, OpsError, terms};

/// The prefix of Anthropic credentials: API keys (`sk-ant-api…`) and OAuth
/// tokens (`sk-ant-oat…`) both start so. Finding one in config or logs means
/// a secret leaked into a file that is not meant to hold one.
const CREDENTIAL_MARKER: &str = "sk-ant-";

/// Gathers every fact the compliance role is told about.
pub(crate) fn gather(ctx: &Context) -> Result<Vec<Fact>, OpsError> {
    let consent = ctx.store.consent_state()?;
    Ok(vec![
        consent_fact(&consent),
        terms_fact(&consent),
        config_credentials_fact(ctx),
        log_credentials_fact(ctx)?,
        audit_fact(ctx)?,
        fact(
            "key-age",
            "this node has no key pair yet",
            FactStatus::Unknown,
        ),
        fact(
            "subscription-for-others",
            "jobs run on the owner's API key; no subscription credential is configured for jobs",
            FactStatus::Ok,
        ),
    ])
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
    match std::fs::read_to_string(ctx.home.config_path()) {
        Ok(text) if has_credential(&text) => fact(
            "no-credentials-in-config",
            "config.toml contains a credential",
            FactStatus::Failed,
        ),
        Ok(_) => fact(
            "no-credentials-in-config",
            "config.toml holds no credential",
            FactStatus::Ok,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fact(
            "no-credentials-in-config",
            "no config.toml (defaults)",
            FactStatus::Ok,
        ),
        Err(e) => fact(
            "no-credentials-in-config",
            format!("config.toml unreadable: {e}"),
            FactStatus::Unknown,
        ),
    }
}

fn log_credentials_fact(ctx: &Context) -> Result<Fact, OpsError> {
    let leaked = ctx.store.audit_rows_containing(CREDENTIAL_MARKER)?;
    Ok(if leaked.is_empty() {
        fact(
            "no-credentials-in-logs",
            "the audit log holds no credential",
            FactStatus::Ok,
        )
    } else {
        let rows: Vec<String> = leaked.iter().map(i64::to_string).collect();
        let value = format!("credential in audit rows {}", rows.join(", "));
        fact("no-credentials-in-logs", value, FactStatus::Failed)
    })
}

fn audit_fact(ctx: &Context) -> Result<Fact, OpsError> {
    let chain = ctx.store.verify_audit()?;
    Ok(match chain.broken {
        None => fact(
            "audit-chain",
            format!("{} rows, chain intact", chain.rows),
            FactStatus::Ok,
        ),
        Some(b) => fact(
            "audit-chain",
            format!("broken at row {}: {}", b.seq, b.reason),
            FactStatus::Failed,
        ),
    })
}

fn has_credential(text: &str) -> bool {
    text.contains(CREDENTIAL_MARKER)
}
