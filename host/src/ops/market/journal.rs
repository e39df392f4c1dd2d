//! What this node keeps and hears of a market task it requested: the
//! journal the market's [`trade`] tells each step. Steps go on the job's
//! market record and the audit log, messages are checked (each refusal
//! counted), and what the task hears becomes progress for the command.

use serde_json::json;

use crate::crypto::NodeKey;
use crate::market::message::DropReason;
use crate::market::task::Outcome;
use crate::market::trade::{self, News, Step};
use crate::market::{Signed, Stored};
use crate::store::{MarketStep, Store};

use super::super::OpsError;
use super::super::job::request::JobRequest;
use super::requester::MarketProgress;
use super::{accept, count_drop, open_sealed};

/// A market task's journal on this node: each step on the job's market
/// record and the audit log, each message checked (and each refusal
/// counted), and what the task hears passed on as progress.
pub(super) struct Journal<'a> {
    store: &'a mut Store,
    window_ms: i64,
    job: &'a JobRequest,
    own_keys: &'a [NodeKey],
    progress: &'a mut dyn FnMut(&MarketProgress),
}

impl<'a> Journal<'a> {
    pub(super) fn new(
        store: &'a mut Store,
        window_ms: i64,
        job: &'a JobRequest,
        own_keys: &'a [NodeKey],
        progress: &'a mut dyn FnMut(&MarketProgress),
    ) -> Journal<'a> {
        Journal {
            store,
            window_ms,
            job,
            own_keys,
            progress,
        }
    }
}

/// A step of this node's task as requester: with the provider and price
/// once claimed.
fn requester_step<'a>(
    task: &'a str,
    state: &'a str,
    claimed: Option<(&'a str, u64)>,
    detail: Option<&'a str>,
) -> MarketStep<'a> {
    MarketStep {
        task,
        role: "requester",
        counterpart: claimed.map(|(provider, _)| provider),
        price: claimed.map(|(_, price)| price),
        state,
        detail,
    }
}

impl trade::Journal for Journal<'_> {
    type Error = OpsError;

    fn record(&mut self, step: Step<'_>) -> Result<(), OpsError> {
        let task = self.job.id.as_str();
        let at = |state, lock, detail| requester_step(task, state, lock, detail);
        match step {
            Step::Posted(task) => {
                self.store.market_step(
                    at("posted", None, None),
                    "market.task-posted",
                    &json!({
                        "job": self.job.record(),
                        "bid": task.bid,
                        "candidates": task.candidates,
                    }),
                )?;
                (self.progress)(&MarketProgress::Posted {
                    task: task.task.clone(),
                    bid: task.bid,
                    candidates: task.candidates.clone(),
                });
            }
            Step::Unclaimed { detail } => self.store.market_step(
                at("unclaimed", None, Some(detail)),
                "market.unclaimed",
                &json!({}),
            )?,
            Step::Locking(lock) => self.store.market_step(
                at("locked", Some((&lock.provider, lock.amount)), None),
                "market.lock",
                &json!({ "lock": lock }),
            )?,
            Step::Unfunded { lock, detail } => self.store.market_step(
                at(
                    "unfunded",
                    Some((&lock.provider, lock.amount)),
                    Some(detail),
                ),
                "market.unfunded",
                &json!({}),
            )?,
            Step::Settled {
                provider,
                price,
                outcome,
                elapsed_ms,
                detail,
            } => {
                let kind = if outcome == Outcome::Completed {
                    "market.release"
                } else {
                    "market.refund"
                };
                let state = outcome.as_str();
                self.store.market_step(
                    at(state, Some((provider, price)), detail),
                    kind,
                    &json!({ "outcome": state, "elapsed_ms": elapsed_ms, "detail": detail }),
                )?;
            }
        }
        Ok(())
    }

    fn check(&mut self, stored: &Stored, from: Option<&str>) -> Option<Signed> {
        accept(self.store, &stored.bytes, stored.at, self.window_ms, from)
    }

    fn dropped(&mut self, reason: DropReason) {
        count_drop(self.store, reason);
    }

    fn heard(&mut self, news: News) {
        let progress = match news {
            News::Claimed { provider, price } => MarketProgress::Claimed { provider, price },
            News::Locked { amount } => MarketProgress::Locked { amount },
            News::Running => MarketProgress::Running,
            News::Output(part) => {
                match open_sealed(self.own_keys, &part.payload, "a part of the output") {
                    Ok(piece) => MarketProgress::Output(piece),
                    Err(e) => {
                        tracing::warn!(error = %e, "skipped a part of the output");
                        return;
                    }
                }
            }
        };
        (self.progress)(&progress);
    }
}
