//! The host's side of a job's gateway: what it meters goes to the database
//! and the audit log, to whoever watches the job's progress, and to the
//! process's metrics.
//!
//! The gateway reports on its own worker threads, in the middle of a
//! request; a SQLite commit there (an fsync) would sit in every request's
//! path. So reports go over a channel to one writer thread with its own
//! connection, which keeps the newest totals when several queue up. A
//! failed write is logged, not fatal: the job's end settles the totals
//! again from the gateway's own count.

use std::sync::{Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::gateway::{GatewayEvent, Meter, Metered, RequestRecord};
use crate::metrics::{self, GatewayRequest};
use crate::store::{MeteredUsage, Store};

enum Write {
    Usage(Metered),
    Audit(&'static str, Value),
}

/// The gateway's [`Meter`] for one job.
pub(crate) struct StoreMeter {
    /// `None` once closed: the job is settling, and reports after that
    /// (a reply cut off at shutdown) are in the gateway's final totals.
    writes: Mutex<Option<mpsc::Sender<Write>>>,
    progress: watch::Sender<Metered>,
    job_id: String,
    /// The grant in tokens, for the budget left.
    budget: u64,
}

/// The writer thread; joining it waits until every report is written.
pub(crate) struct Writer(JoinHandle<()>);

impl Writer {
    pub fn finish(self) {
        if self.0.join().is_err() {
            tracing::warn!("the job's metering writer panicked; the job's end settles its usage");
        }
    }
}

impl StoreMeter {
    /// A meter writing to `store` for `job_id`, granted `budget` tokens,
    /// and a receiver that sees the totals as they change.
    pub fn start(
        job_id: &str,
        budget: u64,
        store: Store,
    ) -> (StoreMeter, Writer, watch::Receiver<Metered>) {
        let (writes, queue) = mpsc::channel();
        let (progress, watched) = watch::channel(Metered::default());
        let writer_job = job_id.to_owned();
        let writer = std::thread::spawn(move || write_all(&writer_job, store, &queue));
        let meter = StoreMeter {
            writes: Mutex::new(Some(writes)),
            progress,
            job_id: job_id.to_owned(),
            budget,
        };
        (meter, Writer(writer), watched)
    }

    /// Stops taking reports, so the writer can finish what it has.
    pub fn close(&self) {
        self.writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn send(&self, write: Write) {
        let writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        // A send fails only if the writer died, which it has reported.
        if let Some(writes) = writes.as_ref() {
            let _ = writes.send(write);
        }
    }
}

fn write_all(job_id: &str, mut store: Store, queue: &mpsc::Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut latest = None;
        let mut pending = vec![first];
        pending.extend(queue.try_iter());
        for write in pending {
            match write {
                Write::Usage(totals) => latest = Some(totals),
                Write::Audit(kind, details) => {
                    if let Err(e) = store.append_audit(kind, job_id, &details) {
                        tracing::warn!(%job_id, error = %e, "could not record {kind}");
                    }
                }
            }
        }
        if let Some(totals) = latest
            && let Err(e) = store.record_metered(job_id, usage(totals))
        {
            tracing::warn!(%job_id, error = %e, "could not record metered usage");
        }
    }
}

pub(crate) fn usage(totals: Metered) -> MeteredUsage {
    MeteredUsage {
        requests: totals.requests,
        input_tokens: totals.input_tokens,
        output_tokens: totals.output_tokens,
    }
}

impl Meter for StoreMeter {
    fn usage(&self, totals: Metered) {
        self.progress.send_replace(totals);
        metrics::global().job_used(&self.job_id, self.budget, totals.total_tokens());
        self.send(Write::Usage(totals));
    }

    fn event(&self, event: GatewayEvent) {
        let (kind, details) = match &event {
            GatewayEvent::Refused { reason, status } => {
                metrics::global().refusal(*status);
                (
                    "gateway.refused",
                    json!({ "reason": reason, "status": status }),
                )
            }
            GatewayEvent::UpstreamError { status, error_type } => (
                "gateway.upstream_error",
                json!({ "status": status, "error_type": error_type }),
            ),
            GatewayEvent::Retried {
                status,
                attempt,
                wait,
            } => (
                "gateway.retried",
                json!({ "status": status, "attempt": attempt, "wait_ms": wait.as_millis() as u64 }),
            ),
        };
        self.send(Write::Audit(kind, details));
    }

    fn request(&self, r: RequestRecord) {
        metrics::global().request(&GatewayRequest {
            endpoint: r.endpoint,
            model: &r.model,
            status: r.status,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            took: r.took,
        });
        let clamped = r.max_tokens_sent < r.max_tokens_asked;
        let details = json!({
            "endpoint": r.endpoint,
            "model": r.model,
            "status": r.status,
            "max_tokens": r.max_tokens_asked,
            "max_tokens_sent": r.max_tokens_sent,
            "clamped": clamped,
            "input_bound": r.input_bound,
            "input_tokens": r.input_tokens,
            "cache_creation_tokens": r.cache_creation_tokens,
            "cache_read_tokens": r.cache_read_tokens,
            "output_tokens": r.output_tokens,
            "request_id": r.request_id,
            "betas_dropped": r.betas_dropped,
        });
        self.send(Write::Audit("gateway.request", details));
    }
}
