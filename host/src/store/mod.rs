//! The host's durable state: one SQLite file holding consent, jobs, daily usage,
//! policy decisions, the active policy per role and the hash-chained audit log.
//! Every SQL statement in the crate lives under this module, and every change it
//! makes is written together with its audit row in one transaction, so nothing
//! happens off the record. It decides nothing itself: verdicts come in from the
//! caller, and it must not reach into the policy engine, the runner or the network.
//!
//! Layout: `migrate` brings the schema up to date; `chain` is the pure hashing
//! and verification of the audit log and `audit` its SQL; `consent`, `usage`,
//! `jobs`, `admission`, `policies`, `bundles` and `market` each own their tables; `runs` moves an
//! admitted job through its run.

mod admission;
mod audit;
mod bundles;
mod chain;
mod consent;
mod error;
mod jobs;
mod market;
mod migrate;
mod policies;
mod runs;
#[cfg(test)]
mod test_support;
mod usage;

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

pub use admission::{Admission, Budget, DecisionRecord, NewJob, Outcome, Verdict, WorkspaceRecord};
pub use audit::{AuditEntry, ChainBreak, ChainRestart, ChainStatus};
pub use bundles::{BundleChange, BundleRevision, BundleSource, TrustedKeyRow};
pub use chain::GENESIS_HASH;
pub use consent::{ConsentEvent, ConsentState};
use error::During;
pub use error::StoreError;
pub use jobs::{HostProcess, JobRow};
pub use market::{MarketTaskRow, Step as MarketStep};
pub use policies::{ActivePolicy, POLICY_ROLES};
pub use runs::{JobEnd, MeteredUsage};
pub use usage::UsageSnapshot;

/// Parallel CLI invocations queue on the write lock for this long instead of
/// failing at once; admission holds it only for the policy pipeline's run.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Fixed width (always six fractional digits, always `Z`) so that timestamps
/// compare correctly as text, which `audit_entries(since)` relies on.
const TS_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

const DAY_FORMAT: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// An open state database. One per process (or per thread); SQLite's locking
/// keeps several of them on the same file consistent.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens the database file, creating it if needed, and migrates it to the
    /// schema this build knows. Refuses a file from a newer build rather than
    /// guess at tables it does not understand.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        configure(&conn).map_err(open_err)?;
        let mut store = Store { conn };
        migrate::run(&mut store.conn, path)?;
        Ok(store)
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // Set first, so the pragmas below also wait for a concurrent opener.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets `status` and `audit` read while another process admits a job.
    let mode = enable_wal(conn)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode; readers will block writers");
    }
    // An audit row must be on disk before the action it records; NORMAL in WAL
    // mode can lose the newest commits on power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)
}

/// Switching a fresh file to WAL needs an exclusive lock, and SQLite can refuse
/// it with BUSY at once, without waiting on the busy handler, while another
/// connection is opening the file too. Parallel first runs retry here within the same budget
/// rather than fail; once one has switched, the mode persists in the file.
fn enable_wal(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(rusqlite::Error::SqliteFailure(err, _))
                if err.code == ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

impl Store {
    /// SQLite's own check of the file; empty when it is sound.
    pub fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        const OP: &str = "checking the database's integrity";
        let mut stmt = self.conn.prepare("PRAGMA integrity_check").during(OP)?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .during(OP)?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }
}

/// The current time as stored in every `ts` column.
fn now() -> Result<String, StoreError> {
    timestamp(OffsetDateTime::now_utc())
}

fn timestamp(at: OffsetDateTime) -> Result<String, StoreError> {
    at.to_offset(UtcOffset::UTC)
        .format(TS_FORMAT)
        .map_err(|source| StoreError::Timestamp { source })
}

fn day_key(day: Date) -> Result<String, StoreError> {
    day.format(DAY_FORMAT)
        .map_err(|source| StoreError::Timestamp { source })
}

#[cfg(test)]
mod tests {
    use super::test_support::temp_store;
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn timestamps_are_fixed_width_utc() {
        let at = datetime!(2026-03-01 10:00:00 +02:00);
        assert_eq!(timestamp(at).unwrap(), "2026-03-01T08:00:00.000000Z");
        assert_eq!(day_key(date!(2026 - 03 - 01)).unwrap(), "2026-03-01");
    }

    #[test]
    fn open_sets_durability_pragmas() {
        let (_dir, store) = temp_store();
        let get = |name: &str| -> String {
            store
                .conn
                .pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|value| format!("{value:?}"))
                .unwrap()
        };
        assert_eq!(get("journal_mode"), "Text(\"wal\")");
        assert_eq!(get("synchronous"), "Integer(2)");
        assert_eq!(get("foreign_keys"), "Integer(1)");
        assert_eq!(get("busy_timeout"), "Integer(10000)");
    }
}
