//! An in-memory market for the task flows' tests: streams as lists, the
//! claims bucket as a map, feeds woken by a version counter, and a script
//! of how the other side answers what is published. Each node's view
//! signs with its own key over the same shared market.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::watch;

use crate::crypto::NodeKey;

use super::MarketError;
use super::exchange::{Exchange, Feed, stream_of, subject_of};
use super::message::{self, now_ms};
use super::replay::LedgerStore;
use super::transport::{CHECKPOINT_SUBJECT, ClaimOutcome, Stored};
use super::types::{Body, Claim};

/// What the other side does when a message is published: messages of its
/// own to publish, or a claim to store, each signed by the key given.
pub enum Answer {
    Publish(&'static NodeKey, Box<Body>),
    Claim(&'static NodeKey, Claim),
}

impl Answer {
    pub fn publish(key: &'static NodeKey, body: Body) -> Answer {
        Answer::Publish(key, Box::new(body))
    }
}

type Script = Box<dyn FnMut(&Body) -> Vec<Answer> + Send>;

#[derive(Default)]
struct Shared {
    streams: HashMap<&'static str, Vec<Stored>>,
    claims: HashMap<String, Stored>,
    script: Option<Script>,
}

/// One node's view of a shared in-memory market.
#[derive(Clone)]
pub struct Memory {
    key: &'static NodeKey,
    shared: Arc<Mutex<Shared>>,
    version: Arc<watch::Sender<u64>>,
}

impl Memory {
    pub fn new(key: &'static NodeKey) -> Memory {
        Memory {
            key,
            shared: Arc::default(),
            version: Arc::new(watch::channel(0).0),
        }
    }

    /// The same market, seen by the node of `key`.
    pub fn as_node(&self, key: &'static NodeKey) -> Memory {
        Memory {
            key,
            ..self.clone()
        }
    }

    /// How the other side answers each message published from now on.
    pub fn answer(&self, script: impl FnMut(&Body) -> Vec<Answer> + Send + 'static) {
        self.lock().script = Some(Box::new(script));
    }

    /// Stores `body` signed by `key`, without anyone answering it.
    pub fn put(&self, key: &NodeKey, body: Body) {
        let subject = subject_of(&body);
        let (bytes, _) = message::seal(key, body).unwrap();
        self.store_bytes(&subject, bytes);
    }

    /// Stores `bytes` on `subject` as they are; their stream sequence.
    pub fn store_bytes(&self, subject: &str, bytes: Vec<u8>) -> u64 {
        let mut shared = self.lock();
        let stream = shared.streams.entry(stream_of(subject)).or_default();
        let seq = stream.len() as u64 + 1;
        stream.push(Stored {
            seq,
            at: now_ms(),
            subject: subject.to_owned(),
            bytes: bytes.into(),
        });
        drop(shared);
        self.version.send_modify(|v| *v += 1);
        seq
    }

    /// What is stored on subjects starting with `prefix`, oldest first.
    pub fn stored(&self, prefix: &str) -> Vec<Body> {
        let shared = self.lock();
        let mut out: Vec<_> = shared
            .streams
            .values()
            .flatten()
            .filter(|s| s.subject.starts_with(prefix))
            .map(|s| (s.at, s.seq, message::open(&s.bytes).unwrap().body))
            .collect();
        out.sort_by_key(|(at, seq, _)| (*at, *seq));
        out.into_iter().map(|(_, _, body)| body).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap()
    }

    fn store_claim(&self, key: &NodeKey, claim: Claim) -> ClaimOutcome {
        let task = claim.task.clone();
        let (bytes, _) = message::seal(key, Body::Claim(claim)).unwrap();
        let mut shared = self.lock();
        if let Some(first) = shared.claims.get(&task) {
            return ClaimOutcome::Lost(first.bytes.clone());
        }
        shared.claims.insert(
            task.clone(),
            Stored {
                seq: 0,
                at: now_ms(),
                subject: task,
                bytes: bytes.into(),
            },
        );
        drop(shared);
        self.version.send_modify(|v| *v += 1);
        ClaimOutcome::Won
    }

    fn answered(&self, body: &Body) {
        let script = self.lock().script.take();
        let Some(mut script) = script else { return };
        for answer in script(body) {
            match answer {
                Answer::Publish(key, body) => self.put(key, *body),
                Answer::Claim(key, claim) => {
                    self.store_claim(key, claim);
                }
            }
        }
        self.lock().script.get_or_insert(script);
    }

    fn matching(&self, subject: &str, from: u64) -> Vec<Stored> {
        let prefix = subject.strip_suffix('>');
        self.lock()
            .streams
            .get(stream_of(subject))
            .into_iter()
            .flatten()
            .filter(|s| s.seq >= from)
            .filter(|s| match prefix {
                Some(prefix) => s.subject.starts_with(prefix),
                None => s.subject == subject,
            })
            .cloned()
            .collect()
    }
}

impl LedgerStore for Memory {
    async fn entries_from(&self, from: u64) -> Result<Vec<Stored>, MarketError> {
        Ok(self.matching("cmm.ledger.>", from))
    }

    async fn latest_checkpoint(&self) -> Result<Option<Stored>, MarketError> {
        Ok(self.matching(CHECKPOINT_SUBJECT, 1).pop())
    }

    async fn state(&self, _digest: &str) -> Result<Option<Vec<u8>>, MarketError> {
        Ok(None)
    }
}

impl Exchange for Memory {
    fn node(&self) -> String {
        self.key.node_id()
    }

    async fn publish(&self, body: Body) -> Result<u64, MarketError> {
        let subject = subject_of(&body);
        let (bytes, _) = message::seal(self.key, body.clone())?;
        let seq = self.store_bytes(&subject, bytes);
        self.answered(&body);
        Ok(seq)
    }

    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, MarketError> {
        Ok(self.store_claim(self.key, claim))
    }

    async fn await_claim(&self, task: &str, wait: Duration) -> Result<Option<Stored>, MarketError> {
        let mut changes = self.version.subscribe();
        let found = async {
            loop {
                changes.borrow_and_update();
                if let Some(claim) = self.lock().claims.get(task) {
                    return claim.clone();
                }
                changes.changed().await.unwrap();
            }
        };
        Ok(tokio::time::timeout(wait, found).await.ok())
    }

    async fn read(&self, subject: &str) -> Result<Vec<Stored>, MarketError> {
        Ok(self.matching(subject, 1))
    }

    async fn watch(&self, subject: &str, from: u64) -> Result<Feed, MarketError> {
        let market = self.clone();
        let subject = subject.to_owned();
        let changes = self.version.subscribe();
        let feed = futures_util::stream::unfold(
            (market, subject, from, changes),
            |(market, subject, next, mut changes)| async move {
                loop {
                    changes.borrow_and_update();
                    if let Some(stored) = market.matching(&subject, next).into_iter().next() {
                        let next = stored.seq + 1;
                        return Some((Ok(stored), (market, subject, next, changes)));
                    }
                    changes.changed().await.ok()?;
                }
            },
        );
        Ok(feed.boxed())
    }
}
