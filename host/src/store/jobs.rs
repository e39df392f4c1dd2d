//! The jobs table: one row per admitted job, from admission to its end. Rows
//! are created only by admission, so a job here always has its audit row and
//! its usage reservation; `runs` moves them through their run. It must not
//! hold a prompt or a result, only their size and digest.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use time::Date;

use super::admission::{Budget, NewJob};
use super::error::{During, StoreError};
use super::{Store, day_key, now};

/// A job as recorded, for `status` and `logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRow {
    pub id: String,
    pub created_at: String,
    /// The UTC day (YYYY-MM-DD) its usage counts against.
    pub usage_day: String,
    pub model: String,
    /// What the job asked to spend.
    pub budget: Budget,
    /// The image reference as asked, and the id it resolved to.
    pub image: String,
    pub image_id: String,
    /// The command line; empty for the built-in one-prompt worker.
    pub command: Vec<String>,
    pub agent: String,
    /// The owner's folder it worked on, if any.
    pub workspace: Option<String>,
    pub egress: bool,
    /// "local" or "market".
    pub source: String,
    pub requester: String,
    /// "admitted", "running", "finished", "failed", "timed_out",
    /// "cancelled", "aborted" or "out_of_budget".
    pub state: String,
    pub granted_tokens: u64,
    pub granted_requests: u32,
    pub timeout_secs: u32,
    /// The process that admitted the job and runs it.
    pub host: Option<HostProcess>,
    pub container_id: Option<String>,
    pub started_at: Option<String>,
    /// Requests the gateway forwarded upstream.
    pub requests: u32,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub exit_code: Option<i64>,
    pub end_reason: Option<String>,
    pub finished_at: Option<String>,
}

impl JobRow {
    /// Admitted or running: holding a concurrency slot.
    pub fn is_live(&self) -> bool {
        matches!(self.state.as_str(), "admitted" | "running")
    }

    /// Input plus output tokens metered so far.
    pub fn tokens_used(&self) -> u64 {
        self.input_tokens
            .unwrap_or(0)
            .saturating_add(self.output_tokens.unwrap_or(0))
    }
}

/// A process on this machine, told apart from a later one that reuses its
/// pid by the time it started (in clock ticks since boot, from /proc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HostProcess {
    pub pid: u32,
    pub start: u64,
}

pub(super) fn exists(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let found = conn
        .query_row("SELECT 1 FROM jobs WHERE id = ?1", [id], |_| Ok(()))
        .optional()
        .during("looking up a job")?;
    Ok(found.is_some())
}

pub(super) fn insert(
    conn: &Connection,
    job: &NewJob,
    day: Date,
    grant: &Budget,
) -> Result<(), StoreError> {
    let command = serde_json::to_string(&job.command).unwrap_or_else(|_| "[]".into());
    let workspace = job.workspace.as_ref();
    conn.execute(
        "INSERT INTO jobs (id, created_at, usage_day, model, budget_tokens, budget_requests,
                           budget_secs, prompt_bytes, prompt_sha256, image, image_id, command,
                           agent, workspace, workspace_bytes, workspace_files, egress, source,
                           requester, state, granted_tokens, granted_requests, timeout_secs,
                           host_pid, host_start)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, 'admitted', ?20, ?21, ?22, ?23, ?24)",
        params![
            job.id,
            now()?,
            day_key(day)?,
            job.model,
            job.budget.tokens,
            job.budget.requests,
            job.budget.timeout_secs,
            job.prompt_bytes,
            job.prompt_sha256,
            job.image,
            job.image_id,
            command,
            job.agent,
            workspace.map(|w| &w.folder),
            workspace.map(|w| w.bytes),
            workspace.map(|w| w.files),
            job.egress,
            job.source,
            job.requester,
            grant.tokens,
            grant.requests,
            grant.timeout_secs,
            job.host.map(|h| h.pid),
            job.host.map(|h| h.start),
        ],
    )
    .during("recording the admitted job")?;
    Ok(())
}

/// The columns `read_job` expects, in its order.
pub(super) const JOB_COLUMNS: &str = "id, created_at, model, budget_tokens, source, requester,
     state, granted_tokens, timeout_secs, host_pid, host_start, container_id, started_at,
     requests, input_tokens, output_tokens, exit_code, end_reason, finished_at, usage_day,
     budget_requests, budget_secs, image, image_id, command, agent, workspace, egress,
     granted_requests";

pub(super) fn read_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    let host = match (
        row.get::<_, Option<u32>>(9)?,
        row.get::<_, Option<u64>>(10)?,
    ) {
        (Some(pid), Some(start)) => Some(HostProcess { pid, start }),
        _ => None,
    };
    let command: String = row.get(24)?;
    Ok(JobRow {
        id: row.get(0)?,
        created_at: row.get(1)?,
        model: row.get(2)?,
        budget: Budget {
            tokens: row.get(3)?,
            requests: row.get(20)?,
            timeout_secs: row.get(21)?,
        },
        source: row.get(4)?,
        requester: row.get(5)?,
        state: row.get(6)?,
        granted_tokens: row.get(7)?,
        timeout_secs: row.get(8)?,
        host,
        container_id: row.get(11)?,
        started_at: row.get(12)?,
        requests: row.get(13)?,
        input_tokens: row.get(14)?,
        output_tokens: row.get(15)?,
        exit_code: row.get(16)?,
        end_reason: row.get(17)?,
        finished_at: row.get(18)?,
        usage_day: row.get(19)?,
        image: row.get(22)?,
        image_id: row.get(23)?,
        // Written by `insert` from a list of strings; an unreadable one
        // (someone edited the file) shows as no command rather than failing.
        command: serde_json::from_str(&command).unwrap_or_default(),
        agent: row.get(25)?,
        workspace: row.get(26)?,
        egress: row.get(27)?,
        granted_requests: row.get(28)?,
    })
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<JobRow>, StoreError> {
    conn.query_row(
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
        [id],
        read_job,
    )
    .optional()
    .during("reading a job")
}

impl Store {
    /// The newest `limit` jobs, newest first. Insertion order rather than
    /// `created_at`, so a clock stepping back cannot reorder them.
    pub fn jobs(&self, limit: usize) -> Result<Vec<JobRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs ORDER BY rowid DESC LIMIT ?1"
            ))
            .during("listing jobs")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map([limit], read_job).during("listing jobs")?;
        rows.map(|row| row.during("listing jobs")).collect()
    }

    /// One job by id.
    pub fn job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        get(&self.conn, id)
    }

    /// Jobs whose usage counts on `from` or a later day, oldest first.
    pub fn jobs_since(&self, from: Date) -> Result<Vec<JobRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE usage_day >= ?1 ORDER BY rowid"
            ))
            .during("listing jobs")?;
        let rows = stmt
            .query_map([day_key(from)?], read_job)
            .during("listing jobs")?;
        rows.map(|row| row.during("listing jobs")).collect()
    }

    /// Jobs admitted or running, oldest first.
    pub fn live_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('admitted', 'running')
                 ORDER BY rowid"
            ))
            .during("listing live jobs")?;
        let rows = stmt.query_map([], read_job).during("listing live jobs")?;
        rows.map(|row| row.during("listing live jobs")).collect()
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
            let day = time::macros::date!(2026 - 02 - 10);
            let grant = verdict(Outcome::Allow, 900).grant.unwrap();
            insert(&store.conn, &sample_job(id), day, &grant).unwrap();
        }
        let jobs = store.jobs(2).unwrap();
        let ids: Vec<_> = jobs.iter().map(|job| job.id.as_str()).collect();
        assert_eq!(ids, ["job-3", "job-2"]);
        assert_eq!(jobs[0].state, "admitted");
        assert_eq!((jobs[0].granted_tokens, jobs[0].timeout_secs), (900, 300));
        assert_eq!(jobs[0].command, ["python3", "agent.py"]);
        assert_eq!(jobs[0].budget.tokens, 1024);
        assert_eq!(jobs[0].input_tokens, None);
        assert!(exists(&store.conn, "job-1").unwrap());
        assert!(!exists(&store.conn, "job-9").unwrap());
    }
}
