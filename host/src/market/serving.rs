//! A market task as its provider serves it: a task [`addressed`] to this
//! node, kept on the [`Desk`] until the policies take it, [`Taken`] once
//! its claim won, locked once the requester's escrow
//! of it for this node at the claimed price is on the ledger, and settled
//! by the [`Receipt`] of what its job used upstream. The rules live here,
//! unit-tested without NATS; `serve` waits, runs and publishes.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use super::ledger::Ledger;
use super::message::{DropReason, ReplayGuard, Signed};
use super::types::{Bid, Body, Claim, ModelUsage, Receipt, Task};

/// `msg` as a task this node may take: posted by another node, naming
/// this one among its candidates.
pub fn addressed<'a>(msg: &'a Signed, me: &str) -> Option<&'a Task> {
    match &msg.body {
        Body::Task(task) if msg.from != me && task.candidates.iter().any(|c| c == me) => Some(task),
        _ => None,
    }
}

/// The tasks addressed to this node that it has not taken, kept while
/// their requesters wait for a claim: a slot freeing up or a raised bid
/// brings one back to the policies, which judge a task once per bid.
#[derive(Debug)]
pub struct Desk {
    /// This node.
    me: String,
    pending: HashMap<String, Pending>,
    /// A message republished within the window is the same message again:
    /// its id gives it away.
    replays: ReplayGuard,
}

/// What a message on the tasks feed is to the desk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    /// A task for this node, new to it: now on the desk.
    Posted(String),
    /// The task's requester raised its bid.
    Raised { task: String, bid: u64 },
    /// Refused, for this reason.
    Refused(DropReason),
    /// Nothing for this node.
    Ignored,
}

#[derive(Debug)]
struct Pending {
    msg: Signed,
    task: Task,
    /// Server time of the post (Unix ms).
    posted: i64,
    /// The bid the policies last judged, once they have.
    judged: Option<u64>,
    /// A handler has it now.
    handling: bool,
}

impl Desk {
    /// The desk of node `me`, refusing messages replayed within
    /// `window_ms`.
    pub fn new(me: String, window_ms: i64) -> Desk {
        Desk {
            me,
            pending: HashMap::new(),
            replays: ReplayGuard::new(window_ms),
        }
    }

    /// Takes `msg`, checked and read from the tasks feed where it was
    /// stored at server time `at`. A task addressed to this node goes on
    /// the desk unless it is there already or `handled` says this node saw
    /// it before (an earlier run of `serve`); a bid may raise a task on
    /// the desk ([`Desk::raise`]). Only `handled` can fail.
    pub fn receive<E>(
        &mut self,
        msg: Signed,
        at: i64,
        handled: impl FnOnce(&str) -> Result<bool, E>,
    ) -> Result<Intake, E> {
        if let Err(reason) = self.replays.admit(&msg, at) {
            return Ok(Intake::Refused(reason));
        }
        Ok(match &msg.body {
            Body::Task(task) => {
                let id = task.task.clone();
                if addressed(&msg, &self.me).is_none() || self.knows(&id) || handled(&id)? {
                    return Ok(Intake::Ignored);
                }
                let task = task.clone();
                self.post(msg, task, at);
                Intake::Posted(id)
            }
            Body::Bid(bid) => match self.raise(&msg, bid) {
                Err(reason) => Intake::Refused(reason),
                Ok(None) => Intake::Ignored,
                Ok(Some(raised)) => Intake::Raised {
                    task: bid.task.clone(),
                    bid: raised,
                },
            },
            _ => Intake::Ignored,
        })
    }

    pub fn knows(&self, task: &str) -> bool {
        self.pending.contains_key(task)
    }

    /// Keeps task `msg` (its body `task`), posted at server time `posted`.
    fn post(&mut self, msg: Signed, task: Task, posted: i64) {
        self.pending.insert(
            task.task.clone(),
            Pending {
                msg,
                task,
                posted,
                judged: None,
                handling: false,
            },
        );
    }

    /// Applies `bid` (signed as `msg`) to its task: only the task's
    /// requester may change it, and only a raise is news to a provider that
    /// passed at the lower one. The new bid when it is one.
    fn raise(&mut self, msg: &Signed, bid: &Bid) -> Result<Option<u64>, DropReason> {
        let Some(p) = self.pending.get_mut(&bid.task) else {
            return Ok(None);
        };
        if msg.from != p.msg.from {
            return Err(DropReason::NotAuthorised);
        }
        if bid.bid <= p.task.bid {
            return Ok(None);
        }
        p.task.bid = bid.bid;
        Ok(Some(bid.bid))
    }

    /// Hands task `id` out to be judged when a slot is `free` and the
    /// policies have not judged it at its current bid; it is then the
    /// handler's until [`Desk::passed_over`] or [`Desk::done`].
    pub fn hand_out(&mut self, id: &str, free: bool) -> Option<(Signed, Task)> {
        let p = self.pending.get_mut(id)?;
        if p.handling || p.judged == Some(p.task.bid) || !free {
            return None;
        }
        p.handling = true;
        p.judged = Some(p.task.bid);
        Some((p.msg.clone(), p.task.clone()))
    }

    /// Tasks the policies have yet to judge at their current bid, oldest
    /// first.
    pub fn waiting(&self) -> Vec<String> {
        let mut waiting: Vec<&Pending> = self
            .pending
            .values()
            .filter(|p| !p.handling && p.judged != Some(p.task.bid))
            .collect();
        waiting.sort_by_key(|p| p.posted);
        waiting.into_iter().map(|p| p.task.task.clone()).collect()
    }

    /// The policies passed the task over: it stays, as a higher bid may
    /// change their answer.
    pub fn passed_over(&mut self, task: &str) {
        if let Some(p) = self.pending.get_mut(task) {
            p.handling = false;
        }
    }

    /// The task was taken, lost or failed: nothing more to decide.
    pub fn done(&mut self, task: &str) {
        self.pending.remove(task);
    }

    /// Forgets tasks posted before `before` that no handler has: their
    /// requesters have stopped waiting.
    pub fn expire(&mut self, before: i64) {
        self.pending.retain(|_, p| p.handling || p.posted >= before);
    }
}

/// A task whose claim this node won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    task: String,
    /// This node.
    provider: String,
    price: u64,
}

/// What the ledger says of a taken task's escrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// No lock yet.
    Waiting,
    /// The requester locked the claimed price for this node: the job may
    /// run for this many seconds.
    Locked { timeout_secs: u32 },
    /// A lock for another node or another price: nothing here is paid.
    Other,
}

impl Taken {
    /// The task of `claim`, which this node (`provider`) stored first.
    pub fn new(claim: &Claim, provider: String) -> Taken {
        Taken {
            task: claim.task.clone(),
            provider,
            price: claim.price,
        }
    }

    pub fn lock_on(&self, ledger: &Ledger) -> LockState {
        match ledger.escrow(&self.task) {
            None => LockState::Waiting,
            Some(e) if e.provider == self.provider && e.amount == self.price => LockState::Locked {
                timeout_secs: e.timeout_secs,
            },
            Some(_) => LockState::Other,
        }
    }

    /// The receipt for the job's requests upstream, at `token_price` RUV
    /// per 1,000 tokens (input, cache and output) up to the claimed price;
    /// with no token price, the claimed price whatever it used.
    pub fn receipt(
        &self,
        requests: impl IntoIterator<Item = MeteredRequest>,
        token_price: u64,
    ) -> Receipt {
        let mut models: BTreeMap<String, ModelUsage> = BTreeMap::new();
        let mut replies = Vec::new();
        let mut count = 0u32;
        for r in requests {
            let usage = models.entry(r.model.clone()).or_insert_with(|| ModelUsage {
                model: r.model.clone(),
                requests: 0,
                input_tokens: 0,
                cache_creation_tokens: 0,
                cache_read_tokens: 0,
                output_tokens: 0,
            });
            let cached = r.cache_creation_tokens.saturating_add(r.cache_read_tokens);
            usage.requests += 1;
            usage.input_tokens += r.input_tokens.saturating_sub(cached);
            usage.cache_creation_tokens += r.cache_creation_tokens;
            usage.cache_read_tokens += r.cache_read_tokens;
            usage.output_tokens += r.output_tokens;
            count += 1;
            if let Some(id) = r.request_id {
                replies.push(hex::encode(Sha256::digest(id.as_bytes())));
            }
        }
        let mut receipt = Receipt {
            task: self.task.clone(),
            requests: count,
            models: models.into_values().collect(),
            replies,
            amount: self.price,
        };
        if token_price > 0 {
            let tokens = receipt.input_tokens() + receipt.output_tokens();
            receipt.amount = self
                .price
                .min(tokens.saturating_mul(token_price).div_ceil(1000));
        }
        receipt
    }
}

/// One Messages request the job made upstream, as the provider's gateway
/// metered it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeteredRequest {
    pub model: String,
    /// Every input token, cache writes and reads included.
    pub input_tokens: u64,
    pub cache_creation_tokens: u64,
    pub cache_read_tokens: u64,
    pub output_tokens: u64,
    /// The upstream's `request-id`.
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::testutil::shared_keys;
    use crate::market::ledger::entries::{grant, lock, task};
    use crate::market::message::{open, seal_at};

    #[test]
    fn a_task_is_for_this_node_when_another_names_it_a_candidate() {
        let [requester, me, other, _] = shared_keys();
        let msg = |by: &crate::crypto::NodeKey, candidates| {
            open(&seal_at(by, Body::Task(task(candidates)), 1).unwrap().0).unwrap()
        };
        let mine = msg(requester, vec![other.node_id(), me.node_id()]);
        assert!(addressed(&mine, &me.node_id()).is_some());
        assert!(addressed(&msg(requester, vec![other.node_id()]), &me.node_id()).is_none());
        assert!(addressed(&msg(me, vec![me.node_id()]), &me.node_id()).is_none());
    }

    #[test]
    fn only_the_requesters_lock_for_this_node_at_the_price_lets_it_run() {
        let [issuer, requester, me, other] = shared_keys();
        let taken = Taken::new(
            &Claim {
                task: "t1".into(),
                requester: requester.node_id(),
                price: 20,
            },
            me.node_id(),
        );
        let ledger_with = |provider, amount| {
            let mut ledger = Ledger::new([issuer.node_id()], 60_000);
            for (seq, (key, body)) in [
                (issuer, grant("g", requester, 100)),
                (requester, lock("t1", provider, amount)),
            ]
            .into_iter()
            .enumerate()
            {
                let msg = open(&seal_at(key, body, 1_000).unwrap().0).unwrap();
                ledger.apply(seq as u64 + 1, 1_000, Ok(&msg));
            }
            ledger
        };
        let empty = Ledger::new([issuer.node_id()], 60_000);
        assert_eq!(taken.lock_on(&empty), LockState::Waiting);
        assert_eq!(
            taken.lock_on(&ledger_with(me, 20)),
            LockState::Locked { timeout_secs: 60 }
        );
        assert_eq!(taken.lock_on(&ledger_with(me, 19)), LockState::Other);
        assert_eq!(taken.lock_on(&ledger_with(other, 20)), LockState::Other);
    }

    #[test]
    fn the_desk_judges_a_task_once_per_bid_and_only_its_requester_raises_it() {
        let [requester, me, stranger, _] = shared_keys();
        let posted = open(
            &seal_at(requester, Body::Task(task(vec![me.node_id()])), 1)
                .unwrap()
                .0,
        )
        .unwrap();
        let bid = |by: &crate::crypto::NodeKey, amount| {
            let body = Bid {
                task: "t1".into(),
                bid: amount,
            };
            let msg = open(&seal_at(by, Body::Bid(body.clone()), 1).unwrap().0).unwrap();
            (msg, body)
        };
        let mut desk = Desk::new(me.node_id(), 60_000);
        desk.post(posted, task(vec![me.node_id()]), 1_000);
        assert!(desk.knows("t1"));
        assert!(desk.hand_out("t1", false).is_none(), "no free slot");
        assert_eq!(desk.waiting(), ["t1"]);
        let (_, handed) = desk.hand_out("t1", true).unwrap();
        assert_eq!(handed.bid, 20);
        assert!(desk.hand_out("t1", true).is_none(), "a handler has it");
        desk.passed_over("t1");
        assert!(desk.hand_out("t1", true).is_none(), "judged at this bid");
        assert!(desk.waiting().is_empty());

        let (forged, body) = bid(stranger, 30);
        assert_eq!(desk.raise(&forged, &body), Err(DropReason::NotAuthorised));
        let (lower, body) = bid(requester, 10);
        assert_eq!(desk.raise(&lower, &body), Ok(None));
        let (raised, body) = bid(requester, 30);
        assert_eq!(desk.raise(&raised, &body), Ok(Some(30)));
        assert_eq!(desk.hand_out("t1", true).unwrap().1.bid, 30);

        desk.expire(2_000);
        assert!(desk.knows("t1"), "a handler still has it");
        desk.passed_over("t1");
        desk.expire(2_000);
        assert!(!desk.knows("t1"), "its requester stopped waiting");
        desk.post(
            open(
                &seal_at(requester, Body::Task(task(vec![me.node_id()])), 1)
                    .unwrap()
                    .0,
            )
            .unwrap(),
            task(vec![me.node_id()]),
            3_000,
        );
        desk.done("t1");
        assert!(!desk.knows("t1"));
    }

    #[test]
    fn a_receipt_sums_by_model_and_charges_by_use_up_to_the_price() {
        let taken = Taken {
            task: "t1".into(),
            provider: "me".into(),
            price: 20,
        };
        let request = |model: &str, input, cached, output, id: Option<&str>| MeteredRequest {
            model: model.into(),
            input_tokens: input,
            cache_creation_tokens: 0,
            cache_read_tokens: cached,
            output_tokens: output,
            request_id: id.map(String::from),
        };
        let requests = vec![
            request("claude-sonnet-4-5", 1000, 400, 100, Some("req_1")),
            request("claude-haiku-4-5", 500, 0, 50, None),
            request("claude-sonnet-4-5", 2000, 0, 200, Some("req_2")),
        ];
        let per_task = taken.receipt(requests.clone(), 0);
        assert_eq!(per_task.amount, 20);
        assert_eq!(per_task.requests, 3);
        let names: Vec<_> = per_task.models.iter().map(|m| m.model.as_str()).collect();
        assert_eq!(names, ["claude-haiku-4-5", "claude-sonnet-4-5"]);
        let sonnet = &per_task.models[1];
        assert_eq!(
            (
                sonnet.requests,
                sonnet.input_tokens,
                sonnet.cache_read_tokens
            ),
            (2, 2600, 400)
        );
        assert_eq!(per_task.input_tokens(), 3500);
        assert_eq!(per_task.output_tokens(), 350);
        assert_eq!(per_task.replies.len(), 2);
        assert_eq!(per_task.replies[0], hex::encode(Sha256::digest(b"req_1")));
        // 3,850 tokens at 3 per 1,000 is 11.55: 12; at 9, 34.65 caps at 20.
        assert_eq!(taken.receipt(requests.clone(), 3).amount, 12);
        assert_eq!(taken.receipt(requests, 9).amount, 20);
        assert_eq!(taken.receipt(Vec::new(), 3).amount, 0);
    }

    /// No earlier run of `serve` saw the task.
    fn unseen(_: &str) -> Result<bool, ()> {
        Ok(false)
    }

    #[test]
    fn the_desk_takes_new_tasks_for_this_node_and_raised_bids_once_each() {
        let [requester, me, other, stranger] = shared_keys().each_ref();
        let seal =
            |by: &crate::crypto::NodeKey, body| open(&seal_at(by, body, 1_000).unwrap().0).unwrap();
        let mut desk = Desk::new(me.node_id(), 60_000);
        let posted = seal(requester, Body::Task(task(vec![me.node_id()])));
        let elsewhere = seal(requester, Body::Task(task(vec![other.node_id()])));
        assert_eq!(
            desk.receive(elsewhere, 1_000, unseen).unwrap(),
            Intake::Ignored
        );
        let mut handled_before = Desk::new(me.node_id(), 60_000);
        assert_eq!(
            handled_before
                .receive(posted.clone(), 1_000, |_| Ok::<_, ()>(true))
                .unwrap(),
            Intake::Ignored,
            "an earlier run handled it"
        );
        assert_eq!(
            desk.receive(posted.clone(), 1_000, unseen).unwrap(),
            Intake::Posted("t1".into())
        );
        assert_eq!(
            desk.receive(posted, 1_001, unseen).unwrap(),
            Intake::Refused(DropReason::Replayed),
            "the same message again"
        );
        let bid = |by, amount| {
            let body = Bid {
                task: "t1".into(),
                bid: amount,
            };
            seal(by, Body::Bid(body))
        };
        assert_eq!(
            desk.receive(bid(stranger, 30), 1_002, unseen).unwrap(),
            Intake::Refused(DropReason::NotAuthorised)
        );
        assert_eq!(
            desk.receive(bid(requester, 30), 1_003, unseen).unwrap(),
            Intake::Raised {
                task: "t1".into(),
                bid: 30
            }
        );
    }
}
