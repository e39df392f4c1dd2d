//! Reputation, computed by any node from the ledger alone: never reported
//! by the node it describes, and the same on every node that replays the
//! same ledger.
//!
//! As a provider, each settled escrow scores:
//! - 1 for a release within half the lock's timeout,
//! - 0.75 for a slower release,
//! - 0.25 for a release whose receipt shows far less use than was paid:
//!   more than ten times the ledger's median RUV per 1,000 tokens over
//!   every paid receipt (once there are three), or any RUV for no tokens,
//! - 0 for a refund (failed, timed out or disputed).
//!
//! As a requester, each settled escrow scores 1 for a release and 0 for a
//! dispute; a provider's failure or timeout says nothing about the
//! requester and is not counted.
//!
//! The score is `(sum + 1) / (count + 2)`: Laplace's rule of succession.
//! A node with no history has 0.5 (neutral, not the top), one good task
//! moves it to 0.67, and only a long record moves it near 0 or 1.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ledger::{Escrow, Ledger, Settlement};
use super::types::RefundReason;

/// What the ledger says about one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reputation {
    /// 0.0 (worst) to 1.0 (best); 0.5 with no history.
    pub as_provider: f64,
    pub as_requester: f64,
    pub completed: u64,
    pub failed: u64,
    pub timed_out: u64,
    /// Results the requester refused as not decrypting or not verifying.
    pub disputed: u64,
    /// Disputes this node raised as a requester.
    pub disputes_raised: u64,
    /// Tasks it requested that were released.
    pub paid_for: u64,
    /// Mean milliseconds from lock to verified result over completed tasks.
    pub mean_ms_to_result: Option<u64>,
    /// Completed tasks whose receipt showed far less use than was paid.
    pub thin_receipts: u64,
}

#[derive(Default)]
struct Tally {
    provider_sum: f64,
    provider_count: u64,
    requester_sum: f64,
    requester_count: u64,
    total_ms: u64,
    rep: Reputation,
}

const FAST_SCORE: f64 = 1.0;
const SLOW_SCORE: f64 = 0.75;
const THIN_SCORE: f64 = 0.25;
/// How far above the median rate a paid receipt is thin.
const THIN_FACTOR: f64 = 10.0;
/// Paid receipts needed before the median means anything.
const MIN_RECEIPTS: usize = 3;

/// Reputation of every node that appears in an escrow.
pub fn all(ledger: &Ledger) -> BTreeMap<String, Reputation> {
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let typical = median_rate(ledger);
    for escrow in ledger.escrows() {
        record(&mut tallies, escrow, typical);
    }
    tallies
        .into_iter()
        .map(|(node, t)| {
            let mut rep = t.rep;
            rep.as_provider = laplace(t.provider_sum, t.provider_count);
            rep.as_requester = laplace(t.requester_sum, t.requester_count);
            rep.mean_ms_to_result = (rep.completed > 0).then(|| t.total_ms / rep.completed);
            (node, rep)
        })
        .collect()
}

/// One node's reputation (neutral when the ledger has never seen it).
pub fn of(ledger: &Ledger, node: &str) -> Reputation {
    all(ledger).remove(node).unwrap_or_else(neutral)
}

/// The reputation of a node with no history.
pub fn neutral() -> Reputation {
    Reputation {
        as_provider: 0.5,
        as_requester: 0.5,
        ..Reputation::default()
    }
}

fn laplace(sum: f64, count: u64) -> f64 {
    (sum + 1.0) / (count as f64 + 2.0)
}

/// RUV paid per 1,000 tokens, for a released escrow with a receipt.
/// `None` without one; infinite for a payment for no tokens.
fn paid_rate(escrow: &Escrow) -> Option<f64> {
    let (Settlement::Released { paid, .. }, Some(receipt)) = (escrow.settlement, &escrow.receipt)
    else {
        return None;
    };
    let tokens = receipt
        .input_tokens()
        .saturating_add(receipt.output_tokens());
    Some(match (paid, tokens) {
        (0, _) => 0.0,
        (_, 0) => f64::INFINITY,
        (paid, tokens) => paid as f64 * 1000.0 / tokens as f64,
    })
}

/// The median of every paid receipt's rate, once there are enough.
fn median_rate(ledger: &Ledger) -> Option<f64> {
    let mut rates: Vec<f64> = ledger
        .escrows()
        .filter_map(paid_rate)
        .filter(|r| r.is_finite())
        .collect();
    if rates.len() < MIN_RECEIPTS {
        return None;
    }
    rates.sort_by(f64::total_cmp);
    Some(rates[rates.len() / 2])
}

fn record(tallies: &mut BTreeMap<String, Tally>, escrow: &Escrow, typical: Option<f64>) {
    let half_timeout_ms = u64::from(escrow.timeout_secs) * 500;
    let thin = paid_rate(escrow).is_some_and(|rate| {
        rate.is_infinite() || typical.is_some_and(|median| rate > median * THIN_FACTOR)
    });
    match escrow.settlement {
        Settlement::Open => {}
        Settlement::Released { elapsed_ms, .. } => {
            let p = tallies.entry(escrow.provider.clone()).or_default();
            p.provider_sum += if thin {
                p.rep.thin_receipts += 1;
                THIN_SCORE
            } else if elapsed_ms <= half_timeout_ms {
                FAST_SCORE
            } else {
                SLOW_SCORE
            };
            p.provider_count += 1;
            p.rep.completed += 1;
            p.total_ms = p.total_ms.saturating_add(elapsed_ms);
            let r = tallies.entry(escrow.requester.clone()).or_default();
            r.requester_sum += 1.0;
            r.requester_count += 1;
            r.rep.paid_for += 1;
        }
        Settlement::Refunded { reason } => {
            let p = tallies.entry(escrow.provider.clone()).or_default();
            p.provider_count += 1;
            match reason {
                RefundReason::Failed => p.rep.failed += 1,
                RefundReason::TimedOut => p.rep.timed_out += 1,
                RefundReason::Disputed => p.rep.disputed += 1,
            }
            if reason == RefundReason::Disputed {
                let r = tallies.entry(escrow.requester.clone()).or_default();
                r.requester_count += 1;
                r.rep.disputes_raised += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::NodeKey;
    use crate::crypto::testutil::shared_keys;
    use crate::market::message::{open, seal_at};
    use crate::market::types::{Body, Grant, Lock, Refund, Release};

    fn replay(issuer: &NodeKey, entries: &[(&NodeKey, Body)]) -> Ledger {
        let mut ledger = Ledger::new([issuer.node_id()], 60_000);
        for (seq, (key, body)) in entries.iter().enumerate() {
            let (bytes, _) = seal_at(key, body.clone(), 1_000).unwrap();
            ledger.apply(seq as u64 + 1, 1_000, Ok(&open(&bytes).unwrap()));
        }
        ledger
    }

    fn lock(task: &str, provider: &NodeKey) -> Body {
        Body::Lock(Lock {
            task: task.into(),
            provider: provider.node_id(),
            amount: 10,
            timeout_secs: 10,
        })
    }

    #[test]
    fn a_new_node_is_neutral_and_history_moves_it() {
        let [issuer, requester, provider, newcomer] = shared_keys();
        let grant = Body::Grant(Grant {
            grant: "g".into(),
            to: requester.node_id(),
            amount: 100,
            memo: String::new(),
        });
        let release = |task: &str, elapsed_ms| {
            Body::Release(Release {
                task: task.into(),
                elapsed_ms,
                amount: None,
            })
        };
        let ledger = replay(
            issuer,
            &[
                (issuer, grant),
                (requester, lock("fast", provider)),
                (requester, release("fast", 1_000)),
                (requester, lock("slow", provider)),
                (requester, release("slow", 9_000)),
                (requester, lock("lost", provider)),
                (
                    requester,
                    Body::Refund(Refund {
                        task: "lost".into(),
                        reason: RefundReason::TimedOut,
                    }),
                ),
                (requester, lock("open", provider)),
            ],
        );
        assert_eq!(of(&ledger, &newcomer.node_id()), neutral());
        let p = of(&ledger, &provider.node_id());
        assert_eq!((p.completed, p.timed_out, p.failed), (2, 1, 0));
        // (1 + 0.75 + 0 + 1) / (3 + 2)
        assert!((p.as_provider - 0.55).abs() < 1e-9);
        assert_eq!(p.mean_ms_to_result, Some(5_000));
        let r = of(&ledger, &requester.node_id());
        // Two paid, the timeout is not the requester's doing: (2 + 1) / (2 + 2).
        assert!((r.as_requester - 0.75).abs() < 1e-9);
        assert!((r.as_provider - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_receipt_far_below_what_was_paid_weighs_against_its_provider() {
        use crate::market::ledger::entries::{receipt, release_of};

        let [issuer, requester, provider, greedy] = shared_keys();
        let grant = Body::Grant(Grant {
            grant: "g".into(),
            to: requester.node_id(),
            amount: 100,
            memo: String::new(),
        });
        // Each receipt is 1,200 tokens: 6 RUV is the usual 5 RUV per 1,000
        // tokens; 10 of 10 is 8.3, within ten times; a receipt asking 10
        // for a job that used nothing is thin whatever the median.
        let mut entries = vec![(issuer, grant)];
        for (task, by, asked) in [("a", provider, 6), ("b", provider, 6), ("c", greedy, 10)] {
            entries.push((requester, lock(task, by)));
            entries.push((by, receipt(task, asked)));
            entries.push((requester, release_of(task, asked)));
        }
        let nothing = Body::Receipt(crate::market::types::Receipt {
            task: "d".into(),
            requests: 0,
            models: Vec::new(),
            replies: Vec::new(),
            amount: 10,
        });
        entries.push((requester, lock("d", greedy)));
        entries.push((greedy, nothing));
        entries.push((requester, release_of("d", 10)));
        let ledger = replay(issuer, &entries);
        let honest = of(&ledger, &provider.node_id());
        assert_eq!((honest.completed, honest.thin_receipts), (2, 0));
        let g = of(&ledger, &greedy.node_id());
        assert_eq!((g.completed, g.thin_receipts), (2, 1));
        // (1 + 0.25 + 1) / (2 + 2)
        assert!((g.as_provider - 0.5625).abs() < 1e-9, "{}", g.as_provider);
    }
}
