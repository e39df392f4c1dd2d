//! A market task as its requester follows it, as a typed state machine:
//! the offers it [`Needs`] and which is [`better`], then [`Posted`] →
//! [`Claimed`] → [`Locked`] → [`Settled`]. Each step takes the
//! signed message or ledger state that moves it on and decides what it
//! means; a step that does not apply leaves the task where it was. Nothing
//! here talks to NATS or the store, so every rule is unit-tested; the
//! command that drives a task (`execute --market`) only waits, publishes
//! and records.

use std::cmp::Ordering;

use futures_util::{Stream, StreamExt as _};

use crate::policy::{Image, image_listed};

use super::MarketError;
use super::ledger::{Ledger, Settlement};
use super::message::Signed;
use super::transport::Stored;
use super::types::{
    Body, Lock, Offer, Part, Refund, RefundReason, Release, Task, TaskResult, TaskState,
};

/// What a task needs of an offer, before any policy is asked.
#[derive(Debug, Clone, Copy)]
pub struct Needs<'a> {
    pub model: &'a str,
    /// Its token budget.
    pub tokens: u64,
    /// A command's image; a prompt runs in the provider's own.
    pub image: Option<&'a Image>,
    /// The most the requester pays.
    pub cap: u64,
}

impl Needs<'_> {
    /// Why `offer` cannot take the task, if it cannot.
    pub fn unmet_by(&self, offer: &Offer) -> Option<String> {
        if !offer.models.iter().any(|m| m == self.model) {
            return Some(format!("does not serve {}", self.model));
        }
        if u64::from(offer.max_tokens) < self.tokens {
            return Some(format!(
                "grants at most {} tokens and this task needs {}",
                offer.max_tokens, self.tokens
            ));
        }
        if let Some(image) = self.image
            && !image_listed(&offer.images, image)
        {
            return Some(format!(
                "runs only {} for the market, not {}",
                offer.images.join(", "),
                image.reference
            ));
        }
        if offer.price > self.cap {
            return Some(format!(
                "asks {} RUV, over the {} this node will pay",
                offer.price, self.cap
            ));
        }
        None
    }
}

/// Which of two fitting offers, `(node, offer, reputation)`, comes first:
/// one with a free slot (a busy provider keeps the task until a slot frees
/// or the claim wait ends), then the cheaper, then the better reputation,
/// then the node id, so every requester orders them alike.
pub fn better(a: (&str, &Offer, f64), b: (&str, &Offer, f64)) -> Ordering {
    let full = |o: &Offer| o.busy >= o.slots;
    full(a.1)
        .cmp(&full(b.1))
        .then(a.1.price.cmp(&b.1.price))
        .then(b.2.total_cmp(&a.2))
        .then(a.0.cmp(b.0))
}

/// Posted, waiting for a claim.
#[derive(Debug, Clone)]
pub struct Posted {
    /// Boxed: a step that does not apply hands the task back.
    task: Box<Task>,
    /// This node: the task's requester.
    requester: String,
}

impl Posted {
    pub fn new(task: Task, requester: String) -> Posted {
        Posted {
            task: Box::new(task),
            requester,
        }
    }

    pub fn task(&self) -> &Task {
        &self.task
    }

    /// Takes `claim` when it is a candidate's, for this task and this
    /// requester, at no more than `bid` (the bid as last changed); any
    /// other claim gives the task back unclaimed.
    pub fn claimed(self, claim: &Signed, bid: u64) -> Result<Claimed, Posted> {
        match &claim.body {
            Body::Claim(c)
                if self.task.candidates.contains(&claim.from)
                    && c.task == self.task.task
                    && c.requester == self.requester
                    && c.price <= bid =>
            {
                Ok(Claimed {
                    provider: claim.from.clone(),
                    price: c.price,
                    task: self.task,
                })
            }
            _ => Err(self),
        }
    }
}

/// Claimed by one provider at a price; its escrow comes next.
#[derive(Debug, Clone)]
pub struct Claimed {
    task: Box<Task>,
    provider: String,
    price: u64,
}

impl Claimed {
    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn price(&self) -> u64 {
        self.price
    }

    /// The escrow to put on the ledger before the provider runs anything.
    pub fn lock(&self) -> Lock {
        Lock {
            task: self.task.task.clone(),
            provider: self.provider.clone(),
            amount: self.price,
            timeout_secs: self.task.timeout_secs,
        }
    }

    /// Locked once `ledger` holds this escrow, for this provider at this
    /// price; otherwise (the balance no longer covered it) still only
    /// claimed.
    pub fn locked(self, ledger: &Ledger) -> Result<Locked, Claimed> {
        match ledger.escrow(&self.task.task) {
            Some(e) if e.provider == self.provider && e.amount == self.price => Ok(Locked {
                claimed: self,
                running: false,
                next_part: 0,
            }),
            _ => Err(self),
        }
    }
}

/// Locked in escrow: the provider runs it, reports, and delivers.
#[derive(Debug, Clone)]
pub struct Locked {
    claimed: Claimed,
    running: bool,
    next_part: u32,
}

/// What a message on the task's status and result subjects means.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The provider started the job.
    Running,
    /// The next piece of the output, still sealed to the requester.
    Output(Part),
    /// The provider reports the job failed or gave the task up.
    Failed,
    /// The result, not yet opened or checked.
    Delivered(TaskResult),
}

impl Locked {
    pub fn provider(&self) -> &str {
        &self.claimed.provider
    }

    pub fn price(&self) -> u64 {
        self.claimed.price
    }

    pub fn task(&self) -> &Task {
        &self.claimed.task
    }

    /// What `msg` means for the task: only the provider's messages about
    /// it count, parts only in order and each once, and `Running` only the
    /// first time. `None` for anything else.
    pub fn on(&mut self, msg: Signed) -> Option<Event> {
        if msg.from != self.claimed.provider {
            return None;
        }
        let id = &self.claimed.task.task;
        match msg.body {
            Body::Status(s) if s.task == *id && s.state == TaskState::Failed => Some(Event::Failed),
            Body::Status(s) if s.task == *id && !self.running => {
                self.running = true;
                Some(Event::Running)
            }
            Body::Part(p) if p.task == *id && p.seq == self.next_part => {
                self.next_part += 1;
                Some(Event::Output(p))
            }
            Body::Result(r) if r.task == *id => Some(Event::Delivered(r)),
            _ => None,
        }
    }

    /// Follows `feed` (the task's status and result subjects, as stored)
    /// until the result comes, the provider reports failure, or `until`.
    /// `open` checks each stored message (signature, freshness, sender);
    /// `seen` hears `Running` and each part of the output as they come.
    pub async fn follow(
        &mut self,
        mut feed: impl Stream<Item = Result<Stored, MarketError>> + Unpin,
        until: tokio::time::Instant,
        mut open: impl FnMut(&Stored) -> Option<Signed>,
        mut seen: impl FnMut(Event),
    ) -> Result<Followed, MarketError> {
        loop {
            let stored = tokio::select! {
                stored = feed.next() => stored,
                () = tokio::time::sleep_until(until) => return Ok(Followed::TimedOut),
            };
            let stored = stored.ok_or_else(|| MarketError::Read {
                what: format!("the status and result of task {}", self.task().task),
                detail: "the feed ended".into(),
            })??;
            let Some(msg) = open(&stored) else {
                continue;
            };
            match self.on(msg) {
                Some(Event::Failed) => return Ok(Followed::ProviderFailed),
                Some(Event::Delivered(result)) => return Ok(Followed::Delivered(result)),
                Some(event) => seen(event),
                None => {}
            }
        }
    }

    /// How the task settles, given how waiting ended and the ledger as it
    /// is now (for the provider's receipt, or its own refund).
    pub fn settle(self, ending: Ending, ledger: &Ledger) -> Settled {
        let task = self.claimed.task.task.clone();
        let refund = |reason| {
            Some(Body::Refund(Refund {
                task: task.clone(),
                reason,
            }))
        };
        let escrow = ledger.escrow(&task);
        match ending {
            Ending::TimedOut | Ending::ProviderFailed => {
                let reason = if ending == Ending::TimedOut {
                    RefundReason::TimedOut
                } else {
                    RefundReason::Failed
                };
                // A provider that gave the task up refunded it itself.
                let gave_up =
                    escrow.is_some_and(|e| matches!(e.settlement, Settlement::Refunded { .. }));
                Settled {
                    outcome: Outcome::Refunded(reason),
                    body: if gave_up { None } else { refund(reason) },
                    paid: None,
                }
            }
            Ending::Delivered {
                verified: Err(_), ..
            } => Settled {
                outcome: Outcome::Refunded(RefundReason::Disputed),
                body: refund(RefundReason::Disputed),
                paid: None,
            },
            Ending::Delivered {
                finished: false, ..
            } => Settled {
                outcome: Outcome::Refunded(RefundReason::Failed),
                body: refund(RefundReason::Failed),
                paid: None,
            },
            Ending::Delivered {
                elapsed_ms,
                finished: true,
                verified: Ok(()),
            } => {
                let price = self.claimed.price;
                // The provider's receipt is on the ledger before its result;
                // without one the whole price is paid.
                let asked = escrow
                    .and_then(|e| e.receipt.as_ref())
                    .map(|r| r.amount.min(price));
                Settled {
                    outcome: Outcome::Completed,
                    body: Some(Body::Release(Release {
                        task,
                        elapsed_ms,
                        amount: asked,
                    })),
                    paid: Some(asked.unwrap_or(price)),
                }
            }
        }
    }
}

/// What following a locked task came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Followed {
    /// Nothing by the lock's timeout.
    TimedOut,
    /// The provider reported that it could not run the task.
    ProviderFailed,
    /// The result, not yet opened or checked.
    Delivered(TaskResult),
}

/// How waiting for the result ended, the result checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// Nothing by the lock's timeout.
    TimedOut,
    /// The provider reported that it could not run the task.
    ProviderFailed,
    /// A result came: whether the job finished on the provider, and whether
    /// the result (and its workspace) opened and verified, with why not.
    Delivered {
        elapsed_ms: u64,
        finished: bool,
        verified: Result<(), String>,
    },
}

/// How a task ended for its requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Refunded(RefundReason),
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Refunded(reason) => reason.as_str(),
        }
    }
}

/// A settled task: its outcome, the ledger entry to publish (none when the
/// provider already refunded it), and what was paid.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub outcome: Outcome,
    pub body: Option<Body>,
    pub paid: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::NodeKey;
    use crate::crypto::testutil::shared_keys;
    use crate::market::ledger::entries::{grant, lock, receipt, task};
    use crate::market::message::{open, seal_at};
    use crate::market::types::{Claim, Status};

    fn signed(key: &NodeKey, body: Body) -> Signed {
        open(&seal_at(key, body, 1_000).unwrap().0).unwrap()
    }

    fn claim(by: &NodeKey, task: &str, requester: &NodeKey, price: u64) -> Signed {
        signed(
            by,
            Body::Claim(Claim {
                task: task.into(),
                requester: requester.node_id(),
                price,
            }),
        )
    }

    /// A ledger where `requester` locked `amount` for t1 with `provider`,
    /// and then `more` entries.
    fn ledger_with(
        [issuer, requester, provider]: [&NodeKey; 3],
        amount: u64,
        more: &[(&NodeKey, Body)],
    ) -> Ledger {
        let mut ledger = Ledger::new([issuer.node_id()], 60_000);
        let mut entries = vec![
            (issuer, grant("g", requester, 100)),
            (requester, lock("t1", provider, amount)),
        ];
        entries.extend(more.iter().cloned());
        for (seq, (key, body)) in entries.into_iter().enumerate() {
            let msg = signed(key, body);
            ledger.apply(seq as u64 + 1, 1_000, Ok(&msg));
        }
        ledger
    }

    fn offer(price: u64, busy: u32) -> Offer {
        Offer {
            slots: 1,
            busy,
            price,
            models: vec!["claude-haiku-4-5".into()],
            max_tokens: 1000,
            images: vec!["tools".into()],
            token_price: 0,
        }
    }

    #[test]
    fn an_offer_must_serve_the_model_budget_image_and_price() {
        let tools = Image {
            reference: "tools:2".into(),
            digest: String::new(),
        };
        let other = Image {
            reference: "other:1".into(),
            digest: String::new(),
        };
        let needs = Needs {
            model: "claude-haiku-4-5",
            tokens: 1000,
            image: Some(&tools),
            cap: 10,
        };
        assert_eq!(needs.unmet_by(&offer(10, 0)), None);
        let unmet = |n: Needs<'_>| n.unmet_by(&offer(10, 0)).unwrap();
        assert!(
            unmet(Needs {
                model: "claude-opus-4-1",
                ..needs
            })
            .contains("does not serve")
        );
        assert!(
            unmet(Needs {
                tokens: 1001,
                ..needs
            })
            .contains("at most 1000 tokens")
        );
        assert!(
            unmet(Needs {
                image: Some(&other),
                ..needs
            })
            .contains("runs only tools")
        );
        assert!(unmet(Needs { cap: 9, ..needs }).contains("over the 9"));
        assert_eq!(
            Needs {
                image: None,
                ..needs
            }
            .unmet_by(&offer(10, 0)),
            None,
            "a prompt"
        );
    }

    #[test]
    fn a_free_slot_comes_first_then_the_price_then_reputation() {
        let (cheap_busy, dear_free, dear_free_known) = (offer(5, 1), offer(9, 0), offer(9, 0));
        let mut ranked = [
            ("a", &cheap_busy, 0.5),
            ("b", &dear_free, 0.5),
            ("c", &dear_free_known, 0.9),
        ];
        ranked.sort_by(|x, y| better(*x, *y));
        let order: Vec<_> = ranked.iter().map(|(n, ..)| *n).collect();
        assert_eq!(order, ["c", "b", "a"]);
    }

    #[test]
    fn only_a_candidates_claim_for_this_task_and_requester_within_the_bid_counts() {
        let [_, requester, provider, stranger] = shared_keys();
        let posted = Posted::new(task(vec![provider.node_id()]), requester.node_id());
        let refused = [
            claim(stranger, "t1", requester, 10),
            claim(provider, "t2", requester, 10),
            claim(provider, "t1", stranger, 10),
            claim(provider, "t1", requester, 21),
        ];
        let mut posted = posted;
        for c in &refused {
            posted = posted
                .claimed(c, 20)
                .expect_err("a claim that may not count");
        }
        let claimed = posted
            .claimed(&claim(provider, "t1", requester, 20), 20)
            .unwrap();
        assert_eq!(
            (claimed.provider(), claimed.price()),
            (&*provider.node_id(), 20)
        );
        assert_eq!(claimed.lock().amount, 20);
        assert_eq!(claimed.lock().timeout_secs, 60);
    }

    #[test]
    fn it_is_locked_only_when_the_ledger_holds_this_escrow() {
        let [issuer, requester, provider, _] = shared_keys();
        let claimed = || {
            Posted::new(task(vec![provider.node_id()]), requester.node_id())
                .claimed(&claim(provider, "t1", requester, 20), 20)
                .unwrap()
        };
        let other_price = ledger_with([issuer, requester, provider], 19, &[]);
        assert!(claimed().locked(&other_price).is_err());
        let empty = Ledger::new([issuer.node_id()], 60_000);
        assert!(claimed().locked(&empty).is_err());
        let ledger = ledger_with([issuer, requester, provider], 20, &[]);
        assert!(claimed().locked(&ledger).is_ok());
    }

    fn locked() -> (Locked, Ledger) {
        let [issuer, requester, provider, _] = shared_keys();
        let ledger = ledger_with([issuer, requester, provider], 20, &[]);
        let locked = Posted::new(task(vec![provider.node_id()]), requester.node_id())
            .claimed(&claim(provider, "t1", requester, 20), 20)
            .unwrap()
            .locked(&ledger)
            .unwrap();
        (locked, ledger)
    }

    #[test]
    fn the_providers_messages_count_in_order_and_once() {
        let [_, _, provider, stranger] = shared_keys();
        let (mut t, _) = locked();
        let status = |state| {
            Body::Status(Status {
                task: "t1".into(),
                state,
                detail: None,
            })
        };
        let part = |seq| {
            Body::Part(Part {
                task: "t1".into(),
                seq,
                payload: String::new(),
            })
        };
        assert_eq!(t.on(signed(stranger, status(TaskState::Running))), None);
        assert_eq!(
            t.on(signed(provider, status(TaskState::Running))),
            Some(Event::Running)
        );
        assert_eq!(t.on(signed(provider, status(TaskState::Running))), None);
        assert_eq!(t.on(signed(provider, part(1))), None, "out of order");
        assert!(matches!(
            t.on(signed(provider, part(0))),
            Some(Event::Output(_))
        ));
        assert_eq!(t.on(signed(provider, part(0))), None, "seen");
        assert!(matches!(
            t.on(signed(provider, part(1))),
            Some(Event::Output(_))
        ));
        assert_eq!(t.on(signed(stranger, status(TaskState::Failed))), None);
        assert_eq!(
            t.on(signed(provider, status(TaskState::Failed))),
            Some(Event::Failed)
        );
    }

    #[test]
    fn following_a_task_reports_its_progress_until_the_result_or_the_deadline() {
        use crate::market::types::TaskResult;

        let [_, _, provider, stranger] = shared_keys();
        let stored = |seq, key: &NodeKey, body| Stored {
            seq,
            at: 1_000,
            subject: String::new(),
            bytes: seal_at(key, body, 1_000).unwrap().0.into(),
        };
        let running = Body::Status(Status {
            task: "t1".into(),
            state: TaskState::Running,
            detail: None,
        });
        let part = Body::Part(Part {
            task: "t1".into(),
            seq: 0,
            payload: "piece".into(),
        });
        let result = TaskResult {
            task: "t1".into(),
            state: "finished".into(),
            sha256: String::new(),
            payload: String::new(),
            input_tokens: 1,
            output_tokens: 2,
            exit_code: None,
            workspace: None,
        };
        let feed = vec![
            Ok(stored(1, stranger, Body::Result(result.clone()))),
            Ok(stored(2, provider, running)),
            Ok(stored(3, provider, part)),
            Ok(stored(4, provider, Body::Result(result.clone()))),
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let later = || tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let open_all = |s: &Stored| open(&s.bytes).ok();
        let (mut t, _) = locked();
        let mut seen = Vec::new();
        let followed = rt
            .block_on(
                t.follow(futures_util::stream::iter(feed), later(), open_all, |e| {
                    seen.push(e)
                }),
            )
            .unwrap();
        assert_eq!(
            followed,
            Followed::Delivered(result),
            "the stranger's is not it"
        );
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], Event::Running);
        assert!(matches!(&seen[1], Event::Output(p) if p.payload == "piece"));

        // Nothing more by the deadline: timed out; a feed that ends is an
        // error, not a result.
        let (mut t, _) = locked();
        let quiet = futures_util::stream::pending::<Result<Stored, MarketError>>();
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
        let followed = rt
            .block_on(t.follow(quiet, soon, open_all, |_| {}))
            .unwrap();
        assert_eq!(followed, Followed::TimedOut);
        let ended = futures_util::stream::iter(Vec::<Result<Stored, MarketError>>::new());
        assert!(
            rt.block_on(t.follow(ended, later(), open_all, |_| {}))
                .is_err()
        );
    }

    #[test]
    fn a_verified_finished_result_pays_the_receipt_and_anything_else_refunds() {
        let [issuer, requester, provider, _] = shared_keys();
        let delivered = |finished, verified| Ending::Delivered {
            elapsed_ms: 5,
            finished,
            verified,
        };
        let (t, ledger) = locked();
        let s = t.clone().settle(delivered(true, Ok(())), &ledger);
        assert_eq!(s.outcome, Outcome::Completed);
        assert_eq!(s.paid, Some(20), "no receipt: the whole price");
        assert!(matches!(
            s.body,
            Some(Body::Release(Release { amount: None, .. }))
        ));

        let with_receipt = ledger_with(
            [issuer, requester, provider],
            20,
            &[(provider, receipt("t1", 7))],
        );
        let s = t.clone().settle(delivered(true, Ok(())), &with_receipt);
        assert_eq!(s.paid, Some(7));
        assert!(matches!(
            s.body,
            Some(Body::Release(Release {
                amount: Some(7),
                ..
            }))
        ));

        let s = t
            .clone()
            .settle(delivered(true, Err("bad digest".into())), &ledger);
        assert_eq!(s.outcome, Outcome::Refunded(RefundReason::Disputed));
        assert_eq!(s.paid, None);
        let s = t.clone().settle(delivered(false, Ok(())), &ledger);
        assert_eq!(s.outcome, Outcome::Refunded(RefundReason::Failed));
        let s = t.clone().settle(Ending::TimedOut, &ledger);
        assert_eq!(s.outcome.as_str(), "timed-out");
        assert!(matches!(s.body, Some(Body::Refund(_))));

        // A provider that gave up refunded the lock itself: nothing to send.
        let given_up = Body::Refund(Refund {
            task: "t1".into(),
            reason: RefundReason::Failed,
        });
        let refunded = ledger_with([issuer, requester, provider], 20, &[(provider, given_up)]);
        let s = t.settle(Ending::ProviderFailed, &refunded);
        assert_eq!(s.outcome, Outcome::Refunded(RefundReason::Failed));
        assert_eq!(s.body, None);
    }
}
