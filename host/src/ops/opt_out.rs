//! `opt-out`: withdraw consent. No job is admitted afterwards; usage history
//! and the audit log stay, so the user can still review them.

use crate::store::{ConsentEvent, ConsentState};

use super::{Context, OpsError};

/// Records the opt-out. `confirmed` must be true: the CLI gets it from
/// `--yes` or an interactive prompt.
pub fn run(ctx: &mut Context, confirmed: bool) -> Result<ConsentState, OpsError> {
    if !confirmed {
        return Err(OpsError::NeedsConfirmation { what: "opting out" });
    }
    ctx.store.record_consent(&ConsentEvent::OptOut)?;
    Ok(ctx.store.consent_state()?)
}
