//! The owner's consent: which terms they accepted and whether they opted in to
//! running jobs. Every event is kept (history, not a flag) and audited in the
//! same transaction. It records consent; it must not decide whether a job may
//! run without it, which is the policy pipeline's call.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::error::{During, StoreError};
use super::{Store, audit, now};

/// Something the owner agreed to or withdrew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConsentEvent {
    TermsAccepted {
        version: String,
    },
    /// `claude_jobs`: whether jobs may run on the owner's Claude credentials.
    OptIn {
        claude_jobs: bool,
        terms_version: String,
    },
    OptOut,
}

impl ConsentEvent {
    fn kind(&self) -> &'static str {
        match self {
            ConsentEvent::TermsAccepted { .. } => "terms_accepted",
            ConsentEvent::OptIn { .. } => "opt_in",
            ConsentEvent::OptOut => "opt_out",
        }
    }
}

/// The consent in force now, derived from the newest events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConsentState {
    pub opted_in: bool,
    pub claude_jobs: bool,
    pub opted_in_at: Option<String>,
    /// The most recently accepted terms version.
    pub terms_version: Option<String>,
    pub terms_accepted_at: Option<String>,
}

impl Store {
    /// Records one consent event and its audit row ("consent.<kind>") together.
    pub fn record_consent(&mut self, event: &ConsentEvent) -> Result<(), StoreError> {
        let (terms_version, claude_jobs) = match event {
            ConsentEvent::TermsAccepted { version } => (Some(version.as_str()), None),
            ConsentEvent::OptIn {
                claude_jobs,
                terms_version,
            } => (Some(terms_version.as_str()), Some(*claude_jobs)),
            ConsentEvent::OptOut => (None, None),
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting a consent change")?;
        tx.execute(
            "INSERT INTO consent_events (ts, kind, terms_version, claude_jobs)
             VALUES (?1, ?2, ?3, ?4)",
            params![now()?, event.kind(), terms_version, claude_jobs],
        )
        .during("recording consent")?;
        let details = audit::to_details("the consent event", event)?;
        audit::append(&tx, &format!("consent.{}", event.kind()), "owner", &details)?;
        tx.commit().during("committing a consent change")
    }

    /// The newest opt-in/opt-out decides `opted_in`; the newest accepted terms
    /// are reported separately, since terms can be accepted before opting in.
    pub fn consent_state(&self) -> Result<ConsentState, StoreError> {
        let mut state = ConsentState::default();
        if let Some((ts, claude_jobs)) = self.current_opt_in()? {
            state.opted_in = true;
            state.claude_jobs = claude_jobs;
            state.opted_in_at = Some(ts);
        }
        let terms = self
            .conn
            .query_row(
                "SELECT terms_version, ts FROM consent_events
                 WHERE kind = 'terms_accepted' ORDER BY id DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .during("reading consent")?;
        if let Some((version, ts)) = terms {
            state.terms_version = Some(version);
            state.terms_accepted_at = Some(ts);
        }
        Ok(state)
    }

    /// When and with what scope the owner opted in, unless they since opted out.
    fn current_opt_in(&self) -> Result<Option<(String, bool)>, StoreError> {
        let newest: Option<(String, String, Option<bool>)> = self
            .conn
            .query_row(
                "SELECT kind, ts, claude_jobs FROM consent_events
                 WHERE kind IN ('opt_in', 'opt_out') ORDER BY id DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .during("reading consent")?;
        Ok(newest
            .filter(|(kind, _, _)| kind == "opt_in")
            .map(|(_, ts, claude_jobs)| (ts, claude_jobs.unwrap_or(false))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{count, temp_store};
    use super::*;

    fn opt_in(claude_jobs: bool) -> ConsentEvent {
        ConsentEvent::OptIn {
            claude_jobs,
            terms_version: "2026-01".to_owned(),
        }
    }

    #[test]
    fn a_fresh_store_has_no_consent() {
        let (_dir, store) = temp_store();
        assert_eq!(store.consent_state().unwrap(), ConsentState::default());
    }

    #[test]
    fn consent_follows_the_newest_events_and_keeps_history() {
        let (_dir, mut store) = temp_store();
        let terms = ConsentEvent::TermsAccepted {
            version: "2026-01".to_owned(),
        };
        store.record_consent(&terms).unwrap();
        let state = store.consent_state().unwrap();
        assert!(!state.opted_in);
        assert_eq!(state.terms_version.as_deref(), Some("2026-01"));

        store.record_consent(&opt_in(true)).unwrap();
        let state = store.consent_state().unwrap();
        assert!(state.opted_in && state.claude_jobs);
        assert!(state.opted_in_at.is_some());

        store.record_consent(&ConsentEvent::OptOut).unwrap();
        let state = store.consent_state().unwrap();
        assert!(!state.opted_in && !state.claude_jobs && state.opted_in_at.is_none());
        assert_eq!(state.terms_version.as_deref(), Some("2026-01"));

        store.record_consent(&opt_in(false)).unwrap();
        let state = store.consent_state().unwrap();
        assert!(state.opted_in && !state.claude_jobs);

        assert_eq!(count(&store, "SELECT count(*) FROM consent_events"), 4);
        let kinds: Vec<_> = store
            .audit_entries(None)
            .unwrap()
            .into_iter()
            .map(|entry| entry.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "consent.terms_accepted",
                "consent.opt_in",
                "consent.opt_out",
                "consent.opt_in"
            ]
        );
        assert!(store.verify_audit().unwrap().broken.is_none());
    }

    #[test]
    fn newer_terms_replace_older_ones() {
        let (_dir, mut store) = temp_store();
        for version in ["2026-01", "2026-06"] {
            let event = ConsentEvent::TermsAccepted {
                version: version.to_owned(),
            };
            store.record_consent(&event).unwrap();
        }
        let state = store.consent_state().unwrap();
        assert_eq!(state.terms_version.as_deref(), Some("2026-06"));
    }
}
