//! Admission: the one transaction in which a job's policy verdict is made,
//! recorded and, if it allows, acted on. Holding SQLite's write lock from the
//! usage read to the reservation is what stops two processes both seeing room
//! under a limit that only one fits. It must not run policy itself: the
//! caller's `decide` does, inside the lock.

use rusqlite::{Connection, TransactionBehavior, params};
use serde::Serialize;

pub use crate::outcome::Outcome;
use serde_json::{Value, json};
use time::Date;
use tracing::instrument;

use super::error::{During, StoreError};
use super::jobs::HostProcess;
use super::usage::{self, UsageSnapshot};
use super::{Store, audit, jobs, now};

/// What a job may spend: what it asks for, or what limits grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Input plus output tokens over the whole job.
    pub tokens: u64,
    pub requests: u32,
    pub timeout_secs: u32,
}

/// The owner's folder a job works on, as the job got it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkspaceRecord {
    /// The owner's folder (on this machine; a market job's is the requester's).
    pub folder: String,
    pub bytes: u64,
    pub files: u32,
}

/// A job asking to run, before any decision: the record the audit log
/// carries for it.
#[derive(Debug, Clone, Serialize)]
pub struct NewJob {
    pub id: String,
    pub model: String,
    /// What the job asks to spend.
    pub budget: Budget,
    pub prompt_bytes: u64,
    /// Empty when the job has no prompt of its own.
    pub prompt_sha256: String,
    /// The image reference as asked.
    pub image: String,
    /// The image id it resolved to (`sha256:…`): what runs.
    pub image_id: String,
    /// The command line; empty for the built-in one-prompt worker.
    pub command: Vec<String>,
    /// The agent the command was set up for, e.g. `claude-code`, or empty.
    pub agent: String,
    pub workspace: Option<WorkspaceRecord>,
    /// It asks for server-side tools that reach the internet.
    pub egress: bool,
    /// "local" or "market".
    pub source: String,
    pub requester: String,
    /// The process that will run it, so a later one can tell it has died.
    /// Not part of the audited record: it identifies a process, not the job.
    #[serde(skip)]
    pub host: Option<HostProcess>,
}

/// One plugin's part in a verdict, with what identifies the code that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionRecord {
    pub role: String,
    pub plugin: String,
    pub digest: String,
    pub origin: String,
    /// `name@revision` of the bundle the plugin came from, if any.
    pub bundle: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    /// Why a plugin failed closed (trap, timeout, ...), if it did.
    pub error_class: Option<String>,
    pub elapsed_us: u64,
}

/// The pipeline's combined answer for one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub outcome: Outcome,
    /// What limits granted; `None` when it granted nothing.
    pub grant: Option<Budget>,
    pub decisions: Vec<DecisionRecord>,
    /// What the plugins were asked, as the policy engine records it, so the
    /// decision can be replayed against another plugin later. Opaque here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<Value>,
}

/// What admission did. `snapshot` is the usage the verdict was decided on,
/// before this job's reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "admission", rename_all = "snake_case")]
pub enum Admission {
    Admitted {
        job_id: String,
        snapshot: UsageSnapshot,
    },
    Refused {
        outcome: Outcome,
        snapshot: UsageSnapshot,
    },
}

impl Admission {
    fn of(job_id: &str, verdict: &Verdict, snapshot: UsageSnapshot) -> Admission {
        match verdict.outcome {
            Outcome::Allow => Admission::Admitted {
                job_id: job_id.to_owned(),
                snapshot,
            },
            outcome => Admission::Refused { outcome, snapshot },
        }
    }
}

fn record_decisions(conn: &Connection, job_id: &str, verdict: &Verdict) -> Result<(), StoreError> {
    let ts = now()?;
    let mut stmt = conn
        .prepare(
            "INSERT INTO decisions (job_id, ts, role, plugin, digest, origin, outcome,
                                    reason, error_class, elapsed_us, bundle)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .during("recording policy decisions")?;
    for d in &verdict.decisions {
        stmt.execute(params![
            job_id,
            ts,
            d.role,
            d.plugin,
            d.digest,
            d.origin,
            d.outcome.as_str(),
            d.reason,
            d.error_class,
            d.elapsed_us,
            d.bundle,
        ])
        .during("recording policy decisions")?;
    }
    Ok(())
}

/// Decision rows plus one audit row carrying the job and the whole verdict.
fn record(
    conn: &Connection,
    job: &NewJob,
    kind: &str,
    verdict: &Verdict,
) -> Result<(), StoreError> {
    record_decisions(conn, &job.id, verdict)?;
    let details = json!({
        "job": audit::to_details("the job", job)?,
        "verdict": audit::to_details("the verdict", verdict)?,
    });
    audit::append(conn, kind, &job.id, &details)?;
    Ok(())
}

impl Store {
    /// Decides and records a job's admission in one IMMEDIATE transaction.
    ///
    /// `decide` runs while this process holds the write lock, so keep it to
    /// the policy pipeline. Returns the verdict alongside the admission
    /// because the caller needs its budget and timeout to run the job and
    /// `decide` has handed it over. An `Allow` inserts the job as 'admitted'
    /// and reserves a task and the granted tokens on `day`; anything else
    /// records the refusal and changes no usage. A job id already admitted
    /// is an error, before `decide` runs.
    #[instrument(skip_all, fields(job_id = %job.id))]
    pub fn admit(
        &mut self,
        job: &NewJob,
        day: Date,
        decide: impl FnOnce(&UsageSnapshot) -> Verdict,
    ) -> Result<(Verdict, Admission), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting admission")?;
        if jobs::exists(&tx, &job.id)? {
            return Err(StoreError::JobExists {
                job_id: job.id.clone(),
            });
        }
        let snapshot = usage::snapshot(&tx, day)?;
        let verdict = decide(&snapshot);
        let admitted = verdict.outcome == Outcome::Allow;
        // An ask is not a refusal: the owner may still say yes at the prompt.
        let kind = match verdict.outcome {
            Outcome::Allow => "job.admitted",
            Outcome::Ask => "job.asked",
            Outcome::Deny => "job.refused",
        };
        record(&tx, job, kind, &verdict)?;
        if admitted {
            let grant = verdict.grant.ok_or_else(|| StoreError::NoGrant {
                job_id: job.id.clone(),
            })?;
            jobs::insert(&tx, job, day, &grant)?;
            usage::reserve(&tx, day, grant.tokens)?;
        }
        tx.commit().during("committing admission")?;
        tracing::info!(outcome = %verdict.outcome, "admission decided");
        let admission = Admission::of(&job.id, &verdict, snapshot);
        Ok((verdict, admission))
    }

    /// Records a verdict that admits nothing (a dry run, say): its decisions
    /// and one audit row of `kind`, in one transaction.
    #[instrument(skip_all, fields(job_id = %job.id, kind))]
    pub fn record_verdict(
        &mut self,
        job: &NewJob,
        kind: &str,
        verdict: &Verdict,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting to record a verdict")?;
        record(&tx, job, kind, verdict)?;
        tx.commit().during("committing a verdict")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::super::test_support::{count, sample_job, temp_store, verdict};
    use super::*;
    use time::macros::date;

    const DAY: Date = date!(2026 - 02 - 10);

    /// Allows while fewer than five tasks ran today, like a daily task limit.
    fn five_a_day(snapshot: &UsageSnapshot) -> Verdict {
        if snapshot.tasks_today < 5 {
            verdict(Outcome::Allow, 1000)
        } else {
            verdict(Outcome::Deny, 0)
        }
    }

    #[test]
    fn parallel_processes_cannot_overrun_a_limit() {
        let (dir, store) = temp_store();
        let path = dir.path().join("state.db");
        let start = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let (path, start) = (path.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    let mut own = Store::open(&path).expect("each thread opens its own store");
                    start.wait();
                    let job = sample_job(&format!("job-{n}"));
                    own.admit(&job, DAY, five_a_day).expect("admission").1
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let admitted = results
            .iter()
            .filter(|a| matches!(a, Admission::Admitted { .. }))
            .count();
        assert_eq!(admitted, 5);
        let snapshot = store.usage_snapshot(DAY).unwrap();
        assert_eq!(snapshot.tasks_today, 5);
        assert_eq!(snapshot.tokens_today, 5000);
        assert_eq!(snapshot.running_jobs, 5);
        assert_eq!(count(&store, "SELECT count(*) FROM decisions"), 8);
        let entries = store.audit_entries(None).unwrap();
        let of_kind = |kind: &str| entries.iter().filter(|e| e.kind == kind).count();
        assert_eq!((of_kind("job.admitted"), of_kind("job.refused")), (5, 3));
        assert!(store.verify_audit().unwrap().broken.is_none());
    }

    #[test]
    fn an_allowed_job_is_inserted_reserved_and_audited() {
        let (_dir, mut store) = temp_store();
        let job = sample_job("job-a");
        let (verdict, admission) = store.admit(&job, DAY, five_a_day).unwrap();
        assert_eq!(verdict.grant.map(|g| g.tokens), Some(1000));
        let expected = Admission::Admitted {
            job_id: "job-a".to_owned(),
            snapshot: UsageSnapshot::default(),
        };
        assert_eq!(admission, expected);
        assert_eq!(store.jobs(10).unwrap()[0].id, "job-a");
        let entry = store.audit_entries(None).unwrap().pop().unwrap();
        assert_eq!(
            (entry.kind.as_str(), entry.subject.as_str()),
            ("job.admitted", "job-a")
        );
        assert_eq!(entry.details["verdict"]["outcome"], "allow");
        assert_eq!(entry.details["job"]["budget"]["tokens"], 1024);
        assert_eq!(
            entry.details["job"]["image_id"],
            format!("sha256:{}", "e".repeat(64))
        );
        assert_eq!(
            entry.details["job"]["command"],
            serde_json::json!(["python3", "agent.py"])
        );
    }

    #[test]
    fn a_refusal_records_decisions_and_audit_but_no_job_or_usage() {
        let (_dir, mut store) = temp_store();
        let job = sample_job("job-r");
        let (_, admission) = store
            .admit(&job, DAY, |_| verdict(Outcome::Ask, 1000))
            .unwrap();
        assert!(matches!(
            admission,
            Admission::Refused {
                outcome: Outcome::Ask,
                ..
            }
        ));
        assert_eq!(count(&store, "SELECT count(*) FROM jobs"), 0);
        assert_eq!(count(&store, "SELECT count(*) FROM usage_daily"), 0);
        let decided = "SELECT count(*) FROM decisions WHERE job_id = 'job-r' AND outcome = 'ask'";
        assert_eq!(count(&store, decided), 1);
        let entry = store.audit_entries(None).unwrap().pop().unwrap();
        assert_eq!(
            entry.kind, "job.asked",
            "an ask is recorded as one, not as a refusal"
        );
        assert_eq!(entry.details["verdict"]["decisions"][0]["outcome"], "ask");
    }

    #[test]
    fn a_duplicate_id_is_refused_before_deciding() {
        let (_dir, mut store) = temp_store();
        let job = sample_job("job-d");
        store.admit(&job, DAY, five_a_day).unwrap();
        let err = store
            .admit(&job, DAY, |_| panic!("decide must not run for a duplicate"))
            .unwrap_err();
        assert!(matches!(err, StoreError::JobExists { ref job_id } if job_id == "job-d"));
        assert_eq!(store.usage_snapshot(DAY).unwrap().tasks_today, 1);
    }

    #[test]
    fn a_dry_run_verdict_is_recorded_without_admitting() {
        let (_dir, mut store) = temp_store();
        let job = sample_job("job-dry");
        store
            .record_verdict(&job, "job.dry_run", &verdict(Outcome::Allow, 1000))
            .unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM decisions"), 1);
        assert_eq!(count(&store, "SELECT count(*) FROM jobs"), 0);
        assert_eq!(store.usage_snapshot(DAY).unwrap(), UsageSnapshot::default());
        assert_eq!(store.audit_entries(None).unwrap()[0].kind, "job.dry_run");
    }

    #[test]
    fn outcome_reads_lowercase() {
        assert_eq!(Outcome::Deny.to_string(), "deny");
        assert_eq!(serde_json::to_value(Outcome::Ask).unwrap(), "ask");
    }
}
