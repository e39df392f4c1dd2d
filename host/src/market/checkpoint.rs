//! Ledger checkpoints: the replayed state after one stream sequence, in a
//! form every node derives byte for byte, so an issuer can sign its digest
//! on the ledger stream and a node can resume from the state instead of
//! replaying the stream from its first entry.
//!
//! What replay needs to carry on exactly as a full replay would: the
//! accounts, every escrow (a late release for a settled task must still be
//! ignored), every grant id (a grant applies once, ever), and the ids of
//! messages stamped within the freshness window of the last entry. Older
//! ids can go: a copy of such a message stored later is refused as stale
//! before its id is looked up.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ledger::{Account, Escrow, Ledger};
use super::message::Signed;
use super::types::Body;

/// The ledger's state after the entry at `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    /// The last stream sequence applied.
    pub seq: u64,
    /// Server time of that entry (Unix ms).
    pub at: i64,
    pub accounts: BTreeMap<String, Account>,
    pub escrows: BTreeMap<String, Escrow>,
    pub grants: BTreeSet<String>,
    /// Ids of the messages still inside the freshness window, with the time
    /// their senders stamped on them.
    pub recent: BTreeMap<String, i64>,
}

impl LedgerState {
    /// Hex SHA-256 of the state's JSON: sorted maps and fixed field order
    /// make it the same on every node.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("a ledger state always serializes");
        hex::encode(Sha256::digest(json))
    }
}

/// Why a node cannot resume from a state and a checkpoint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    #[error(
        "the checkpoint is signed by {from}, which is not one of this node's trusted issuers \
         (market.issuerKeys); replay the ledger from its start instead"
    )]
    NotAnIssuer { from: String },
    #[error("the message given as a checkpoint is a {kind}")]
    NotACheckpoint { kind: &'static str },
    #[error(
        "the state is after entry {state}, the checkpoint is of the state after entry \
         {checkpoint}; fetch the state the checkpoint names"
    )]
    OtherSequence { state: u64, checkpoint: u64 },
    #[error(
        "the state's digest is {actual}, the issuer signed {signed}: the state was altered or \
         is another one; fetch it again or replay the ledger from its start"
    )]
    Altered { signed: String, actual: String },
}

impl Ledger {
    /// This ledger's state now, as a checkpoint would record it.
    pub fn state(&self) -> LedgerState {
        let oldest = self.last_at.saturating_sub(self.window_ms);
        LedgerState {
            seq: self.last_seq,
            at: self.last_at,
            accounts: self.accounts.clone(),
            escrows: self.escrows.clone(),
            grants: self.grants.iter().cloned().collect(),
            recent: self
                .seen
                .iter()
                .filter(|(_, ts)| **ts >= oldest)
                .map(|(id, ts)| (id.clone(), *ts))
                .collect(),
        }
    }

    /// A ledger with this one's trust carried on from `state`, as vouched
    /// for by `checkpoint`: a signed checkpoint message from one of its
    /// issuers, stored at stream sequence `stored_at`. Replay continues
    /// with the entry after it; nothing this ledger applied is kept.
    pub fn resume(
        &self,
        state: LedgerState,
        checkpoint: &Signed,
        stored_at: u64,
    ) -> Result<Ledger, ResumeError> {
        let mut ledger = Ledger::new(self.issuers.iter().cloned(), self.window_ms);
        if !ledger.issuers.contains(&checkpoint.from) {
            return Err(ResumeError::NotAnIssuer {
                from: checkpoint.from.clone(),
            });
        }
        let Body::Checkpoint(signed) = &checkpoint.body else {
            return Err(ResumeError::NotACheckpoint {
                kind: checkpoint.body.kind(),
            });
        };
        if signed.seq != state.seq {
            return Err(ResumeError::OtherSequence {
                state: state.seq,
                checkpoint: signed.seq,
            });
        }
        let actual = state.digest();
        if actual != signed.digest {
            return Err(ResumeError::Altered {
                signed: signed.digest.clone(),
                actual,
            });
        }
        ledger.accounts = state.accounts;
        ledger.escrows = state.escrows;
        ledger.grants = state.grants.into_iter().collect();
        ledger.seen = state.recent.into_iter().collect();
        ledger.seen.insert(checkpoint.id.clone(), checkpoint.ts);
        ledger.last_seq = stored_at;
        ledger.last_at = state.at;
        Ok(ledger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::NodeKey;
    use crate::crypto::testutil::shared_keys;
    use crate::market::ledger::entries::{grant, lock, release};
    use crate::market::message::{open, seal_at};
    use crate::market::types::{Checkpoint, Refund, RefundReason};
    use crate::market::{DropReason, Effect};

    const WINDOW: i64 = 60_000;

    /// A ledger stream: sealed messages with the server time each was stored at.
    #[derive(Default)]
    struct Stream {
        entries: Vec<(Vec<u8>, i64)>,
    }

    impl Stream {
        fn push(&mut self, key: &NodeKey, body: Body, at: i64) -> Vec<u8> {
            let (bytes, _) = seal_at(key, body, at).unwrap();
            self.entries.push((bytes.clone(), at));
            bytes
        }

        /// Replays entries `from..` (1-based sequences) into `ledger`.
        fn replay_into(&self, ledger: &mut Ledger, from: u64) {
            for (i, (bytes, at)) in self.entries.iter().enumerate() {
                let seq = i as u64 + 1;
                if seq >= from {
                    let msg = open(bytes);
                    ledger.apply(seq, *at, msg.as_ref().map_err(|r| *r));
                }
            }
        }

        fn full(&self, issuer: &NodeKey) -> Ledger {
            let mut ledger = Ledger::new([issuer.node_id()], WINDOW);
            self.replay_into(&mut ledger, 1);
            ledger
        }
    }

    fn checkpoint_of(ledger: &Ledger) -> Body {
        let state = ledger.state();
        Body::Checkpoint(Checkpoint {
            seq: state.seq,
            digest: state.digest(),
        })
    }

    #[test]
    fn replay_from_a_checkpoint_and_from_the_start_reach_the_same_balances() {
        let [issuer, requester, provider, _] = shared_keys();
        let mut stream = Stream::default();
        stream.push(issuer, grant("g1", requester, 100), 1_000_000);
        stream.push(requester, lock("t1", provider, 30), 1_001_000);
        let replayed_lock = stream.push(requester, lock("t2", provider, 20), 1_002_000);
        let before = stream.full(issuer);
        let note = stream.push(issuer, checkpoint_of(&before), 1_003_000);
        // After the checkpoint: a settlement of a lock from before it, a
        // copy of a message from before it, and a second grant with an id
        // already used.
        stream.push(requester, release("t1"), 1_004_000);
        stream.entries.push((replayed_lock, 1_005_000));
        stream.push(issuer, grant("g1", requester, 100), 1_006_000);
        stream.push(requester, lock("t1", provider, 5), 1_007_000);

        let full = stream.full(issuer);
        assert_eq!(full.diverged(), None);
        assert_eq!(
            full.lines()[3].effect,
            Effect::Applied,
            "the checkpoint agrees"
        );

        let mut resumed = Ledger::new([issuer.node_id()], WINDOW)
            .resume(before.state(), &open(&note).unwrap(), 4)
            .unwrap();
        stream.replay_into(&mut resumed, 5);
        assert_eq!(resumed.accounts(), full.accounts());
        assert_eq!(
            resumed.escrows().collect::<Vec<_>>(),
            full.escrows().collect::<Vec<_>>()
        );
        assert_eq!(resumed.state(), full.state());
        let effects = |l: &Ledger| {
            l.lines()
                .iter()
                .rev()
                .take(4)
                .map(|line| line.effect.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(effects(&resumed), effects(&full));
        assert_eq!(
            effects(&full)[2],
            Effect::Dropped(DropReason::Replayed),
            "the copied lock"
        );
        let req = full.account(&requester.node_id());
        assert_eq!((req.available, req.locked, req.spent), (50, 20, 30));
    }

    #[test]
    fn a_replay_that_disagrees_with_the_issuer_is_recorded() {
        let [issuer, requester, provider, _] = shared_keys();
        let mut stream = Stream::default();
        stream.push(issuer, grant("g1", requester, 100), 1_000_000);
        stream.push(requester, lock("t1", provider, 30), 1_001_000);
        let mut wrong = stream.full(issuer).state();
        wrong
            .accounts
            .get_mut(&requester.node_id())
            .unwrap()
            .available = 1_000;
        stream.push(
            issuer,
            Body::Checkpoint(Checkpoint {
                seq: 2,
                digest: wrong.digest(),
            }),
            1_002_000,
        );
        let ledger = stream.full(issuer);
        assert_eq!(ledger.diverged(), Some(2));
        assert!(
            matches!(&ledger.lines()[2].effect, Effect::Ignored(why) if why.contains("disagrees"))
        );
        assert_eq!(
            ledger.account(&requester.node_id()).available,
            70,
            "a checkpoint moves no RUV"
        );
    }

    #[test]
    fn only_an_issuers_checkpoint_of_the_same_state_resumes_a_ledger() {
        let [issuer, requester, provider, stranger] = shared_keys();
        let mut stream = Stream::default();
        stream.push(issuer, grant("g1", requester, 100), 1_000_000);
        stream.push(
            requester,
            Body::Refund(Refund {
                task: "none".into(),
                reason: RefundReason::TimedOut,
            }),
            1_001_000,
        );
        let ledger = stream.full(issuer);
        let state = ledger.state();
        let sealed =
            |key: &NodeKey, body: Body| open(&seal_at(key, body, 1_002_000).unwrap().0).unwrap();
        let resume = |state: LedgerState, note: &Signed| {
            Ledger::new([issuer.node_id()], WINDOW)
                .resume(state, note, 3)
                .map(|_| ())
        };

        let by_stranger = sealed(stranger, checkpoint_of(&ledger));
        assert!(matches!(
            resume(state.clone(), &by_stranger),
            Err(ResumeError::NotAnIssuer { .. })
        ));
        let not_one = sealed(issuer, lock("t9", provider, 1));
        assert_eq!(
            resume(state.clone(), &not_one),
            Err(ResumeError::NotACheckpoint { kind: "lock" })
        );
        let good = sealed(issuer, checkpoint_of(&ledger));
        let mut altered = state.clone();
        altered.grants.clear();
        assert!(matches!(
            resume(altered, &good),
            Err(ResumeError::Altered { .. })
        ));
        let mut later = state.clone();
        later.seq = 7;
        assert!(matches!(
            resume(later, &good),
            Err(ResumeError::OtherSequence {
                state: 7,
                checkpoint: 2
            })
        ));
        assert_eq!(resume(state, &good), Ok(()));
        // A stranger's checkpoint on the stream is dropped, not checked.
        let mut stream2 = stream;
        stream2.push(stranger, checkpoint_of(&ledger), 1_002_000);
        let replayed = stream2.full(issuer);
        assert_eq!(
            replayed.lines()[2].effect,
            Effect::Dropped(DropReason::NotAuthorised)
        );
        assert_eq!(replayed.diverged(), None);
    }

    #[test]
    fn ids_older_than_the_window_are_left_out_of_the_state() {
        let [issuer, requester, _, _] = shared_keys();
        let mut stream = Stream::default();
        stream.push(issuer, grant("old", requester, 1), 1_000_000);
        stream.push(issuer, grant("new", requester, 1), 1_000_000 + WINDOW + 1);
        let state = stream.full(issuer).state();
        assert_eq!(state.recent.len(), 1);
        assert_eq!(state.grants.len(), 2, "grant ids are kept for ever");
    }
}
