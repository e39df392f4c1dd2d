//! The audit log's storage: appending rows, reading them back and verifying
//! the chain over what is on disk. Other store files append through
//! [`append`] inside their own transaction, so a change and its audit row
//! commit or fail together. It must offer no way to edit or delete a row, and
//! it does not decide what gets audited; callers do.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::{Value, json};
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
    /// The newest row's seq; 0 for an empty log. Not the row count: rows
    /// removed from the middle leave it where it was.
    pub head_seq: i64,
    /// The first break found, if any.
    pub broken: Option<ChainBreak>,
    /// Where the chain was restarted after a break, oldest first.
    pub restarts: Vec<ChainRestart>,
}

/// A restart row and the break it recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainRestart {
    pub seq: i64,
    pub repaired: ChainBreak,
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
    append_at(conn, head_seq + 1, prev_hash, kind, subject, details)
}

/// Appends row `seq` linked to `prev_hash` and moves the head to it.
fn append_at(
    conn: &Connection,
    seq: i64,
    prev_hash: String,
    kind: &str,
    subject: &str,
    details: &Value,
) -> Result<AuditEntry, StoreError> {
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

    /// Every row of one kind about `subject` (a job id, say), in order.
    pub fn audit_about(&self, kind: &str, subject: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "{SELECT_ROWS} WHERE kind = ?1 AND subject = ?2 ORDER BY seq"
            ))
            .during("reading the audit log")?;
        let rows = stmt
            .query_map(rusqlite::params![kind, subject], read_row)
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
        walk(&snapshot)
    }

    /// Starts a new chain after a break: appends a restart row linked to the
    /// newest row present that records the break, the head it was compared
    /// with and the broken row as it now reads, and moves the head to it.
    /// Nothing is removed. `None` when the chain is intact.
    pub fn restart_audit_chain(&mut self) -> Result<Option<AuditEntry>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting an audit chain restart")?;
        let status = walk(&tx)?;
        let Some(broken) = status.broken else {
            return Ok(None);
        };
        let last_seq = status.head_seq;
        let last_hash = status
            .head
            .unwrap_or_else(|| chain::GENESIS_HASH.to_owned());
        let (head_seq, head_hash) = read_head(&tx)?;
        let evidence = json!({
            "break": broken,
            "head_before": { "seq": head_seq, "hash": head_hash },
            "last_present": { "seq": last_seq, "hash": last_hash },
            "rows_present": status.rows,
            "row_at_break": stored_row(&tx, broken.seq)?,
        });
        let entry = append_at(
            &tx,
            last_seq + 1,
            last_hash,
            chain::RESTART_KIND,
            "audit",
            &evidence,
        )?;
        tx.commit().during("committing an audit chain restart")?;
        Ok(Some(entry))
    }

    /// Whether the log still holds row `seq` with hash `hash`, as an
    /// anchored head kept elsewhere says it did; the reason when not.
    pub fn audit_holds(&self, seq: i64, hash: &str) -> Result<Result<(), String>, StoreError> {
        let stored: Option<String> = self
            .conn
            .query_row("SELECT hash FROM audit_log WHERE seq = ?1", [seq], |row| {
                row.get(0)
            })
            .optional()
            .during("reading the audit log")?;
        Ok(match stored {
            Some(stored) if stored == hash => Ok(()),
            Some(_) => Err(format!(
                "row {seq} differs from the anchored head: the log was rewritten"
            )),
            None => Err(format!(
                "row {seq} of the anchored head is gone: the log was cut or replaced"
            )),
        })
    }
}

/// Walks every row in seq order and checks the end against the stored head.
fn walk(conn: &Connection) -> Result<ChainStatus, StoreError> {
    let mut stmt = conn
        .prepare(&format!("{SELECT_ROWS} ORDER BY seq"))
        .during("reading the audit log")?;
    let mut walk = ChainWalk::new();
    for row in stmt
        .query_map([], read_row)
        .during("reading the audit log")?
    {
        walk.step(row.during("reading the audit log")?);
    }
    let (head_seq, head_hash) = read_head(conn)?;
    Ok(walk.finish(head_seq, &head_hash))
}

/// Row `seq` exactly as stored, for the evidence of a break.
fn stored_row(conn: &Connection, seq: i64) -> Result<Option<Value>, StoreError> {
    conn.query_row(&format!("{SELECT_ROWS} WHERE seq = ?1"), [seq], read_row)
        .optional()
        .during("reading the audit log")
        .map(|row| {
            row.map(|r| {
                json!({
                    "seq": r.seq, "ts": r.ts, "kind": r.kind, "subject": r.subject,
                    "details": r.details, "prev_hash": r.prev_hash, "hash": r.hash,
                })
            })
        })
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
        conn.execute_batch(
            "DROP TRIGGER IF EXISTS audit_log_no_update; DROP TRIGGER IF EXISTS audit_log_no_delete;",
        )
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

    /// Details hold floats (a decision's market load and reputation): read
    /// back, each must parse to the very number that was hashed.
    #[test]
    fn floats_in_details_read_back_to_the_same_hash() {
        let (_dir, mut store) = temp_store();
        let floats: Vec<f64> = (1..200).map(|n| f64::from(n) / 11.0).collect();
        store
            .append_audit(
                "test.row",
                "floats",
                &json!({ "reputation": 10.0 / 11.0, "load": 1.0 / 3.0, "all": floats }),
            )
            .unwrap();
        let status = store.verify_audit().unwrap();
        assert_eq!(status.broken, None, "{status:?}");
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
    fn a_restart_records_an_edit_and_the_chain_holds_again_until_the_next() {
        let (dir, mut store) = store_with_rows(4);
        assert!(store.restart_audit_chain().unwrap().is_none(), "intact");
        tamper(
            &dir,
            r#"UPDATE audit_log SET details = '{"n":99}' WHERE seq = 2"#,
        );
        let restart = store.restart_audit_chain().unwrap().expect("a restart");
        assert_eq!(restart.seq, 5);
        assert_eq!(restart.kind, chain::RESTART_KIND);
        assert_eq!(restart.details["break"]["seq"], 2);
        assert_eq!(restart.details["row_at_break"]["details"], r#"{"n":99}"#);
        store.append_audit("test.row", "after", &json!({})).unwrap();
        let status = store.verify_audit().unwrap();
        assert_eq!(status.broken, None);
        assert_eq!(status.restarts.len(), 1);
        assert_eq!(status.restarts[0].seq, 5);
        assert_eq!(status.restarts[0].repaired.seq, 2);

        tamper(&dir, r#"UPDATE audit_log SET subject = 'x' WHERE seq = 6"#);
        let broken = store.verify_audit().unwrap().broken.expect("a new break");
        assert_eq!(broken.seq, 6);
    }

    #[test]
    fn a_restart_after_a_cut_tail_links_to_the_last_row_present() {
        let (dir, mut store) = store_with_rows(5);
        tamper(&dir, "DELETE FROM audit_log WHERE seq >= 4");
        let restart = store.restart_audit_chain().unwrap().expect("a restart");
        assert_eq!(restart.seq, 4);
        assert_eq!(restart.details["head_before"]["seq"], 5);
        assert!(restart.details["row_at_break"].is_null());
        store.append_audit("test.row", "after", &json!({})).unwrap();
        let status = store.verify_audit().unwrap();
        assert_eq!((status.rows, status.broken), (5, None));
        assert_eq!(status.restarts[0].repaired.seq, 4);
    }

    #[test]
    fn the_head_after_a_restart_is_the_restart_row_not_the_row_count() {
        let (dir, mut store) = store_with_rows(5);
        tamper(&dir, "DELETE FROM audit_log WHERE seq = 3");
        let restart = store.restart_audit_chain().unwrap().expect("a restart");
        let status = store.verify_audit().unwrap();
        assert_eq!((status.rows, status.head_seq), (5, 6));
        assert_eq!(status.head.as_deref(), Some(restart.hash.as_str()));
        assert_eq!(
            store.audit_holds(status.head_seq, &restart.hash).unwrap(),
            Ok(())
        );
    }

    #[test]
    fn a_restart_recording_another_break_hides_nothing() {
        let (dir, store) = store_with_rows(3);
        tamper(
            &dir,
            r#"UPDATE audit_log SET details = '{"n":7}' WHERE seq = 1"#,
        );
        let last: String = raw_conn(&dir.path().join("state.db"))
            .query_row("SELECT hash FROM audit_log WHERE seq = 3", [], |r| r.get(0))
            .unwrap();
        let details = json!({"break": {"seq": 3, "reason": "made up"}});
        let hash = chain::row_hash(&last, 4, "t", chain::RESTART_KIND, "audit", &details);
        tamper(
            &dir,
            &format!(
                "INSERT INTO audit_log VALUES (4, 't', '{}', 'audit', '{details}', '{last}', '{hash}');
                 UPDATE audit_head SET seq = 4, hash = '{hash}'",
                chain::RESTART_KIND
            ),
        );
        let status = store.verify_audit().unwrap();
        assert_eq!(status.broken.expect("still broken").seq, 1);
        assert!(status.restarts.is_empty());
    }

    #[test]
    fn the_log_is_checked_against_an_anchored_row() {
        let (dir, store) = store_with_rows(3);
        let hash = store.audit_entries(None).unwrap()[1].hash.clone();
        assert_eq!(store.audit_holds(2, &hash).unwrap(), Ok(()));
        assert!(
            store
                .audit_holds(2, "00")
                .unwrap()
                .unwrap_err()
                .contains("rewritten")
        );
        tamper(&dir, "DELETE FROM audit_log WHERE seq >= 2");
        assert!(
            store
                .audit_holds(2, &hash)
                .unwrap()
                .unwrap_err()
                .contains("gone")
        );
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
