//! The market: providers offer capacity, requesters post tasks, one provider
//! claims each task, runs it, and returns the result; RUV moves through an
//! escrow on a signed ledger, and reputation is read off that ledger. All of
//! it over NATS JetStream.
//!
//! - [`types`]: the bodies of market messages.
//! - [`message`]: signing, checking and replay protection for every message.
//! - [`transport`]: the NATS connection, streams and buckets.
//! - [`exchange`]: what the task flows need of the market, as a trait the
//!   transport implements with this node's key.
//! - [`sealed`]: files too large for a message, sealed to their readers
//!   and checked against the digest a message names.
//! - [`workspace`]: a command task's workspace, sent and received as a
//!   sealed object.
//! - [`replay`]: bringing a ledger up to date from where its entries are
//!   kept, across a checkpoint's purge.
//! - [`ledger`]: balances and escrow as the replay of the ledger stream.
//! - [`checkpoint`]: the replayed state at a sequence, which an issuer signs
//!   and a node can resume from.
//! - [`reputation`]: per-node scores computed from the ledger.
//! - [`task`]: a task as its requester follows it, posted to settled, as a
//!   typed state machine.
//! - [`trade`]: the requester's task driven from post to settlement over
//!   an [`exchange::Exchange`].
//! - [`serving`]: a task as its provider serves it: addressed, taken,
//!   locked, and its receipt.
//! - [`provide`]: the provider's side of a taken task driven: the claim,
//!   the escrow, and delivery in order.
//!
//! The whole protocol, step by step, is in docs/market.md.

pub mod checkpoint;
pub mod exchange;
pub mod ledger;
#[cfg(test)]
mod memory;
pub mod message;
pub mod provide;
pub mod replay;
pub mod reputation;
pub mod sealed;
pub mod serving;
pub mod task;
pub mod trade;
pub mod transport;
pub mod types;
pub mod workspace;

pub use checkpoint::{LedgerState, ResumeError};
pub use ledger::{Account, Effect, Escrow, Ledger, Settlement};
pub use message::{DropReason, ReplayGuard, Signed};
pub use reputation::Reputation;
pub use transport::{ClaimOutcome, Connection, Start, Stored, Transport};

/// What can go wrong talking to the market.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error(
        "the market is not configured: start a NATS server with JetStream \
         (`nats-server -js`) and point this node at it with \
         `claude-max-market config --set market.url=nats://127.0.0.1:4222`"
    )]
    NotConfigured,
    #[error(
        "cannot reach the market at {urls}: {detail}; is `nats-server -js` running there, and are market.url and its credentials right?"
    )]
    Connect { urls: String, detail: String },
    #[error(
        "the NATS server at {urls} does not have JetStream enabled (nothing answers its \
         JetStream API), and the market keeps everything in JetStream; restart it with \
         `nats-server -js` (or a `jetstream {{}}` block in its config file)"
    )]
    NoJetStream { urls: String },
    #[error(
        "cannot set up {what} on the market: {detail}; the server must run with JetStream (`-js`)"
    )]
    Setup { what: String, detail: String },
    #[error("cannot sign a market message: {0}")]
    Sign(#[from] crate::crypto::KeyError),
    #[error("cannot seal a market message to its reader: {0}")]
    Seal(#[from] crate::crypto::EnvelopeError),
    #[error("cannot publish to {subject}: {detail}")]
    Publish { subject: String, detail: String },
    #[error("cannot read {what}: {detail}")]
    Read { what: String, detail: String },
    #[error(
        "the ledger's entries before {first} were purged by a checkpoint, and {detail}; this \
         node cannot compute balances without them"
    )]
    Unresumable { first: u64, detail: String },
    #[error(
        "this node's replay disagrees with the issuer's checkpoint of entry {seq}: its \
         balances are not the ones the issuer signed, so it signs none"
    )]
    Diverged { seq: u64 },
    #[error(
        "another ledger entry landed before the checkpoint {attempts} times in a row; try \
         again when the market is quieter"
    )]
    Contended { attempts: u32 },
}
