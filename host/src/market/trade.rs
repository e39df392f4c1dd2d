//! The requester's side of a task, driven from post to settlement: the
//! task is posted to the chosen offers, the first claim that counts is
//! taken, its price is locked in escrow, the provider's status and result
//! are followed to the end, and the task settles. What each message means
//! is [`task`](super::task)'s; this drives those rules over an
//! [`Exchange`] and tells a [`Journal`] every step, so the whole flow is
//! unit-tested on an in-memory market. Opening what came back is the
//! caller's: between [`post`] and [`Ended::settle`] it decrypts and checks
//! the result with [`Following::end`].

use std::cell::RefCell;
use std::time::{Duration, Instant};

use super::MarketError;
use super::exchange::Exchange;
use super::ledger::Ledger;
use super::message::{DropReason, Signed};
use super::replay::{catch_up, catch_up_to};
use super::task::{Ending, Event, Followed, Locked, Outcome, Posted, Settled};
use super::transport::Stored;
use super::types::{Body, Lock, Part, Receipt, Task, TaskResult};

/// What the requester's node keeps and hears as its task goes.
pub trait Journal {
    type Error: From<MarketError>;
    /// Records that the task reached `step`, before the step's message (if
    /// any) is published; an error stops the task there.
    fn record(&mut self, step: Step<'_>) -> Result<(), Self::Error>;
    /// Opens a stored message: its signature, its freshness, and its
    /// sender when `from` is given. Whatever it refuses it counts.
    fn check(&mut self, stored: &Stored, from: Option<&str>) -> Option<Signed>;
    /// Counts a message that verified but does not count for the task.
    fn dropped(&mut self, reason: DropReason);
    /// Hears how the task goes, for whoever waits on it.
    fn heard(&mut self, news: News);
}

/// A step of the task that the journal records.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// About to be posted to its candidates.
    Posted(&'a Task),
    /// Nobody claimed it in time.
    Unclaimed { detail: &'a str },
    /// Claimed; this escrow is about to go on the ledger.
    Locking(&'a Lock),
    /// The escrow did not apply.
    Unfunded { lock: &'a Lock, detail: &'a str },
    /// Settled, with the ledger entry that settles it about to be
    /// published. `elapsed_ms` counts from the lock.
    Settled {
        provider: &'a str,
        price: u64,
        outcome: Outcome,
        elapsed_ms: u64,
        detail: Option<&'a str>,
    },
}

/// How the task goes, as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum News {
    Claimed {
        provider: String,
        price: u64,
    },
    Locked {
        amount: u64,
    },
    Running,
    /// The next piece of the output, still sealed to this node.
    Output(Part),
}

/// Where posting a task got to.
#[derive(Debug)]
pub enum Reached {
    /// Nobody claimed it in time; why, for people.
    Unclaimed { detail: String },
    /// A provider claimed it, and the escrow did not apply (the balance no
    /// longer covered it).
    Unfunded {
        provider: String,
        price: u64,
        detail: String,
    },
    /// Locked, and followed to its end.
    Followed(Box<Following>),
}

/// A locked task whose feed came to an end.
#[derive(Debug)]
pub struct Following {
    locked: Locked,
    followed: Followed,
    locked_at: Instant,
}

/// Posts `task`, waits up to `claim_wait` for its claim, locks the claimed
/// price, and follows the task until the provider's result, its failure,
/// or the task's timeout after the lock. `ledger` is brought up to date on
/// the way.
pub async fn post<J: Journal>(
    market: &impl Exchange,
    journal: &mut J,
    task: Task,
    ledger: &mut Ledger,
    claim_wait: Duration,
) -> Result<Reached, J::Error> {
    let me = market.node();
    journal.record(Step::Posted(&task))?;
    market.publish(Body::Task(task.clone())).await?;
    let posted = Posted::new(task, me.clone());
    let id = posted.task().task.clone();

    let claim = market.await_claim(&id, claim_wait).await?;
    let claimed = match claim.and_then(|stored| journal.check(&stored, None)) {
        Some(msg) => {
            let bid = current_bid(market, posted.task(), |s| journal.check(s, Some(&me))).await?;
            posted.claimed(&msg, bid).map_err(|_| {
                journal.dropped(DropReason::NotAuthorised);
            })
        }
        None => Err(()),
    };
    let Ok(claimed) = claimed else {
        let detail = format!(
            "no provider claimed the task within {} s (market.claimWaitSecs)",
            claim_wait.as_secs()
        );
        journal.record(Step::Unclaimed { detail: &detail })?;
        return Ok(Reached::Unclaimed { detail });
    };
    let (provider, price) = (claimed.provider().to_owned(), claimed.price());
    journal.heard(News::Claimed {
        provider: provider.clone(),
        price,
    });

    // The escrow, before the provider runs anything.
    let lock = claimed.lock();
    journal.record(Step::Locking(&lock))?;
    let stored_at = market.publish(Body::Lock(lock.clone())).await?;
    catch_up_to(market, ledger, stored_at).await?;
    let Ok(mut locked) = claimed.locked(ledger) else {
        let detail = "the lock was not applied (the balance no longer covers it)".to_owned();
        journal.record(Step::Unfunded {
            lock: &lock,
            detail: &detail,
        })?;
        return Ok(Reached::Unfunded {
            provider,
            price,
            detail,
        });
    };
    journal.heard(News::Locked { amount: price });
    let locked_at = Instant::now();

    // Both feeds are pushed as they are stored: nothing is asked again on
    // a timer.
    let until = tokio::time::Instant::now() + Duration::from_secs(u64::from(lock.timeout_secs));
    let statuses = market.watch(&format!("cmm.status.{id}"), 1).await?;
    let results = market.watch(&format!("cmm.result.{id}"), 1).await?;
    let journal = RefCell::new(journal);
    let followed = locked
        .follow(
            futures_util::stream::select(statuses, results),
            until,
            |stored| journal.borrow_mut().check(stored, Some(&provider)),
            |event| {
                let news = match event {
                    Event::Running => News::Running,
                    Event::Output(part) => News::Output(part),
                    Event::Failed | Event::Delivered(_) => return,
                };
                journal.borrow_mut().heard(news);
            },
        )
        .await?;
    Ok(Reached::Followed(Box::new(Following {
        locked,
        followed,
        locked_at,
    })))
}

/// The task's bid as its requester last changed it: the last of its bids
/// that `check` accepts as the requester's, or the bid it was posted with.
pub async fn current_bid(
    market: &impl Exchange,
    task: &Task,
    mut check: impl FnMut(&Stored) -> Option<Signed>,
) -> Result<u64, MarketError> {
    let bids = market.read(&format!("cmm.bid.{}", task.task)).await?;
    Ok(bids
        .iter()
        .filter_map(&mut check)
        .filter_map(|m| match m.body {
            Body::Bid(b) if b.task == task.task => Some(b.bid),
            _ => None,
        })
        .last()
        .unwrap_or(task.bid))
}

impl Following {
    /// How waiting ended, with the result (when one came) opened and
    /// checked by `open`, which says why when it does not verify.
    pub fn end<T>(self, open: impl FnOnce(&TaskResult) -> Result<T, String>) -> Ended<T> {
        let elapsed_ms = u64::try_from(self.locked_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let timeout_secs = self.locked.task().timeout_secs;
        let (ending, opened, detail, result) = match self.followed {
            Followed::TimedOut => (
                Ending::TimedOut,
                None,
                Some(format!("no result within {timeout_secs} s")),
                None,
            ),
            Followed::ProviderFailed => (
                Ending::ProviderFailed,
                None,
                Some("the provider reported that it could not run the task".to_owned()),
                None,
            ),
            Followed::Delivered(result) => {
                let opened = open(&result);
                let finished = result.state == "finished";
                let detail = match &opened {
                    Err(why) => Some(why.clone()),
                    Ok(_) if !finished => {
                        Some(format!("the job ended {} on the provider", result.state))
                    }
                    Ok(_) => None,
                };
                let ending = Ending::Delivered {
                    elapsed_ms,
                    finished,
                    verified: opened.as_ref().map(drop).map_err(Clone::clone),
                };
                (ending, opened.ok(), detail, Some(result))
            }
        };
        Ended {
            locked: self.locked,
            ending,
            elapsed_ms,
            opened,
            detail,
            result,
        }
    }
}

/// A followed task, its result checked, ready to settle.
#[derive(Debug)]
pub struct Ended<T> {
    locked: Locked,
    ending: Ending,
    elapsed_ms: u64,
    opened: Option<T>,
    detail: Option<String>,
    result: Option<TaskResult>,
}

/// A settled task, as its requester reports it.
#[derive(Debug)]
pub struct Closed<T> {
    pub provider: String,
    pub price: u64,
    pub settled: Settled,
    /// What `open` made of the result, when it verified.
    pub opened: Option<T>,
    /// Why the task did not complete, when it did not.
    pub detail: Option<String>,
    /// The result as delivered, verified or not.
    pub result: Option<TaskResult>,
    /// The provider's receipt, as the ledger took it.
    pub receipt: Option<Receipt>,
}

impl<T> Ended<T> {
    /// Settles: with the ledger brought up to date (the provider's receipt,
    /// or its own refund, is on it by now), pays the receipt's amount on a
    /// verified finished result and refunds otherwise, unless the provider
    /// refunded already.
    pub async fn settle<J: Journal>(
        self,
        market: &impl Exchange,
        journal: &mut J,
        ledger: &mut Ledger,
    ) -> Result<Closed<T>, J::Error> {
        catch_up(market, ledger).await?;
        let provider = self.locked.provider().to_owned();
        let price = self.locked.price();
        let id = self.locked.task().task.clone();
        let settled = self.locked.settle(self.ending, ledger);
        journal.record(Step::Settled {
            provider: &provider,
            price,
            outcome: settled.outcome,
            elapsed_ms: self.elapsed_ms,
            detail: self.detail.as_deref(),
        })?;
        if let Some(body) = &settled.body {
            market.publish(body.clone()).await?;
        }
        Ok(Closed {
            receipt: ledger.escrow(&id).and_then(|e| e.receipt.clone()),
            provider,
            price,
            settled,
            opened: self.opened,
            detail: self.detail,
            result: self.result,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::NodeKey;
    use crate::crypto::testutil::shared_keys;
    use crate::market::ledger::entries::{grant, receipt, refund, task};
    use crate::market::memory::{Answer, Memory};
    use crate::market::message;
    use crate::market::types::{Bid, Claim, RefundReason, Status, TaskState};

    /// What the requester's node heard and kept.
    #[derive(Default)]
    struct Kept {
        steps: Vec<String>,
        refused: usize,
        dropped: Vec<DropReason>,
        news: Vec<News>,
    }

    impl Journal for Kept {
        type Error = MarketError;

        fn record(&mut self, step: Step<'_>) -> Result<(), MarketError> {
            self.steps.push(match step {
                Step::Posted(_) => "posted".into(),
                Step::Unclaimed { .. } => "unclaimed".into(),
                Step::Locking(lock) => format!("locking {}", lock.amount),
                Step::Unfunded { .. } => "unfunded".into(),
                Step::Settled { outcome, .. } => format!("settled {}", outcome.as_str()),
            });
            Ok(())
        }

        fn check(&mut self, stored: &Stored, from: Option<&str>) -> Option<Signed> {
            let msg = message::open(&stored.bytes)
                .ok()
                .filter(|m| from.is_none_or(|f| f == m.from));
            self.refused += usize::from(msg.is_none());
            msg
        }

        fn dropped(&mut self, reason: DropReason) {
            self.dropped.push(reason);
        }

        fn heard(&mut self, news: News) {
            self.news.push(news);
        }
    }

    struct Nodes {
        issuer: &'static NodeKey,
        requester: &'static NodeKey,
        provider: &'static NodeKey,
        stranger: &'static NodeKey,
    }

    /// A market where the issuer granted the requester `balance`, seen by
    /// the requester, and its ledger.
    fn market(balance: u64) -> (Memory, Ledger, Nodes) {
        let [issuer, requester, provider, stranger] = shared_keys();
        let market = Memory::new(requester);
        market.put(issuer, grant("g", requester, balance));
        let ledger = Ledger::new([issuer.node_id()], 60_000);
        let nodes = Nodes {
            issuer,
            requester,
            provider,
            stranger,
        };
        (market, ledger, nodes)
    }

    /// What the provider earned and what the requester has available,
    /// once `ledger` has caught up with the market.
    async fn balances(market: &Memory, ledger: &mut Ledger, n: &Nodes) -> (u64, u64) {
        crate::market::replay::catch_up(market, ledger)
            .await
            .unwrap();
        (
            ledger.account(&n.provider.node_id()).earned,
            ledger.account(&n.requester.node_id()).available,
        )
    }

    /// The provider claims t1 at `price` and answers the lock with
    /// `on_lock`.
    fn provider_plays(market: &Memory, n: &Nodes, price: u64, on_lock: Vec<Answer>) {
        let (provider, requester) = (n.provider, n.requester);
        let mut on_lock = Some(on_lock);
        market.answer(move |body| match body {
            Body::Task(_) => vec![claim(provider, requester, price)],
            Body::Lock(_) => on_lock.take().unwrap_or_default(),
            _ => vec![],
        });
    }

    fn claim(by: &'static NodeKey, to: &NodeKey, price: u64) -> Answer {
        Answer::Claim(
            by,
            Claim {
                task: "t1".into(),
                requester: to.node_id(),
                price,
            },
        )
    }

    fn status(by: &'static NodeKey, state: TaskState) -> Answer {
        Answer::publish(
            by,
            Body::Status(Status {
                task: "t1".into(),
                state,
                detail: None,
            }),
        )
    }

    fn result(by: &'static NodeKey, sha256: &str) -> Answer {
        Answer::publish(
            by,
            Body::Result(TaskResult {
                task: "t1".into(),
                state: "finished".into(),
                sha256: sha256.into(),
                payload: String::new(),
                input_tokens: 1000,
                output_tokens: 200,
                exit_code: None,
                workspace: None,
            }),
        )
    }

    /// Opens a result as the requester would: only the genuine digest
    /// verifies.
    fn open(result: &TaskResult) -> Result<&'static str, String> {
        match result.sha256.as_str() {
            "genuine" => Ok("the output"),
            _ => Err("the result does not match its digest".into()),
        }
    }

    const WAIT: Duration = Duration::from_secs(30);

    /// Posts task t1 to `provider` alone.
    async fn post_t1(
        market: &Memory,
        kept: &mut Kept,
        ledger: &mut Ledger,
        provider: &NodeKey,
    ) -> Reached {
        let task = task(vec![provider.node_id()]);
        post(market, kept, task, ledger, WAIT).await.unwrap()
    }

    async fn settle(
        market: &Memory,
        kept: &mut Kept,
        ledger: &mut Ledger,
        reached: Reached,
    ) -> Closed<&'static str> {
        let Reached::Followed(following) = reached else {
            panic!("not followed: {reached:?}");
        };
        following
            .end(open)
            .settle(market, kept, ledger)
            .await
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivered_result_is_paid_what_the_receipt_asks() {
        let (market, mut ledger, n) = market(100);
        let (provider, stranger) = (n.provider, n.stranger);
        provider_plays(
            &market,
            &n,
            15,
            vec![
                status(provider, TaskState::Running),
                Answer::publish(
                    provider,
                    Body::Part(Part {
                        task: "t1".into(),
                        seq: 0,
                        payload: "sealed".into(),
                    }),
                ),
                // A stranger's result is not the provider's.
                result(stranger, "forged"),
                Answer::publish(provider, receipt("t1", 12)),
                result(provider, "genuine"),
            ],
        );
        let mut kept = Kept::default();
        let reached = post_t1(&market, &mut kept, &mut ledger, provider).await;
        let closed = settle(&market, &mut kept, &mut ledger, reached).await;

        assert_eq!(closed.settled.outcome, Outcome::Completed);
        assert_eq!(closed.settled.paid, Some(12), "the receipt's amount");
        assert_eq!(closed.opened, Some("the output"));
        assert_eq!(closed.receipt.map(|r| r.amount), Some(12));
        assert_eq!(kept.steps, ["posted", "locking 15", "settled completed"]);
        assert_eq!(kept.refused, 1, "the stranger's result");
        assert_eq!(
            kept.news,
            [
                News::Claimed {
                    provider: provider.node_id(),
                    price: 15
                },
                News::Locked { amount: 15 },
                News::Running,
                News::Output(Part {
                    task: "t1".into(),
                    seq: 0,
                    payload: "sealed".into()
                }),
            ]
        );
        assert_eq!(balances(&market, &mut ledger, &n).await, (12, 88));
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_that_does_not_count_leaves_the_task_unclaimed() {
        let (market, mut ledger, n) = market(100);
        let (provider, requester, stranger) = (n.provider, n.requester, n.stranger);
        // Only the provider is a candidate; the stranger claims first.
        market.answer(move |body| match body {
            Body::Task(_) => vec![claim(stranger, requester, 10)],
            _ => vec![],
        });
        let mut kept = Kept::default();
        let reached = post_t1(&market, &mut kept, &mut ledger, provider).await;
        assert!(
            matches!(&reached, Reached::Unclaimed { detail } if detail.contains("within 30 s")),
            "{reached:?}"
        );
        assert_eq!(kept.steps, ["posted", "unclaimed"]);
        assert_eq!(kept.dropped, [DropReason::NotAuthorised]);
        assert!(
            market.stored("cmm.ledger.lock").is_empty(),
            "nothing locked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_requesters_own_bid_raises_what_a_claim_may_ask() {
        for (bidder, counts) in [(1, true), (3, false)] {
            let (market, mut ledger, n) = market(100);
            let (provider, requester) = (n.provider, n.requester);
            let by = &shared_keys()[bidder];
            market.put(
                by,
                Body::Bid(Bid {
                    task: "t1".into(),
                    bid: 30,
                }),
            );
            // Over the task's bid of 20, within the raised one.
            market.answer(move |body| match body {
                Body::Task(_) => vec![claim(provider, requester, 25)],
                _ => vec![],
            });
            let mut kept = Kept::default();
            let mut task = task(vec![provider.node_id()]);
            task.timeout_secs = 1;
            let reached = post(&market, &mut kept, task, &mut ledger, WAIT)
                .await
                .unwrap();
            assert_eq!(
                matches!(reached, Reached::Followed(_)),
                counts,
                "a bid from node {bidder}: {reached:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_the_balance_does_not_cover_is_unfunded() {
        let (market, mut ledger, n) = market(10);
        let (provider, requester) = (n.provider, n.requester);
        provider_plays(&market, &n, 15, vec![]);
        let mut kept = Kept::default();
        let reached = post_t1(&market, &mut kept, &mut ledger, provider).await;
        assert!(
            matches!(&reached, Reached::Unfunded { price: 15, .. }),
            "{reached:?}"
        );
        assert_eq!(kept.steps, ["posted", "locking 15", "unfunded"]);
        assert_eq!(ledger.account(&requester.node_id()).available, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn no_result_by_the_timeout_is_refunded_by_the_requester() {
        let (market, mut ledger, n) = market(100);
        let provider = n.provider;
        provider_plays(&market, &n, 15, vec![status(provider, TaskState::Running)]);
        let mut kept = Kept::default();
        let reached = post_t1(&market, &mut kept, &mut ledger, provider).await;
        let closed = settle(&market, &mut kept, &mut ledger, reached).await;
        assert_eq!(
            closed.settled.outcome,
            Outcome::Refunded(RefundReason::TimedOut)
        );
        assert_eq!(closed.detail.as_deref(), Some("no result within 60 s"));
        assert_eq!(market.stored("cmm.ledger.refund").len(), 1);
        assert_eq!(balances(&market, &mut ledger, &n).await, (0, 100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_that_gives_up_and_refunds_is_not_refunded_twice() {
        let (market, mut ledger, n) = market(100);
        let provider = n.provider;
        provider_plays(
            &market,
            &n,
            15,
            vec![
                Answer::publish(provider, refund("t1", RefundReason::Failed)),
                status(provider, TaskState::Failed),
            ],
        );
        let mut kept = Kept::default();
        let reached = post_t1(&market, &mut kept, &mut ledger, provider).await;
        let closed = settle(&market, &mut kept, &mut ledger, reached).await;
        assert_eq!(
            closed.settled.outcome,
            Outcome::Refunded(RefundReason::Failed)
        );
        assert_eq!(closed.settled.body, None);
        assert_eq!(market.stored("cmm.ledger.refund").len(), 1, "its own");
        assert_eq!(kept.steps.last().unwrap(), "settled failed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_result_that_does_not_verify_is_disputed_and_nothing_is_paid() {
        let (market, mut ledger, n) = market(100);
        let provider = n.provider;
        provider_plays(
            &market,
            &n,
            15,
            vec![
                Answer::publish(provider, receipt("t1", 15)),
                result(provider, "tampered"),
            ],
        );
        let mut kept = Kept::default();
        let reached = post_t1(&market, &mut kept, &mut ledger, provider).await;
        let closed = settle(&market, &mut kept, &mut ledger, reached).await;
        assert_eq!(
            closed.settled.outcome,
            Outcome::Refunded(RefundReason::Disputed)
        );
        assert_eq!(closed.opened, None);
        assert_eq!(
            closed.detail.as_deref(),
            Some("the result does not match its digest")
        );
        assert!(market.stored("cmm.ledger.release").is_empty());
        let mut replayed = Ledger::new([n.issuer.node_id()], 60_000);
        assert_eq!(balances(&market, &mut replayed, &n).await, (0, 100));
    }
}
