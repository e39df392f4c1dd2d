//! The audit log's storage: appending rows, reading them back and verifying
//! the chain over what is on disk. Other store files append through
//! [`append`] inside their own transaction, so a change and its audit row
//! commit or fail together. It must offer no way to edit or delete a row, and
//! it does not decide what gets audited; callers do.

use rusqlite::{Connection, TransactionBehavior, params};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::chain::{self, ChainWalk, StoredRow};
use super::error::{During, StoreError};
use super::{Store, now, timestamp};

/// One row of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    /// RFC 3339, UTC, microseconds.
    pub ts: String,
    pub kind: String,
    pub subject: String,
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The result of walking the whole chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainStatus {
    pub rows: u64,
    /// The newest row's hash; `None` for an empty log.
    pub head: Option<String>,
    /// The first break found, if any.
    pub broken: Option<ChainBreak>,
}

/// Where and how the chain stops holding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

const SELECT_ROWS: &str = "SELECT seq, ts, kind, subject, details, prev_hash, hash FROM audit_log";

/// Appends one row inside the caller's transaction, chaining it to the stored
/// head rather than to the newest row present, so a cut-off tail cannot be
/// papered over by the next append.
pub(super) fn append(
    conn: &Connection,
    kind: &str,
    subject: &str,
    details: &Value,
) -> Result<AuditEntry, StoreError> {
    let (head_seq, prev_hash) = read_head(conn)?;
    let seq = head_seq + 1;
    let ts = now()?;
    let details = chain::canonical(details);
    let hash = chain::row_hash(&prev_hash, seq, &ts, kind, subject, &details);
    conn.execute(
        "INSERT INTO audit_log (seq, ts, kind, subject, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![seq, ts, kind, subject, details.to_string(), prev_hash, hash],
    )
    .during("appending to the audit log")?;
    conn.execute(
        "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
        params![seq, hash],
    )
    .during("moving the audit head")?;
    tracing::debug!(seq, kind, subject, "audit row appended");
    Ok(AuditEntry {
        seq,
        ts,
        kind: kind.to_owned(),
        subject: subject.to_owned(),
        details,
        prev_hash,
        hash,
    })
}

fn read_head(conn: &Connection) -> Result<(i64, String), StoreError> {
    conn.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })
    .during("reading the audit head")
}

/// Serializes a record for an audit row's details.
pub(super) fn to_details(what: &'static str, value: &impl Serialize) -> Result<Value, StoreError> {
    serde_json::to_value(value).map_err(|source| StoreError::Encode { what, source })
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        seq: row.get(0)?,
        ts: row.get(1)?,
        kind: row.get(2)?,
        subject: row.get(3)?,
        details: row.get(4)?,
        prev_hash: row.get(5)?,
        hash: row.get(6)?,
    })
}

fn into_entry(row: StoredRow) -> Result<AuditEntry, StoreError> {
    let details =
        serde_json::from_str(&row.details).map_err(|source| StoreError::CorruptAudit {
            seq: row.seq,
            source,
        })?;
    Ok(AuditEntry {
        seq: row.seq,
        ts: row.ts,
        kind: row.kind,
        subject: row.subject,
        details,
        prev_hash: row.prev_hash,
        hash: row.hash,
    })
}

impl Store {
    /// Appends one row in its own IMMEDIATE transaction and returns it.
    pub fn append_audit(
        &mut self,
        kind: &str,
        subject: &str,
        details: &Value,
    ) -> Result<AuditEntry, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting an audit append")?;
        let entry = append(&tx, kind, subject, details)?;
        tx.commit().during("committing an audit row")?;
        Ok(entry)
    }

    /// Rows in seq order, optionally only those at or after `since`.
    pub fn audit_entries(
        &self,
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        // Timestamps are fixed-width UTC, so text order is time order.
        let since = since.map(timestamp).transpose()?.unwrap_or_default();
        let mut stmt = self
            .conn
            .prepare(&format!("{SELECT_ROWS} WHERE ts >= ?1 ORDER BY seq"))
            .during("reading the audit log")?;
        let rows = stmt
            .query_map([since], read_row)
            .during("reading the audit log")?;
        rows.map(|row| into_entry(row.during("reading the audit log")?))
            .collect()
    }

    /// The newest `limit` rows of one kind, newest first.
    pub fn latest_audit_of_kind(
        &self,
        kind: &str,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "{SELECT_ROWS} WHERE kind = ?1 ORDER BY seq DESC LIMIT ?2"
            ))
            .during("reading the audit log")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(rusqlite::params![kind, limit], read_row)
            .during("reading the audit log")?;
        rows.map(|row| into_entry(row.during("reading the audit log")?))
            .collect()
    }

    /// The seq of every row whose subject or details contain `needle`, in
    /// order. Searches the stored text in SQLite, so scanning the log for a
    /// leaked secret does not load and parse every row.
    pub fn audit_rows_containing(&self, needle: &str) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq FROM audit_log \
                 WHERE instr(details, ?1) > 0 OR instr(subject, ?1) > 0 ORDER BY seq",
            )
            .during("searching the audit log")?;
        let rows = stmt
            .query_map([needle], |row| row.get(0))
            .during("searching the audit log")?;
        rows.map(|row| row.during("searching the audit log"))
            .collect()
    }

    /// Walks the whole chain in seq order and reports the first row that was
    /// removed, relinked or altered, then checks the end against the head.
    pub fn verify_audit(&self) -> Result<ChainStatus, StoreError> {
        // Rows and head must come from one snapshot: read separately, an
        // append by another process in between looks like removed rows.
        let snapshot = self
            .conn
            .unchecked_transaction()
            .during("reading the audit log")?;
        let mut stmt = snapshot
            .prepare(&format!("{SELECT_ROWS} ORDER BY seq"))
            .during("reading the audit log")?;
        let mut walk = ChainWalk::new();
        for row in stmt
            .query_map([], read_row)
            .during("reading the audit log")?
        {
            walk.step(row.during("reading the audit log")?);
        }
        let (head_seq, head_hash) = read_head(&snapshot)?;
        Ok(walk.finish(head_seq, &head_hash))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{raw_conn, temp_store};
    use super::*;
    use serde_json::json;

    fn store_with_rows(count: i64) -> (tempfile::TempDir, Store) {
        let (dir, mut store) = temp_store();
        for n in 1..=count {
            store
                .append_audit("test.row", "subject", &json!({"n": n}))
                .unwrap();
        }
        (dir, store)
    }

    /// Tampering as someone holding the file would: a second connection with
    /// the append-only triggers dropped.
    fn tamper(dir: &tempfile::TempDir, sql: &str) {
        let conn = raw_conn(&dir.path().join("state.db"));
        conn.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
            .unwrap();
        conn.execute_batch(sql).unwrap();
    }

    #[test]
    fn appends_chain_and_verify() {
        let (_dir, store) = store_with_rows(3);
        let entries = store.audit_entries(None).unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(entries[0].prev_hash, chain::GENESIS_HASH);
        assert_eq!(entries[1].prev_hash, entries[0].hash);
        assert_eq!(entries[2].details, json!({"n": 3}));
        let status = store.verify_audit().unwrap();
        assert_eq!(status.rows, 3);
        assert_eq!(status.head.as_deref(), Some(entries[2].hash.as_str()));
        assert_eq!(status.broken, None);
    }

    #[test]
    fn finds_rows_by_text_without_wildcards() {
        let (_dir, mut store) = store_with_rows(2);
        store
            .append_audit("test.row", "sk-ant-in-subject", &json!({}))
            .unwrap();
        store
            .append_audit("test.row", "subject", &json!({"key": "x sk-ant-api03 y"}))
            .unwrap();
        assert_eq!(store.audit_rows_containing("sk-ant-").unwrap(), [3, 4]);
        assert!(store.audit_rows_containing("%").unwrap().is_empty());
    }

    #[test]
    fn verifying_while_another_process_appends_never_reports_a_break() {
        let (dir, store) = store_with_rows(1);
        let path = dir.path().join("state.db");
        let writer = std::thread::spawn(move || {
            let mut other = Store::open(&path).unwrap();
            for n in 0..300 {
                other
                    .append_audit("test.row", "writer", &json!({ "n": n }))
                    .unwrap();
            }
        });
        while !writer.is_finished() {
            let status = store.verify_audit().unwrap();
            assert_eq!(status.broken, None, "after {} rows", status.rows);
        }
        writer.join().unwrap();
        assert_eq!(store.verify_audit().unwrap().rows, 301);
    }

    #[test]
    fn the_store_itself_cannot_rewrite_rows() {
        let (_dir, store) = store_with_rows(1);
        let err = store.conn.execute("DELETE FROM audit_log", []).unwrap_err();
        assert!(err.to_string().contains("append-only"));
    }

    #[test]
    fn an_edited_row_is_reported_by_seq() {
        let (dir, store) = store_with_rows(4);
        tamper(
            &dir,
            r#"UPDATE audit_log SET details = '{"n":99}' WHERE seq = 2"#,
        );
        let broken = store.verify_audit().unwrap().broken.expect("edit detected");
        assert_eq!(broken.seq, 2);
        assert_eq!(
            broken.reason,
            "row 2: content does not match its hash (altered)"
        );
    }

    #[test]
    fn a_removed_middle_row_is_reported_missing() {
        let (dir, store) = store_with_rows(4);
        tamper(&dir, "DELETE FROM audit_log WHERE seq = 3");
        let broken = store
            .verify_audit()
            .unwrap()
            .broken
            .expect("removal detected");
        assert_eq!(broken.seq, 3);
        assert_eq!(broken.reason, "row 3 is missing (seq jumps from 2 to 4)");
    }

    #[test]
    fn a_removed_last_row_is_caught_by_the_head() {
        let (dir, store) = store_with_rows(4);
        tamper(&dir, "DELETE FROM audit_log WHERE seq = 4");
        let status = store.verify_audit().unwrap();
        assert_eq!(status.rows, 3);
        let broken = status.broken.expect("truncation detected");
        assert_eq!(broken.seq, 4);
        assert_eq!(
            broken.reason,
            "the newest rows were removed (head row 4 missing)"
        );
    }

    #[test]
    fn an_append_after_truncation_does_not_hide_it() {
        let (dir, mut store) = store_with_rows(3);
        tamper(&dir, "DELETE FROM audit_log WHERE seq = 3");
        store
            .append_audit("test.row", "subject", &json!({}))
            .unwrap();
        let broken = store.verify_audit().unwrap().broken.expect("gap detected");
        assert_eq!(broken.reason, "row 3 is missing (seq jumps from 2 to 4)");
    }

    #[test]
    fn entries_since_filters_by_time() {
        let (_dir, store) = store_with_rows(2);
        let future = OffsetDateTime::now_utc() + time::Duration::hours(1);
        assert!(store.audit_entries(Some(future)).unwrap().is_empty());
        let past = OffsetDateTime::now_utc() - time::Duration::hours(1);
        assert_eq!(store.audit_entries(Some(past)).unwrap().len(), 2);
    }
}
