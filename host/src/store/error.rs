//! The one error type of the state store. Each variant carries what the caller
//! needs to explain the failure and says what to do about it; it must not
//! swallow the underlying SQLite or serde error, which stays reachable through
//! `source()` so the binary can print the whole chain.

use std::path::PathBuf;

/// Everything that can go wrong reading or writing the state database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the state database at {path}; check that its folder exists and is writable"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "the state database at {path} has schema version {found}, but this build knows only \
         versions up to {supported}; upgrade claude-max-market to a release that knows it"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error(
        "migration {migration} failed on {path} and was rolled back; the database is unchanged, \
         report this with the error below"
    )]
    Migrate {
        path: PathBuf,
        migration: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "the state database failed while {op}; nothing from this operation was saved. If another \
         claude-max-market process held it for over 10 s, retry; otherwise check the disk"
    )]
    Sql {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error("could not encode {what} as JSON for the audit log; nothing was saved")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "audit row {seq} holds details that are not JSON, so the log was tampered with; \
         run `claude-max-market audit --verify` to see where the chain breaks"
    )]
    CorruptAudit {
        seq: i64,
        #[source]
        source: serde_json::Error,
    },

    #[error("could not format a timestamp for the state database; check the system clock")]
    Timestamp {
        #[source]
        source: time::error::Format,
    },

    #[error("a job with id {job_id} was already admitted; submit it under a new id")]
    JobExists { job_id: String },

    #[error("no job with id {job_id}; `claude-max-market jobs` lists recent jobs")]
    JobNotFound { job_id: String },

    #[error("job {job_id} has already ended (or never started); it cannot change state again")]
    JobNotLive { job_id: String },

    #[error("job {job_id} was allowed without a budget from the limits role; nothing was admitted")]
    NoGrant { job_id: String },

    #[error("'{role}' is not a policy role; use one of approval, limits, pricing, compliance")]
    UnknownRole { role: String },
}

/// Attaches the operation being attempted to a SQLite error, so a failure
/// names what was lost rather than only what SQLite saw.
pub(super) trait During<T> {
    fn during(self, op: &'static str) -> Result<T, StoreError>;
}

impl<T> During<T> for rusqlite::Result<T> {
    fn during(self, op: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sql { op, source })
    }
}
