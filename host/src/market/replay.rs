//! Bringing a ledger up to date from where its entries are kept: the
//! entries after the last one it applied, in order; and when the first one
//! kept is not the next (an issuer's checkpoint purged what came between,
//! for a new node or one that fell behind), carrying on from the latest
//! trusted checkpoint instead. Where entries are kept is a small trait: the
//! market's JetStream in a node, a list in the tests, so the rules are
//! tested without NATS.

use std::future::Future;

use super::MarketError;
use super::ledger::Ledger;
use super::message;
use super::transport::{CHECKPOINT_SUBJECT, CHECKPOINTS_STORE, LEDGER_STREAM, Stored, Transport};
use super::types::Body;

/// Where a ledger's entries, checkpoints and checkpointed states are kept.
pub trait LedgerStore {
    /// The entries stored at sequence `from` and after, in order.
    fn entries_from(
        &self,
        from: u64,
    ) -> impl Future<Output = Result<Vec<Stored>, MarketError>> + Send;
    /// The newest checkpoint entry, if any.
    fn latest_checkpoint(&self)
    -> impl Future<Output = Result<Option<Stored>, MarketError>> + Send;
    /// The ledger state stored under `digest`, as JSON.
    fn state(
        &self,
        digest: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, MarketError>> + Send;
}

impl LedgerStore for Transport {
    async fn entries_from(&self, from: u64) -> Result<Vec<Stored>, MarketError> {
        self.read(LEDGER_STREAM, "cmm.ledger.>", from).await
    }

    async fn latest_checkpoint(&self) -> Result<Option<Stored>, MarketError> {
        self.last_on(LEDGER_STREAM, CHECKPOINT_SUBJECT).await
    }

    async fn state(&self, digest: &str) -> Result<Option<Vec<u8>>, MarketError> {
        self.get_state(digest).await
    }
}

/// How often, and how far apart, [`catch_up_to`] reads before it takes the
/// ledger as it is: two seconds in all.
const LAG_READS: u32 = 40;
const LAG_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Catches `ledger` up until it holds entry `seq`, one this node just had
/// acknowledged. In a cluster a read can lag a moment behind an
/// acknowledgement (the read is served by a server that has not applied
/// the entry yet); reading again until the entry is there keeps a lock
/// this node just published from looking unfunded. After two seconds
/// without it, the ledger is taken as it is.
pub async fn catch_up_to(
    store: &impl LedgerStore,
    ledger: &mut Ledger,
    seq: u64,
) -> Result<(), MarketError> {
    for _ in 0..LAG_READS {
        catch_up(store, ledger).await?;
        if ledger.last_seq() >= seq {
            return Ok(());
        }
        tokio::time::sleep(LAG_PAUSE).await;
    }
    Ok(())
}

/// Applies the entries stored after the last one `ledger` applied. When
/// the first of them is not the next one, the ledger carries on from the
/// latest checkpoint, which must cover the gap.
pub async fn catch_up(store: &impl LedgerStore, ledger: &mut Ledger) -> Result<(), MarketError> {
    let from = ledger.last_seq() + 1;
    let stored = store.entries_from(from).await?;
    if let Some(first) = stored.first().map(|s| s.seq).filter(|&seq| seq > from) {
        *ledger = resume(store, ledger, first).await?;
    }
    let resumed_at = ledger.last_seq();
    for stored in stored.iter().filter(|s| s.seq > resumed_at) {
        let opened = message::open(&stored.bytes);
        ledger.apply(stored.seq, stored.at, opened.as_ref().map_err(|r| *r));
    }
    Ok(())
}

/// `ledger` carried on from the latest checkpoint, which must cover every
/// entry before `first`, the first one the store still holds.
async fn resume(
    store: &impl LedgerStore,
    ledger: &Ledger,
    first: u64,
) -> Result<Ledger, MarketError> {
    let unresumable = |detail: String| MarketError::Unresumable { first, detail };
    let Some(stored) = store.latest_checkpoint().await? else {
        return Err(unresumable("no checkpoint is stored".into()));
    };
    if stored.seq < first {
        return Err(unresumable(format!(
            "the latest checkpoint, at {}, does not cover them",
            stored.seq
        )));
    }
    let note = message::open(&stored.bytes)
        .map_err(|reason| unresumable(format!("the latest checkpoint is {reason}")))?;
    let Body::Checkpoint(checkpoint) = &note.body else {
        return Err(unresumable(format!(
            "the latest checkpoint is a {}",
            note.body.kind()
        )));
    };
    let bytes = store.state(&checkpoint.digest).await?.ok_or_else(|| {
        unresumable(format!(
            "the state it names ({}) is not in {CHECKPOINTS_STORE}",
            checkpoint.digest
        ))
    })?;
    let state = serde_json::from_slice(&bytes)
        .map_err(|e| unresumable(format!("the stored state does not parse: {e}")))?;
    ledger
        .resume(state, &note, stored.seq)
        .map_err(|e| unresumable(e.to_string()))
}

/// Applies one entry read out of band (live, or by a catch-up that raced
/// another reader) unless the ledger has it already. `false` when entries
/// between the ledger's last and this one are missing: the caller reads
/// them first.
pub fn apply_in_order(ledger: &mut Ledger, stored: &Stored) -> bool {
    if stored.seq <= ledger.last_seq() {
        return true;
    }
    if stored.seq > ledger.last_seq() + 1 {
        return false;
    }
    let opened = message::open(&stored.bytes);
    ledger.apply(stored.seq, stored.at, opened.as_ref().map_err(|r| *r));
    true
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::crypto::NodeKey;
    use crate::crypto::testutil::shared_keys;
    use crate::market::ledger::entries::{grant, lock, release};
    use crate::market::message::seal_at;
    use crate::market::types::Checkpoint;

    /// A stream in a list: `purged` entries before it are gone.
    #[derive(Default)]
    struct Kept {
        entries: Vec<Stored>,
        purged: u64,
        states: HashMap<String, Vec<u8>>,
    }

    impl Kept {
        fn push(&mut self, key: &NodeKey, body: Body) {
            let seq = self.entries.len() as u64 + 1;
            let subject = if matches!(body, Body::Checkpoint(_)) {
                CHECKPOINT_SUBJECT.to_owned()
            } else {
                format!("cmm.ledger.{}", body.kind())
            };
            let (bytes, _) = seal_at(key, body, 1_000).unwrap();
            self.entries.push(Stored {
                seq,
                at: 1_000,
                subject,
                bytes: bytes.into(),
            });
        }
    }

    impl LedgerStore for Kept {
        async fn entries_from(&self, from: u64) -> Result<Vec<Stored>, MarketError> {
            let from = from.max(self.purged + 1);
            Ok(self
                .entries
                .iter()
                .filter(|s| s.seq >= from)
                .cloned()
                .collect())
        }

        async fn latest_checkpoint(&self) -> Result<Option<Stored>, MarketError> {
            Ok(self
                .entries
                .iter()
                .rev()
                .find(|s| s.subject == CHECKPOINT_SUBJECT)
                .cloned())
        }

        async fn state(&self, digest: &str) -> Result<Option<Vec<u8>>, MarketError> {
            Ok(self.states.get(digest).cloned())
        }
    }

    fn run<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(future)
    }

    /// Two tasks settled, a checkpoint of the state after them stored by
    /// `issuer`, then one more task; `purge` drops what the checkpoint
    /// covers.
    fn market(purge: bool, checkpoint: bool) -> (Kept, [&'static NodeKey; 3]) {
        let [issuer, requester, provider, _] = shared_keys();
        let mut kept = Kept::default();
        kept.push(issuer, grant("g", requester, 100));
        kept.push(requester, lock("t1", provider, 30));
        kept.push(requester, release("t1"));
        if checkpoint {
            let mut replayed = Ledger::new([issuer.node_id()], 60_000);
            run(catch_up(&kept, &mut replayed)).unwrap();
            let state = replayed.state();
            let digest = state.digest();
            kept.states
                .insert(digest.clone(), serde_json::to_vec(&state).unwrap());
            kept.push(issuer, Body::Checkpoint(Checkpoint { seq: 3, digest }));
        }
        kept.push(requester, lock("t2", provider, 20));
        if purge {
            kept.purged = 3;
        }
        (kept, [issuer, requester, provider])
    }

    #[test]
    fn a_node_after_a_purge_resumes_from_the_checkpoint_with_the_same_balances() {
        let (full, [issuer, requester, provider]) = market(false, true);
        let mut everything = Ledger::new([issuer.node_id()], 60_000);
        run(catch_up(&full, &mut everything)).unwrap();

        let (purged, _) = market(true, true);
        let mut resumed = Ledger::new([issuer.node_id()], 60_000);
        run(catch_up(&purged, &mut resumed)).unwrap();
        assert_eq!(resumed.last_seq(), 5);
        for node in [requester, provider] {
            assert_eq!(
                resumed.account(&node.node_id()),
                everything.account(&node.node_id())
            );
        }
        assert_eq!(resumed.account(&requester.node_id()).locked, 20);
        assert_eq!(resumed.account(&provider.node_id()).earned, 30);
    }

    #[test]
    fn a_purge_no_checkpoint_covers_is_refused() {
        let (mut purged, [issuer, ..]) = market(true, false);
        let mut ledger = Ledger::new([issuer.node_id()], 60_000);
        let refused = run(catch_up(&purged, &mut ledger)).unwrap_err();
        assert!(matches!(refused, MarketError::Unresumable { first: 4, .. }));

        // A checkpoint whose state was never stored cannot be resumed from.
        let (with_checkpoint, _) = market(true, true);
        purged.entries = with_checkpoint.entries;
        let refused = run(catch_up(&purged, &mut ledger)).unwrap_err();
        assert!(
            matches!(&refused, MarketError::Unresumable { detail, .. } if detail.contains("not in")),
            "{refused}"
        );
    }

    #[test]
    fn entries_out_of_band_apply_only_in_order() {
        let (full, [issuer, ..]) = market(false, false);
        let mut ledger = Ledger::new([issuer.node_id()], 60_000);
        assert!(!apply_in_order(&mut ledger, &full.entries[1]), "a gap");
        assert!(apply_in_order(&mut ledger, &full.entries[0]));
        assert!(apply_in_order(&mut ledger, &full.entries[0]), "seen");
        assert!(apply_in_order(&mut ledger, &full.entries[1]));
        assert_eq!(ledger.last_seq(), 2);
    }

    /// A store whose reads lag: the newest entry shows only from the
    /// `shows_at`-th read on.
    struct Lagging {
        kept: Kept,
        reads: std::sync::atomic::AtomicU32,
        shows_at: u32,
    }

    impl LedgerStore for Lagging {
        async fn entries_from(&self, from: u64) -> Result<Vec<Stored>, MarketError> {
            let read = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let mut entries = self.kept.entries_from(from).await?;
            if read < self.shows_at {
                entries.retain(|s| s.seq < self.kept.entries.len() as u64);
            }
            Ok(entries)
        }

        async fn latest_checkpoint(&self) -> Result<Option<Stored>, MarketError> {
            self.kept.latest_checkpoint().await
        }

        async fn state(&self, digest: &str) -> Result<Option<Vec<u8>>, MarketError> {
            self.kept.state(digest).await
        }
    }

    #[test]
    fn an_acknowledged_entry_is_waited_for_when_a_read_lags_behind_it() {
        let (kept, [issuer, requester, _]) = market(false, false);
        let newest = kept.entries.len() as u64;
        let lagging = Lagging {
            kept,
            reads: Default::default(),
            shows_at: 3,
        };
        let mut once = Ledger::new([issuer.node_id()], 60_000);
        run(catch_up(&lagging, &mut once)).unwrap();
        assert_eq!(once.last_seq(), newest - 1, "one read misses it");

        let mut ledger = Ledger::new([issuer.node_id()], 60_000);
        run(catch_up_to(&lagging, &mut ledger, newest)).unwrap();
        assert_eq!(ledger.last_seq(), newest);
        assert_eq!(ledger.account(&requester.node_id()).locked, 20);
    }
}
