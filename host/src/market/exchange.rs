//! What the task flows need of the market itself, as one small trait:
//! publish a signed message where its kind belongs, claim a task and wait
//! for its claim, read and follow a subject, and the ledger's entries
//! ([`LedgerStore`]). A node's JetStream connection with its key
//! implements it ([`Signer`]); the flows' tests implement it in memory, so
//! the protocol is tested without NATS.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};

use crate::crypto::NodeKey;

use super::MarketError;
use super::message;
use super::replay::LedgerStore;
use super::transport::{
    CHECKPOINT_SUBJECT, ClaimOutcome, LEDGER_STREAM, RESULTS_STREAM, Start, Stored, TASKS_STREAM,
    Transport,
};
use super::types::{Body, Claim};

/// A live feed of what is stored on a subject.
pub type Feed = Pin<Box<dyn Stream<Item = Result<Stored, MarketError>> + Send>>;

/// The market as the task flows use it, signing as this node.
pub trait Exchange: LedgerStore + Sync {
    /// This node's id: who its messages are from.
    fn node(&self) -> String;
    /// Signs `body` and publishes it where its kind belongs ([`subject_of`]);
    /// the stream sequence it was stored at.
    fn publish(&self, body: Body) -> impl Future<Output = Result<u64, MarketError>> + Send;
    /// Signs `claim` and stores it as the one claim on its task, unless
    /// another is there first.
    fn claim(&self, claim: Claim)
    -> impl Future<Output = Result<ClaimOutcome, MarketError>> + Send;
    /// The claim on `task` as stored, waiting up to `wait` for one.
    fn await_claim(
        &self,
        task: &str,
        wait: Duration,
    ) -> impl Future<Output = Result<Option<Stored>, MarketError>> + Send;
    /// Everything stored on `subject` so far, oldest first.
    fn read(&self, subject: &str) -> impl Future<Output = Result<Vec<Stored>, MarketError>> + Send;
    /// What is stored on `subject` from stream sequence `from` on, as it
    /// is stored.
    fn watch(
        &self,
        subject: &str,
        from: u64,
    ) -> impl Future<Output = Result<Feed, MarketError>> + Send;
}

/// Where each kind of message is published.
pub fn subject_of(body: &Body) -> String {
    match body {
        Body::Task(t) => format!("cmm.task.{}", t.task),
        Body::Bid(b) => format!("cmm.bid.{}", b.task),
        Body::Status(s) => format!("cmm.status.{}", s.task),
        // Parts share the result's subject: one ordered read gets them all.
        Body::Part(p) => format!("cmm.result.{}", p.task),
        Body::Result(r) => format!("cmm.result.{}", r.task),
        Body::Grant(g) => format!("cmm.ledger.grant.{}", g.grant),
        Body::Lock(l) => format!("cmm.ledger.lock.{}", l.task),
        Body::Release(r) => format!("cmm.ledger.release.{}", r.task),
        Body::Refund(r) => format!("cmm.ledger.refund.{}", r.task),
        Body::Receipt(r) => format!("cmm.ledger.receipt.{}", r.task),
        Body::Checkpoint(_) => CHECKPOINT_SUBJECT.to_owned(),
        // Offers and claims live in buckets, not streams.
        Body::Offer(_) | Body::Claim(_) => unreachable!("offers and claims are not published"),
    }
}

/// The stream a subject is stored in.
pub fn stream_of(subject: &str) -> &'static str {
    if subject.starts_with("cmm.result.") {
        RESULTS_STREAM
    } else if subject.starts_with("cmm.ledger.") {
        LEDGER_STREAM
    } else {
        TASKS_STREAM
    }
}

/// A node on the market: its JetStream connection, signing with its key.
#[derive(Clone, Copy)]
pub struct Signer<'a> {
    pub key: &'a NodeKey,
    pub transport: &'a Transport,
}

impl LedgerStore for Signer<'_> {
    fn entries_from(
        &self,
        from: u64,
    ) -> impl Future<Output = Result<Vec<Stored>, MarketError>> + Send {
        self.transport.entries_from(from)
    }

    fn latest_checkpoint(
        &self,
    ) -> impl Future<Output = Result<Option<Stored>, MarketError>> + Send {
        self.transport.latest_checkpoint()
    }

    fn state(
        &self,
        digest: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, MarketError>> + Send {
        self.transport.state(digest)
    }
}

impl Exchange for Signer<'_> {
    fn node(&self) -> String {
        self.key.node_id()
    }

    async fn publish(&self, body: Body) -> Result<u64, MarketError> {
        let subject = subject_of(&body);
        let (bytes, id) = message::seal(self.key, body)?;
        self.transport.publish(&subject, &id, bytes).await
    }

    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, MarketError> {
        let task = claim.task.clone();
        let (bytes, _) = message::seal(self.key, Body::Claim(claim))?;
        self.transport.claim(&task, bytes).await
    }

    async fn await_claim(&self, task: &str, wait: Duration) -> Result<Option<Stored>, MarketError> {
        Ok(self
            .transport
            .await_claim(task, wait)
            .await?
            .map(|(at, bytes)| Stored {
                seq: 0,
                at,
                subject: task.to_owned(),
                bytes,
            }))
    }

    async fn read(&self, subject: &str) -> Result<Vec<Stored>, MarketError> {
        self.transport.read(stream_of(subject), subject, 1).await
    }

    async fn watch(&self, subject: &str, from: u64) -> Result<Feed, MarketError> {
        let feed = self
            .transport
            .watch(stream_of(subject), subject, Start::Seq(from))
            .await?;
        Ok(feed.boxed())
    }
}
