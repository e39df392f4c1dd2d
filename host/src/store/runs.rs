//! A job's run after admission: started in a container, metered by the
//! gateway while it runs, and ended exactly once. Ending settles usage: the
//! admission reserved the granted budget, and the day is corrected to what
//! the gateway actually metered. Every transition is audited in the same
//! transaction as the change it records.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::json;

use super::error::{During, StoreError};
use super::jobs::{self, JobRow};
use super::{Store, audit, now};

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobEnd {
    /// The worker exited 0.
    Finished,
    /// The worker exited non-zero, or the container could not run.
    Failed,
    /// The wall-clock limit ran out and the container was killed.
    TimedOut,
    /// Stopped on purpose: interrupted, or the owner opted out.
    Cancelled,
    /// Its host process died; a later invocation cleaned up after it.
    Aborted,
    /// The gateway refused a request because the job's token budget or
    /// request cap was used up, and the job then ended.
    OutOfBudget,
}

impl JobEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            JobEnd::Finished => "finished",
            JobEnd::Failed => "failed",
            JobEnd::TimedOut => "timed_out",
            JobEnd::Cancelled => "cancelled",
            JobEnd::Aborted => "aborted",
            JobEnd::OutOfBudget => "out_of_budget",
        }
    }
}

impl std::fmt::Display for JobEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the gateway has metered for a job so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MeteredUsage {
    pub requests: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// SQLite integers are signed: a count past `i64::MAX` (only an absurd
/// upstream reports one) is stored as that maximum rather than failing
/// the write and leaving the job unsettled.
fn stored(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Store {
    /// Records the container a job runs in, with the hardening it was
    /// created with (what `compliance-check` later judges). Only an admitted
    /// job can start.
    pub fn mark_running(
        &mut self,
        job_id: &str,
        container_id: &str,
        hardening: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting to record a job start")?;
        let changed = tx
            .execute(
                "UPDATE jobs SET state = 'running', container_id = ?2, started_at = ?3
                 WHERE id = ?1 AND state = 'admitted'",
                params![job_id, container_id, now()?],
            )
            .during("recording a job start")?;
        if changed == 0 {
            return Err(StoreError::JobNotLive {
                job_id: job_id.to_owned(),
            });
        }
        audit::append(
            &tx,
            "job.started",
            job_id,
            &json!({ "container_id": container_id, "hardening": hardening }),
        )?;
        tx.commit().during("committing a job start")
    }

    /// Stores the gateway's running totals. Called as tokens arrive, so a
    /// host that dies mid-job leaves behind what was already spent; not
    /// audited row by row (the end of the run audits the totals).
    pub fn record_metered(&self, job_id: &str, usage: MeteredUsage) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE jobs SET requests = ?2, input_tokens = ?3, output_tokens = ?4
                 WHERE id = ?1 AND state IN ('admitted', 'running')",
                params![
                    job_id,
                    usage.requests,
                    stored(usage.input_tokens),
                    stored(usage.output_tokens)
                ],
            )
            .during("recording metered usage")?;
        Ok(())
    }

    /// Ends a live job, settles its day's usage to the metered tokens and
    /// audits the end. Returns the ended row, or `None` if the job had
    /// already ended (another process reconciled it first), in which case
    /// nothing changes.
    pub fn end_job(
        &mut self,
        job_id: &str,
        end: JobEnd,
        exit_code: Option<i64>,
        reason: Option<&str>,
    ) -> Result<Option<JobRow>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting to end a job")?;
        let Some(job) = jobs::get(&tx, job_id)? else {
            return Err(StoreError::JobNotFound {
                job_id: job_id.to_owned(),
            });
        };
        if !job.is_live() {
            return Ok(None);
        }
        tx.execute(
            "UPDATE jobs SET state = ?2, exit_code = ?3, end_reason = ?4, finished_at = ?5,
                             input_tokens = coalesce(input_tokens, 0),
                             output_tokens = coalesce(output_tokens, 0)
             WHERE id = ?1",
            params![job_id, end.as_str(), exit_code, reason, now()?],
        )
        .during("ending a job")?;
        // The reservation was the whole grant; what remains is what was used.
        // In Rust rather than SQL: SQLite turns an overflowing sum into a
        // float, which the column would then keep.
        let reserved: Option<i64> = tx
            .query_row(
                "SELECT tokens FROM usage_daily WHERE day = ?1",
                [&job.usage_day],
                |row| row.get(0),
            )
            .optional()
            .during("settling a job's usage")?;
        let settled = reserved
            .unwrap_or(0)
            .saturating_sub(stored(job.granted_tokens))
            .max(0)
            .saturating_add(stored(job.tokens_used()));
        tx.execute(
            "UPDATE usage_daily SET tokens = ?2 WHERE day = ?1",
            params![job.usage_day, settled],
        )
        .during("settling a job's usage")?;
        audit::append(
            &tx,
            &format!("job.{end}"),
            job_id,
            &json!({
                "container_id": job.container_id,
                "exit_code": exit_code,
                "reason": reason,
                "requests": job.requests,
                "input_tokens": job.input_tokens.unwrap_or(0),
                "output_tokens": job.output_tokens.unwrap_or(0),
                "granted_tokens": job.granted_tokens,
            }),
        )?;
        let ended = jobs::get(&tx, job_id)?;
        tx.commit().during("committing a job's end")?;
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::super::Outcome;
    use super::super::test_support::{sample_job, temp_store, verdict};
    use super::*;

    const DAY: time::Date = date!(2026 - 02 - 10);

    fn admitted(store: &mut Store, id: &str) {
        store
            .admit(&sample_job(id), DAY, |_| verdict(Outcome::Allow, 1000))
            .unwrap();
    }

    #[test]
    fn a_run_is_started_metered_and_settled_to_what_was_used() {
        let (_dir, mut store) = temp_store();
        admitted(&mut store, "job-a");
        assert_eq!(store.usage_snapshot(DAY).unwrap().tokens_today, 1000);
        store
            .mark_running("job-a", "c0ffee", &json!({ "read_only_rootfs": true }))
            .unwrap();
        let metered = MeteredUsage {
            requests: 1,
            input_tokens: 30,
            output_tokens: 70,
        };
        store.record_metered("job-a", metered).unwrap();
        let ended = store
            .end_job("job-a", JobEnd::Finished, Some(0), None)
            .unwrap()
            .expect("a live job ends");
        assert_eq!(ended.state, "finished");
        assert_eq!(ended.container_id.as_deref(), Some("c0ffee"));
        assert_eq!((ended.requests, ended.tokens_used()), (1, 100));
        let snapshot = store.usage_snapshot(DAY).unwrap();
        assert_eq!((snapshot.tasks_today, snapshot.tokens_today), (1, 100));
        assert_eq!(snapshot.running_jobs, 0);
        let kinds: Vec<_> = store
            .audit_entries(None)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["job.admitted", "job.started", "job.finished"]);
        assert!(store.verify_audit().unwrap().broken.is_none());
    }

    #[test]
    fn a_job_ends_once_and_metering_stops_with_it() {
        let (_dir, mut store) = temp_store();
        admitted(&mut store, "job-b");
        let first = store.end_job("job-b", JobEnd::Aborted, None, Some("host died"));
        assert_eq!(first.unwrap().unwrap().state, "aborted");
        let second = store.end_job("job-b", JobEnd::Finished, Some(0), None);
        assert_eq!(second.unwrap(), None);
        let late = MeteredUsage {
            requests: 9,
            input_tokens: 9,
            output_tokens: 9,
        };
        store.record_metered("job-b", late).unwrap();
        let job = store.job("job-b").unwrap().unwrap();
        assert_eq!((job.state.as_str(), job.tokens_used()), ("aborted", 0));
        assert!(matches!(
            store.mark_running("job-b", "late", &json!({})),
            Err(StoreError::JobNotLive { .. })
        ));
        assert!(matches!(
            store.end_job("nope", JobEnd::Failed, None, None),
            Err(StoreError::JobNotFound { .. })
        ));
    }
}
