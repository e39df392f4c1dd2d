//! The RUV ledger: balances and escrow as the replay of the signed entries
//! in the ledger stream. Replay depends only on the stream (its order, its
//! messages and the server's timestamps on them) and on the issuer keys
//! trusted by config, so every node that trusts the same issuers computes
//! the same balances.
//!
//! The rules, applied to each entry in stream order:
//! - `grant`: only from a trusted issuer; once per grant id.
//! - `lock`: from the task's requester; once per task; only while the
//!   requester's available balance covers it.
//! - `receipt`: from the task's provider, while its escrow is open; once;
//!   asking no more than the lock. It moves no RUV: it says what the
//!   release should pay.
//! - `release`: from the locking requester; pays the provider what it
//!   names (the whole lock when it names nothing), never more than the
//!   lock, and returns the rest to the requester; once.
//! - `refund`: from the requester (any reason) or the provider (`failed`
//!   only: it gives the task up); returns the lock; once.
//!
//! - `checkpoint`: from a trusted issuer; checked against this node's own
//!   state when it is stored right after the entry it covers, and a
//!   disagreement is recorded (`Ledger::diverged`); it moves no RUV.
//!
//! A second lock, release or refund for a task (a redelivered message, a
//! retried publish) changes nothing, so nothing is ever paid twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::message::{DropReason, Signed};
use super::types::{Body, Checkpoint, Receipt, RefundReason};

/// One node's account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// What it may spend or lock now.
    pub available: u64,
    /// Held in escrow for its open tasks.
    pub locked: u64,
    /// Received from issuers.
    pub granted: u64,
    /// Paid to it for tasks it ran.
    pub earned: u64,
    /// Paid by it for tasks others ran.
    pub spent: u64,
}

/// How an escrowed task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Settlement {
    Open,
    /// `paid` of the lock went to the provider, the rest back.
    Released {
        elapsed_ms: u64,
        paid: u64,
    },
    Refunded {
        reason: RefundReason,
    },
}

/// A task's escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    pub task: String,
    pub requester: String,
    pub provider: String,
    pub amount: u64,
    pub timeout_secs: u32,
    /// Server time of the lock (Unix ms).
    pub locked_at: i64,
    pub settlement: Settlement,
    /// The provider's account of the task's usage, once it published one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

/// What one entry did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "effect", content = "detail")]
pub enum Effect {
    Applied,
    /// Valid, but nothing to do (a duplicate, or a lock the balance does
    /// not cover).
    Ignored(String),
    Dropped(DropReason),
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::Applied => f.write_str("applied"),
            Effect::Ignored(why) => write!(f, "ignored ({why})"),
            Effect::Dropped(reason) => write!(f, "dropped ({reason})"),
        }
    }
}

/// One ledger entry as replayed, for `market ledger`.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub seq: u64,
    /// Server time (Unix ms).
    pub at: i64,
    pub kind: &'static str,
    pub from: String,
    pub task: Option<String>,
    pub amount: Option<u64>,
    #[serde(flatten)]
    pub effect: Effect,
}

#[derive(Debug)]
pub struct Ledger {
    pub(super) issuers: HashSet<String>,
    pub(super) window_ms: i64,
    /// Every message id applied, with the time its sender stamped on it.
    pub(super) seen: HashMap<String, i64>,
    pub(super) grants: HashSet<String>,
    pub(super) accounts: BTreeMap<String, Account>,
    pub(super) escrows: BTreeMap<String, Escrow>,
    lines: Vec<Line>,
    pub(super) last_seq: u64,
    /// Server time of the entry at `last_seq`.
    pub(super) last_at: i64,
    /// The first checkpoint this node's replay disagreed with.
    diverged: Option<u64>,
}

impl Ledger {
    /// An empty ledger trusting grants from `issuers` (node ids) and
    /// refusing entries stamped more than `window_ms` from the server's
    /// time.
    pub fn new(issuers: impl IntoIterator<Item = String>, window_ms: i64) -> Ledger {
        Ledger {
            issuers: issuers.into_iter().collect(),
            window_ms,
            seen: HashMap::new(),
            grants: HashSet::new(),
            accounts: BTreeMap::new(),
            escrows: BTreeMap::new(),
            lines: Vec::new(),
            last_seq: 0,
            last_at: 0,
            diverged: None,
        }
    }

    /// Applies the entry stored at `seq` at server time `at` (Unix ms).
    /// `message` is `Err` when it did not even verify; it is still a line.
    pub fn apply(&mut self, seq: u64, at: i64, message: Result<&Signed, DropReason>) -> &Line {
        let covered = self.last_seq;
        let line = match message {
            Err(reason) => Line {
                seq,
                at,
                kind: "unreadable",
                from: String::new(),
                task: None,
                amount: None,
                effect: Effect::Dropped(reason),
            },
            Ok(msg) => {
                let effect = self.effect(msg, at, covered);
                let (task, amount) = describe(&msg.body, self.escrows.get(task_of(&msg.body)));
                Line {
                    seq,
                    at,
                    kind: msg.body.kind(),
                    from: msg.from.clone(),
                    task,
                    amount,
                    effect,
                }
            }
        };
        self.last_seq = self.last_seq.max(seq);
        self.last_at = at;
        self.lines.push(line);
        self.lines.last().expect("just pushed")
    }

    /// Compares a checkpoint with this node's state after `covered`, the
    /// entry before it.
    fn check(&mut self, msg: &Signed, c: &Checkpoint, covered: u64) -> Effect {
        if !self.issuers.contains(&msg.from) {
            return Effect::Dropped(DropReason::NotAuthorised);
        }
        if c.seq != covered {
            return Effect::Ignored(format!(
                "a checkpoint of the state after entry {} stored after entry {covered} cannot \
                 be checked",
                c.seq
            ));
        }
        if self.state().digest() != c.digest {
            self.diverged.get_or_insert(c.seq);
            return Effect::Ignored(format!(
                "this node's replay up to entry {covered} disagrees with the issuer's \
                 checkpoint {}",
                c.digest
            ));
        }
        Effect::Applied
    }

    /// What a fresh message not seen before does. Its id is recorded after
    /// it is judged, so a checkpoint compares the state its issuer signed,
    /// which did not hold the checkpoint's own id.
    fn effect(&mut self, msg: &Signed, at: i64, covered: u64) -> Effect {
        if !msg.fresh_at(at, self.window_ms) {
            return Effect::Dropped(DropReason::Stale);
        }
        if self.seen.contains_key(&msg.id) {
            return Effect::Dropped(DropReason::Replayed);
        }
        let effect = self.judge(msg, at, covered);
        self.seen.insert(msg.id.clone(), msg.ts);
        effect
    }

    fn judge(&mut self, msg: &Signed, at: i64, covered: u64) -> Effect {
        match &msg.body {
            Body::Grant(g) => {
                if !self.issuers.contains(&msg.from) {
                    return Effect::Dropped(DropReason::NotAuthorised);
                }
                if !self.grants.insert(g.grant.clone()) {
                    return Effect::Ignored(format!("grant {} was applied before", g.grant));
                }
                let to = self.accounts.entry(g.to.clone()).or_default();
                to.available = to.available.saturating_add(g.amount);
                to.granted = to.granted.saturating_add(g.amount);
                Effect::Applied
            }
            Body::Lock(l) => {
                if self.escrows.contains_key(&l.task) {
                    return Effect::Ignored(format!("task {} is already locked", l.task));
                }
                if l.provider == msg.from {
                    return Effect::Ignored("a node cannot lock a task for itself".into());
                }
                let requester = self.accounts.entry(msg.from.clone()).or_default();
                if requester.available < l.amount {
                    return Effect::Ignored(format!(
                        "the requester has {} RUV available, the lock needs {}",
                        requester.available, l.amount
                    ));
                }
                requester.available -= l.amount;
                requester.locked += l.amount;
                self.escrows.insert(
                    l.task.clone(),
                    Escrow {
                        task: l.task.clone(),
                        requester: msg.from.clone(),
                        provider: l.provider.clone(),
                        amount: l.amount,
                        timeout_secs: l.timeout_secs,
                        locked_at: at,
                        settlement: Settlement::Open,
                        receipt: None,
                    },
                );
                Effect::Applied
            }
            Body::Release(r) => {
                let Some(escrow) = self.escrows.get_mut(&r.task) else {
                    return Effect::Ignored(format!("task {} was never locked", r.task));
                };
                if escrow.requester != msg.from {
                    return Effect::Dropped(DropReason::NotAuthorised);
                }
                if escrow.settlement != Settlement::Open {
                    return Effect::Ignored(format!("task {} is already settled", r.task));
                }
                let paid = r.amount.unwrap_or(escrow.amount);
                if paid > escrow.amount {
                    return Effect::Ignored(format!(
                        "the release pays {paid} RUV, more than the {} locked",
                        escrow.amount
                    ));
                }
                escrow.settlement = Settlement::Released {
                    elapsed_ms: r.elapsed_ms,
                    paid,
                };
                let (amount, requester, provider) = (
                    escrow.amount,
                    escrow.requester.clone(),
                    escrow.provider.clone(),
                );
                let from = self.accounts.entry(requester).or_default();
                from.locked -= amount;
                from.spent += paid;
                from.available += amount - paid;
                let to = self.accounts.entry(provider).or_default();
                to.available = to.available.saturating_add(paid);
                to.earned = to.earned.saturating_add(paid);
                Effect::Applied
            }
            Body::Receipt(r) => {
                let Some(escrow) = self.escrows.get_mut(&r.task) else {
                    return Effect::Ignored(format!("task {} was never locked", r.task));
                };
                if escrow.provider != msg.from {
                    return Effect::Dropped(DropReason::NotAuthorised);
                }
                if escrow.settlement != Settlement::Open {
                    return Effect::Ignored(format!("task {} is already settled", r.task));
                }
                if escrow.receipt.is_some() {
                    return Effect::Ignored(format!("task {} has its receipt", r.task));
                }
                if r.amount > escrow.amount {
                    return Effect::Ignored(format!(
                        "the receipt asks {} RUV, more than the {} locked",
                        r.amount, escrow.amount
                    ));
                }
                escrow.receipt = Some(r.clone());
                Effect::Applied
            }
            Body::Refund(r) => {
                let Some(escrow) = self.escrows.get_mut(&r.task) else {
                    return Effect::Ignored(format!("task {} was never locked", r.task));
                };
                let by_provider = escrow.provider == msg.from && r.reason == RefundReason::Failed;
                if escrow.requester != msg.from && !by_provider {
                    return Effect::Dropped(DropReason::NotAuthorised);
                }
                if escrow.settlement != Settlement::Open {
                    return Effect::Ignored(format!("task {} is already settled", r.task));
                }
                escrow.settlement = Settlement::Refunded { reason: r.reason };
                let (amount, requester) = (escrow.amount, escrow.requester.clone());
                let back = self.accounts.entry(requester).or_default();
                back.locked -= amount;
                back.available += amount;
                Effect::Applied
            }
            Body::Checkpoint(c) => self.check(msg, c, covered),
            _ => Effect::Dropped(DropReason::Malformed),
        }
    }

    /// A node's account (all zero when it has never appeared).
    pub fn account(&self, node: &str) -> Account {
        self.accounts.get(node).copied().unwrap_or_default()
    }

    pub fn accounts(&self) -> &BTreeMap<String, Account> {
        &self.accounts
    }

    pub fn escrow(&self, task: &str) -> Option<&Escrow> {
        self.escrows.get(task)
    }

    pub fn escrows(&self) -> impl Iterator<Item = &Escrow> {
        self.escrows.values()
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The stream sequence of the last entry applied (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The sequence of the first issuer checkpoint this node's replay
    /// disagreed with: its balances are not the ones the issuer signed.
    pub fn diverged(&self) -> Option<u64> {
        self.diverged
    }

    /// Entries dropped, by reason.
    pub fn dropped(&self) -> BTreeMap<DropReason, u64> {
        let mut counts = BTreeMap::new();
        for line in &self.lines {
            if let Effect::Dropped(reason) = line.effect {
                *counts.entry(reason).or_default() += 1;
            }
        }
        counts
    }

    /// Total RUV ever paid to providers.
    pub fn volume(&self) -> u64 {
        self.accounts.values().map(|a| a.earned).sum()
    }
}

fn task_of(body: &Body) -> &str {
    match body {
        Body::Lock(l) => &l.task,
        Body::Release(r) => &r.task,
        Body::Refund(r) => &r.task,
        Body::Receipt(r) => &r.task,
        _ => "",
    }
}

/// The task and amount an entry concerns, for its line.
fn describe(body: &Body, escrow: Option<&Escrow>) -> (Option<String>, Option<u64>) {
    match body {
        Body::Grant(g) => (None, Some(g.amount)),
        Body::Lock(l) => (Some(l.task.clone()), Some(l.amount)),
        Body::Release(r) => (Some(r.task.clone()), r.amount.or(escrow.map(|e| e.amount))),
        Body::Receipt(r) => (Some(r.task.clone()), Some(r.amount)),
        Body::Refund(r) => (Some(r.task.clone()), escrow.map(|e| e.amount)),
        _ => (None, None),
    }
}

/// Ledger entries for the tests here and in `checkpoint`.
#[cfg(test)]
pub(super) mod entries {
    use crate::crypto::NodeKey;
    use crate::market::types::{
        Body, Grant, Lock, ModelUsage, Receipt, Refund, RefundReason, Release, Task,
    };

    /// Task t1 for `candidates`, bid 20, a minute to deliver.
    pub fn task(candidates: Vec<String>) -> Task {
        Task {
            task: "t1".into(),
            model: "claude-haiku-4-5".into(),
            max_tokens: 100,
            prompt_bytes: 0,
            prompt_sha256: String::new(),
            bid: 20,
            candidates,
            timeout_secs: 60,
            payload: String::new(),
            command: None,
        }
    }

    pub fn grant(id: &str, to: &NodeKey, amount: u64) -> Body {
        Body::Grant(Grant {
            grant: id.into(),
            to: to.node_id(),
            amount,
            memo: String::new(),
        })
    }

    pub fn lock(task: &str, provider: &NodeKey, amount: u64) -> Body {
        Body::Lock(Lock {
            task: task.into(),
            provider: provider.node_id(),
            amount,
            timeout_secs: 60,
        })
    }

    pub fn release(task: &str) -> Body {
        Body::Release(Release {
            task: task.into(),
            elapsed_ms: 1000,
            amount: None,
        })
    }

    /// A release of `amount` of the lock.
    pub fn release_of(task: &str, amount: u64) -> Body {
        Body::Release(Release {
            task: task.into(),
            elapsed_ms: 1000,
            amount: Some(amount),
        })
    }

    /// A receipt for one request of 1,000 tokens in and 200 out, asking
    /// `amount`.
    pub fn receipt(task: &str, amount: u64) -> Body {
        Body::Receipt(Receipt {
            task: task.into(),
            requests: 1,
            models: vec![ModelUsage {
                model: "claude-haiku-4-5".into(),
                requests: 1,
                input_tokens: 1000,
                cache_creation_tokens: 0,
                cache_read_tokens: 0,
                output_tokens: 200,
            }],
            replies: vec!["0".repeat(64)],
            amount,
        })
    }

    pub fn refund(task: &str, reason: RefundReason) -> Body {
        Body::Refund(Refund {
            task: task.into(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::entries::{grant, lock, receipt, refund, release, release_of};
    use super::*;
    use crate::crypto::NodeKey;
    use crate::crypto::testutil::shared_keys;
    use crate::market::message::{open, seal_at};

    const WINDOW: i64 = 60_000;

    struct Replay {
        ledger: Ledger,
        seq: u64,
    }

    impl Replay {
        fn new(issuer: &NodeKey) -> Replay {
            Replay {
                ledger: Ledger::new([issuer.node_id()], WINDOW),
                seq: 0,
            }
        }

        fn send(&mut self, key: &NodeKey, body: Body) -> Effect {
            self.send_at(key, body, 1_000_000)
        }

        fn send_at(&mut self, key: &NodeKey, body: Body, ts: i64) -> Effect {
            let (bytes, _) = seal_at(key, body, ts).unwrap();
            self.seq += 1;
            let msg = open(&bytes).unwrap();
            self.ledger
                .apply(self.seq, 1_000_000, Ok(&msg))
                .effect
                .clone()
        }

        fn resend(&mut self, bytes: &[u8]) -> Effect {
            self.seq += 1;
            let msg = open(bytes).unwrap();
            self.ledger
                .apply(self.seq, 1_000_000, Ok(&msg))
                .effect
                .clone()
        }
    }

    #[test]
    fn grants_only_from_trusted_issuers_and_once_per_id() {
        let [issuer, requester, provider, _] = shared_keys();
        let mut r = Replay::new(issuer);
        assert_eq!(r.send(issuer, grant("g1", requester, 100)), Effect::Applied);
        assert!(matches!(
            r.send(issuer, grant("g1", requester, 100)),
            Effect::Ignored(_)
        ));
        assert_eq!(
            r.send(provider, grant("g2", provider, 1000)),
            Effect::Dropped(DropReason::NotAuthorised)
        );
        assert_eq!(r.ledger.account(&requester.node_id()).available, 100);
        assert_eq!(r.ledger.account(&provider.node_id()).available, 0);
    }

    #[test]
    fn a_released_lock_pays_the_provider_once() {
        let [issuer, requester, provider, _] = shared_keys();
        let mut r = Replay::new(issuer);
        r.send(issuer, grant("g1", requester, 100));
        assert_eq!(r.send(requester, lock("t1", provider, 30)), Effect::Applied);
        let held = r.ledger.account(&requester.node_id());
        assert_eq!((held.available, held.locked), (70, 30));
        // Only the requester may release; the provider cannot pay itself.
        assert_eq!(
            r.send(provider, release("t1")),
            Effect::Dropped(DropReason::NotAuthorised)
        );
        let (receipt, _) = seal_at(requester, release("t1"), 1_000_000).unwrap();
        assert_eq!(r.resend(&receipt), Effect::Applied);
        // The same receipt redelivered, a second receipt, a late refund.
        assert_eq!(r.resend(&receipt), Effect::Dropped(DropReason::Replayed));
        assert!(matches!(
            r.send(requester, release("t1")),
            Effect::Ignored(_)
        ));
        assert!(matches!(
            r.send(requester, refund("t1", RefundReason::TimedOut)),
            Effect::Ignored(_)
        ));
        let req = r.ledger.account(&requester.node_id());
        let prov = r.ledger.account(&provider.node_id());
        assert_eq!((req.available, req.locked, req.spent), (70, 0, 30));
        assert_eq!((prov.available, prov.earned), (30, 30));
        assert_eq!(r.ledger.volume(), 30);
    }

    #[test]
    fn a_receipt_sets_what_the_release_pays_and_the_rest_goes_back() {
        let [issuer, requester, provider, stranger] = shared_keys();
        let mut r = Replay::new(issuer);
        r.send(issuer, grant("g1", requester, 100));
        r.send(requester, lock("t1", provider, 40));
        // Only the task's provider may say what it used, and not for more
        // than the lock.
        assert_eq!(
            r.send(stranger, receipt("t1", 10)),
            Effect::Dropped(DropReason::NotAuthorised)
        );
        assert!(matches!(
            r.send(provider, receipt("t1", 41)),
            Effect::Ignored(_)
        ));
        assert_eq!(r.send(provider, receipt("t1", 12)), Effect::Applied);
        assert!(matches!(
            r.send(provider, receipt("t1", 10)),
            Effect::Ignored(_)
        ));
        assert_eq!(
            r.ledger
                .escrow("t1")
                .unwrap()
                .receipt
                .as_ref()
                .unwrap()
                .amount,
            12
        );
        // A release above the lock pays nothing; one of the receipt's amount
        // pays that and returns the rest.
        assert!(matches!(
            r.send(requester, release_of("t1", 41)),
            Effect::Ignored(_)
        ));
        assert_eq!(r.send(requester, release_of("t1", 12)), Effect::Applied);
        let req = r.ledger.account(&requester.node_id());
        let prov = r.ledger.account(&provider.node_id());
        assert_eq!((req.available, req.locked, req.spent), (88, 0, 12));
        assert_eq!((prov.available, prov.earned), (12, 12));
        assert_eq!(
            r.ledger.escrow("t1").unwrap().settlement,
            Settlement::Released {
                elapsed_ms: 1000,
                paid: 12
            }
        );
        // A receipt after the release is too late to count.
        r.send(requester, lock("t2", provider, 5));
        r.send(requester, release("t2"));
        assert!(matches!(
            r.send(provider, receipt("t2", 1)),
            Effect::Ignored(_)
        ));
    }

    #[test]
    fn refunds_return_the_lock_and_the_provider_may_only_give_up() {
        let [issuer, requester, provider, stranger] = shared_keys();
        let mut r = Replay::new(issuer);
        r.send(issuer, grant("g1", requester, 50));
        r.send(requester, lock("t1", provider, 50));
        assert!(matches!(
            r.send(requester, lock("t2", provider, 1)),
            Effect::Ignored(reason) if reason.contains("0 RUV available")
        ));
        assert_eq!(
            r.send(stranger, refund("t1", RefundReason::Failed)),
            Effect::Dropped(DropReason::NotAuthorised)
        );
        assert_eq!(
            r.send(provider, refund("t1", RefundReason::Disputed)),
            Effect::Dropped(DropReason::NotAuthorised)
        );
        assert_eq!(
            r.send(provider, refund("t1", RefundReason::Failed)),
            Effect::Applied
        );
        let req = r.ledger.account(&requester.node_id());
        assert_eq!((req.available, req.locked), (50, 0));
        assert_eq!(
            r.ledger.escrow("t1").unwrap().settlement,
            Settlement::Refunded {
                reason: RefundReason::Failed
            }
        );
        assert!(matches!(
            r.send(requester, lock("t1", provider, 10)),
            Effect::Ignored(_)
        ));
    }

    #[test]
    fn stale_entries_are_dropped_and_counted() {
        let [issuer, requester, _, _] = shared_keys();
        let mut r = Replay::new(issuer);
        assert_eq!(
            r.send_at(issuer, grant("g1", requester, 5), 1_000_000 - WINDOW - 1),
            Effect::Dropped(DropReason::Stale)
        );
        r.ledger.apply(9, 1_000_000, Err(DropReason::BadSignature));
        let dropped = r.ledger.dropped();
        assert_eq!(dropped[&DropReason::Stale], 1);
        assert_eq!(dropped[&DropReason::BadSignature], 1);
        assert_eq!(r.ledger.account(&requester.node_id()).available, 0);
        assert_eq!(r.ledger.last_seq(), 9);
    }

    #[test]
    fn two_replays_of_the_same_entries_agree() {
        let [issuer, requester, provider, _] = shared_keys();
        let bodies = [
            (issuer, grant("g1", requester, 100)),
            (requester, lock("t1", provider, 40)),
            (requester, lock("t2", provider, 40)),
            (requester, release("t1")),
            (requester, refund("t2", RefundReason::TimedOut)),
        ];
        let sealed: Vec<Vec<u8>> = bodies
            .iter()
            .map(|(key, body)| seal_at(key, body.clone(), 1_000_000).unwrap().0)
            .collect();
        let replay = || {
            let mut r = Replay::new(issuer);
            for bytes in &sealed {
                r.resend(bytes);
            }
            r.ledger
        };
        let (a, b) = (replay(), replay());
        assert_eq!(a.accounts(), b.accounts());
        assert_eq!(a.account(&provider.node_id()).earned, 40);
        assert_eq!(a.account(&requester.node_id()).available, 60);
    }
}
