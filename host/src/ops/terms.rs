//! The legal notice and usage policy, versioned by the hash of its text.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::{ConsentEvent, ConsentState};

use super::{Context, OpsError};

/// The text users accept. Changing it changes its version, and everyone is
/// asked to accept again.
pub const TEXT: &str = include_str!("terms.md");

/// The version of `TEXT`: the first 16 hex digits of its sha256.
pub fn version() -> String {
    hex::encode(Sha256::digest(TEXT.as_bytes()))[..16].to_string()
}

#[derive(Debug, Serialize)]
pub struct TermsView {
    pub version: String,
    pub accepted: bool,
    pub accepted_at: Option<String>,
    pub text: &'static str,
}

/// The terms and whether this version was accepted.
pub fn show(ctx: &Context) -> Result<TermsView, OpsError> {
    let consent = ctx.store.consent_state()?;
    let version = version();
    let accepted = consent.terms_version.as_deref() == Some(version.as_str());
    Ok(TermsView {
        accepted_at: consent.terms_accepted_at.filter(|_| accepted),
        version,
        accepted,
        text: TEXT,
    })
}

/// Records acceptance of the current version (audited in the same transaction).
pub fn accept(ctx: &mut Context) -> Result<TermsView, OpsError> {
    ctx.store
        .record_consent(&ConsentEvent::TermsAccepted { version: version() })?;
    show(ctx)
}

/// Refuses unless `consent` includes acceptance of the current version.
pub(crate) fn require_current(consent: &ConsentState) -> Result<(), OpsError> {
    let current = version();
    if consent.terms_version.as_deref() != Some(current.as_str()) {
        return Err(OpsError::TermsNotAccepted { current });
    }
    Ok(())
}
