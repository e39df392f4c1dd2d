//! The provider's side of a task it takes, driven: the claim, waiting for
//! the requester's escrow, and the task's delivery, in the order the
//! requester relies on: running, the output as it comes, the receipt, and
//! then the result, each piece sealed to the requester. Whether to take a
//! task, and running its job, are the provider's own (policies, Docker);
//! these steps are the protocol's, driven over an [`Exchange`] and
//! unit-tested on an in-memory market.

use std::future::Future;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

use crate::crypto::{self, PublicKey};

use super::MarketError;
use super::exchange::Exchange;
use super::ledger::Ledger;
use super::replay::apply_in_order;
use super::serving::{LockState, Taken};
use super::transport::ClaimOutcome;
use super::types::{Body, Claim, Part, Receipt, Status, TaskResult, TaskState, WorkspaceObject};

/// Claims `claim`'s task for this node: `None` when another provider's
/// claim was stored first.
pub async fn claim(market: &impl Exchange, claim: Claim) -> Result<Option<Taken>, MarketError> {
    let taken = Taken::new(&claim, market.node());
    Ok(match market.claim(claim).await? {
        ClaimOutcome::Won => Some(taken),
        ClaimOutcome::Lost(_) => None,
    })
}

/// Waits up to `wait` for the requester's lock of `taken`, bringing the
/// shared `ledger` up to date as entries come (other tasks use it
/// meanwhile, so it is never held across a wait). The lock's timeout when
/// it comes; `None` when none comes, the task was locked for another
/// node or price, or `cancelled` completes first.
pub async fn await_lock(
    market: &impl Exchange,
    ledger: &Mutex<Ledger>,
    taken: &Taken,
    wait: Duration,
    cancelled: impl Future<Output = ()>,
) -> Result<Option<u32>, MarketError> {
    let lock_of = |ledger: &Ledger| match taken.lock_on(ledger) {
        LockState::Waiting => None,
        LockState::Locked { timeout_secs } => Some(Some(timeout_secs)),
        LockState::Other => Some(None),
    };
    let ledger = || ledger.lock().unwrap_or_else(|p| p.into_inner());
    let read_missing = || async {
        let from = ledger().last_seq() + 1;
        let missing = market.entries_from(from).await?;
        let mut ledger = ledger();
        for stored in &missing {
            apply_in_order(&mut ledger, stored);
        }
        Ok::<_, MarketError>(lock_of(&ledger))
    };
    if let Some(lock) = read_missing().await? {
        return Ok(lock);
    }
    // The ledger is pushed as it is stored: the lock is seen the moment the
    // requester publishes it.
    let from = ledger().last_seq() + 1;
    let mut feed = market.watch("cmm.ledger.>", from).await?;
    let until = tokio::time::Instant::now() + wait;
    tokio::pin!(cancelled);
    loop {
        let stored = tokio::select! {
            stored = feed.next() => stored,
            () = tokio::time::sleep_until(until) => return Ok(None),
            () = &mut cancelled => return Ok(None),
        };
        let Some(stored) = stored else {
            return Ok(None);
        };
        let stored = stored?;
        let found = {
            let mut ledger = ledger();
            apply_in_order(&mut ledger, &stored).then(|| lock_of(&ledger))
        };
        let found = match found {
            Some(found) => found,
            // Out of order: what came between is read first.
            None => read_missing().await?,
        };
        if let Some(lock) = found {
            return Ok(lock);
        }
    }
}

/// What a finished job gives back: how it ended and what it wrote.
#[derive(Debug, Clone, Default)]
pub struct Done {
    /// How the job ended (finished, failed, timed_out, ...).
    pub state: String,
    /// Its output, as returned.
    pub output: Vec<u8>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub exit_code: Option<i64>,
    /// Its workspace, already sealed to the requester and stored.
    pub workspace: Option<WorkspaceObject>,
}

/// A locked task on its way back to its requester.
pub struct Delivery<'a, X> {
    market: &'a X,
    task: &'a str,
    requester: &'a PublicKey,
}

/// How often a running task's new output goes out as a part, and the most
/// held back meanwhile.
const PART_INTERVAL: Duration = Duration::from_millis(200);
const PART_BYTES: usize = 16 * 1024;

impl<'a, X: Exchange> Delivery<'a, X> {
    pub fn new(market: &'a X, task: &'a str, requester: &'a PublicKey) -> Self {
        Delivery {
            market,
            task,
            requester,
        }
    }

    /// Tells the requester the job started.
    pub async fn running(&self) -> Result<(), MarketError> {
        self.market
            .publish(Body::Status(Status {
                task: self.task.to_owned(),
                state: TaskState::Running,
                detail: None,
            }))
            .await?;
        Ok(())
    }

    /// Publishes the output as it comes through `pieces`, as parts sealed
    /// to the requester, until `pieces` closes: at most every
    /// `PART_INTERVAL`, sooner once `PART_BYTES` are held. Best effort,
    /// on a thread of its own: a part that cannot be sent is logged and
    /// skipped, since the result carries all of it.
    pub fn stream_parts(&self, rt: &tokio::runtime::Handle, pieces: mpsc::Receiver<Vec<u8>>) {
        let mut held = Vec::new();
        let mut seq = 0;
        let mut last = Instant::now();
        loop {
            let open = match pieces.recv_timeout(PART_INTERVAL) {
                Ok(piece) => {
                    held.extend_from_slice(&piece);
                    true
                }
                Err(mpsc::RecvTimeoutError::Timeout) => true,
                Err(mpsc::RecvTimeoutError::Disconnected) => false,
            };
            let due = held.len() >= PART_BYTES || last.elapsed() >= PART_INTERVAL || !open;
            if due && !held.is_empty() {
                let sent = self.seal(&held).and_then(|payload| {
                    rt.block_on(self.market.publish(Body::Part(Part {
                        task: self.task.to_owned(),
                        seq,
                        payload,
                    })))
                });
                if let Err(e) = sent {
                    tracing::warn!(error = %e, seq, "could not send a part of the output");
                }
                seq += 1;
                held.clear();
                last = Instant::now();
            }
            if !open {
                return;
            }
        }
    }

    /// The result of `done`, its output sealed to the requester.
    pub fn result(&self, done: Done) -> Result<TaskResult, MarketError> {
        Ok(TaskResult {
            task: self.task.to_owned(),
            state: done.state,
            sha256: hex::encode(Sha256::digest(&done.output)),
            payload: self.seal(&done.output)?,
            input_tokens: done.input_tokens,
            output_tokens: done.output_tokens,
            exit_code: done.exit_code,
            workspace: done.workspace,
        })
    }

    /// Delivers: the receipt on the ledger first, so that a requester that
    /// reads the result finds it there and releases what it asks; then the
    /// result.
    pub async fn deliver(&self, receipt: Receipt, result: TaskResult) -> Result<(), MarketError> {
        self.market.publish(Body::Receipt(receipt)).await?;
        self.market.publish(Body::Result(result)).await?;
        Ok(())
    }

    /// `plain` as a base64 CMMENC envelope to the requester.
    fn seal(&self, plain: &[u8]) -> Result<String, MarketError> {
        let mut sealed = Vec::new();
        crypto::encrypt(
            plain,
            &mut sealed,
            std::slice::from_ref(self.requester),
            crypto::DEFAULT_SEGMENT_SIZE,
        )?;
        Ok(B64.encode(sealed))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crypto::NodeKey;
    use crate::crypto::testutil::shared_keys;
    use crate::market::ledger::entries::{grant, lock, receipt};
    use crate::market::memory::Memory;

    /// A market where the issuer granted the requester 100, seen by the
    /// provider, and the provider's ledger.
    fn market() -> (Memory, Mutex<Ledger>, [&'static NodeKey; 4]) {
        let keys @ [issuer, requester, provider, _] = shared_keys().each_ref();
        let market = Memory::new(provider);
        market.put(issuer, grant("g", requester, 100));
        let ledger = Mutex::new(Ledger::new([issuer.node_id()], 60_000));
        (market, ledger, keys)
    }

    fn claim_of(requester: &NodeKey, price: u64) -> Claim {
        Claim {
            task: "t1".into(),
            requester: requester.node_id(),
            price,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_first_claim_is_stored() {
        let (market, _, [_, requester, provider, other]) = market();
        let taken = claim(&market, claim_of(requester, 15)).await.unwrap();
        assert_eq!(
            taken,
            Some(Taken::new(&claim_of(requester, 15), provider.node_id()))
        );
        let late = claim(&market.as_node(other), claim_of(requester, 10)).await;
        assert_eq!(late.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lock_is_seen_as_it_is_published() {
        let (market, ledger, [_, requester, provider, _]) = market();
        let taken = Taken::new(&claim_of(requester, 15), provider.node_id());
        let locking = market.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            locking.put(requester, lock("t1", provider, 15));
        });
        let wait = Duration::from_secs(30);
        let seen = await_lock(&market, &ledger, &taken, wait, std::future::pending()).await;
        assert_eq!(seen.unwrap(), Some(60));
        // Already on the ledger: seen without waiting.
        let again = await_lock(&market, &ledger, &taken, wait, std::future::pending()).await;
        assert_eq!(again.unwrap(), Some(60));
        assert_eq!(ledger.lock().unwrap().last_seq(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn no_lock_in_time_a_lock_at_another_price_or_a_stop_runs_nothing() {
        let wait = Duration::from_secs(30);
        let (market, ledger, [_, requester, provider, _]) = market();
        let taken = Taken::new(&claim_of(requester, 15), provider.node_id());
        let none = await_lock(&market, &ledger, &taken, wait, std::future::pending()).await;
        assert_eq!(none.unwrap(), None, "nothing in time");
        let stopped = await_lock(&market, &ledger, &taken, wait, std::future::ready(())).await;
        assert_eq!(stopped.unwrap(), None, "stopping");
        market.put(requester, lock("t1", provider, 14));
        let other = await_lock(&market, &ledger, &taken, wait, std::future::pending()).await;
        assert_eq!(other.unwrap(), None, "locked at another price");
    }

    #[test]
    fn parts_then_the_receipt_then_the_result_each_sealed_to_the_requester() {
        let (market, _, [_, requester, _, _]) = market();
        let published = Arc::new(Mutex::new(Vec::new()));
        let order = published.clone();
        market.answer(move |body| {
            order.lock().unwrap().push(body.kind());
            vec![]
        });
        let open = |payload: &str| {
            let mut plain = Vec::new();
            let sealed = B64.decode(payload).unwrap();
            crypto::decrypt(
                sealed.as_slice(),
                &mut plain,
                std::slice::from_ref(requester),
            )
            .unwrap();
            plain
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let to = requester.public();
        let delivery = Delivery::new(&market, "t1", to);
        rt.block_on(delivery.running()).unwrap();
        let (pieces, received) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| delivery.stream_parts(rt.handle(), received));
            pieces.send(b"hello ".to_vec()).unwrap();
            pieces.send(b"world".to_vec()).unwrap();
            drop(pieces);
        });
        let result = delivery
            .result(Done {
                state: "finished".into(),
                output: b"hello world".to_vec(),
                ..Done::default()
            })
            .unwrap();
        let Body::Receipt(receipt) = receipt("t1", 12) else {
            unreachable!()
        };
        rt.block_on(delivery.deliver(receipt, result)).unwrap();

        let parts: Vec<u8> = market
            .stored("cmm.result.t1")
            .into_iter()
            .filter_map(|b| match b {
                Body::Part(p) => Some(open(&p.payload)),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(parts, b"hello world");
        let Some(Body::Result(result)) = market.stored("cmm.result.t1").pop() else {
            panic!("no result");
        };
        assert_eq!(open(&result.payload), b"hello world");
        assert_eq!(result.sha256, hex::encode(Sha256::digest(b"hello world")));
        let order = published.lock().unwrap().clone();
        let first_part = order.iter().position(|k| *k == "part").unwrap();
        assert_eq!(order[0], "status");
        assert!(first_part > 0);
        assert_eq!(&order[order.len() - 2..], ["receipt", "result"]);
    }
}
