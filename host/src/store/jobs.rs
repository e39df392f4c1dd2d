//! The jobs table: one row per admitted job, from admission to its end. Rows
//! are created only by admission, so a job here always has its audit row and
//! its usage reservation. It must not hold a prompt or a result, only their
//! size and digest.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::admission::{NewJob, Verdict};
use super::error::{During, StoreError};
use super::{Store, now};

/// A job as recorded, for `status` and `logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRow {
    pub id: String,
    pub created_at: String,
    pub model: String,
    pub max_tokens: u32,
    /// "local" or "market".
    pub source: String,
    pub requester: String,
    /// "admitted", "running", "finished", "failed" or "cancelled".
    pub state: String,
    pub granted_tokens: u32,
    pub timeout_secs: u32,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub finished_at: Option<String>,
}

pub(super) fn exists(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let found = conn
        .query_row("SELECT 1 FROM jobs WHERE id = ?1", [id], |_| Ok(()))
        .optional()
        .during("looking up a job")?;
    Ok(found.is_some())
}

pub(super) fn insert(conn: &Connection, job: &NewJob, verdict: &Verdict) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO jobs (id, created_at, model, max_tokens, prompt_bytes, prompt_sha256,
                           source, requester, state, granted_tokens, timeout_secs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'admitted', ?9, ?10)",
        params![
            job.id,
            now()?,
            job.model,
            job.max_tokens,
            job.prompt_bytes,
            job.prompt_sha256,
            job.source,
            job.requester,
            verdict.granted_tokens,
            verdict.timeout_secs,
        ],
    )
    .during("recording the admitted job")?;
    Ok(())
}

fn read_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: row.get(0)?,
        created_at: row.get(1)?,
        model: row.get(2)?,
        max_tokens: row.get(3)?,
        source: row.get(4)?,
        requester: row.get(5)?,
        state: row.get(6)?,
        granted_tokens: row.get(7)?,
        timeout_secs: row.get(8)?,
        input_tokens: row.get(9)?,
        output_tokens: row.get(10)?,
        finished_at: row.get(11)?,
    })
}

impl Store {
    /// The newest `limit` jobs, newest first. Insertion order rather than
    /// `created_at`, so a clock stepping back cannot reorder them.
    pub fn jobs(&self, limit: usize) -> Result<Vec<JobRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, created_at, model, max_tokens, source, requester, state,
                        granted_tokens, timeout_secs, input_tokens, output_tokens, finished_at
                 FROM jobs ORDER BY rowid DESC LIMIT ?1",
            )
            .during("listing jobs")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map([limit], read_job).during("listing jobs")?;
        rows.map(|row| row.during("listing jobs")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Outcome;
    use super::super::test_support::{sample_job, temp_store, verdict};
    use super::*;

    #[test]
    fn jobs_list_newest_first_up_to_the_limit() {
        let (_dir, store) = temp_store();
        for id in ["job-1", "job-2", "job-3"] {
            insert(&store.conn, &sample_job(id), &verdict(Outcome::Allow, 900)).unwrap();
        }
        let jobs = store.jobs(2).unwrap();
        let ids: Vec<_> = jobs.iter().map(|job| job.id.as_str()).collect();
        assert_eq!(ids, ["job-3", "job-2"]);
        assert_eq!(jobs[0].state, "admitted");
        assert_eq!((jobs[0].granted_tokens, jobs[0].timeout_secs), (900, 300));
        assert_eq!(jobs[0].input_tokens, None);
        assert!(exists(&store.conn, "job-1").unwrap());
        assert!(!exists(&store.conn, "job-9").unwrap());
    }
}
