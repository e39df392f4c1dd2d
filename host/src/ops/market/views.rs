//! What a node can read off the market: the live offers, recent tasks and
//! how each stands, this node's balance and the ledger's entries, market
//! statistics with reputations, and a task's result (decrypted when it is
//! this node's).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::market::ledger::{Account, Line};
use crate::market::message::now_ms;
use crate::market::reputation::{self, Reputation};
use crate::market::transport::TASKS_STREAM;
use crate::market::types::Body;
use crate::market::{DropReason, Settlement};

use super::super::context::runtime;
use super::super::{Context, OpsError, keys};
use super::{
    Peer, accept, catch_up, live_offers, matches_digest, open_sealed, read_verified, reputation_of,
};

#[derive(Debug, Clone, Serialize)]
pub struct OfferView {
    pub node: String,
    pub slots: u32,
    pub busy: u32,
    pub price: u64,
    pub models: Vec<String>,
    pub max_tokens: u32,
    /// The images it runs for the market; empty when it names none.
    pub images: Vec<String>,
    pub reputation: f64,
    /// Seconds since the provider last refreshed it.
    pub age_secs: u64,
}

pub fn offers(ctx: &mut Context) -> Result<Vec<OfferView>, OpsError> {
    let rt = runtime()?;
    let peer = Peer::connect(ctx, &rt)?;
    let mut ledger = peer.ledger();
    rt.block_on(catch_up(&peer.transport, &mut ledger))?;
    let reps = reputation::all(&ledger);
    let now = now_ms();
    Ok(rt
        .block_on(live_offers(&peer, &mut ctx.store))?
        .into_iter()
        .map(|o| OfferView {
            reputation: reputation_of(&reps, &o.node).as_provider,
            age_secs: u64::try_from((now - o.at).max(0) / 1000).unwrap_or(0),
            node: o.node,
            slots: o.offer.slots,
            busy: o.offer.busy,
            price: o.offer.price,
            models: o.offer.models,
            max_tokens: o.offer.max_tokens,
            images: o.offer.images,
        })
        .collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub task: String,
    pub requester: String,
    pub model: String,
    pub max_tokens: u32,
    /// A command task's image, by digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub bid: u64,
    pub candidates: usize,
    /// open, claimed, locked, completed, refunded (with why).
    pub state: String,
    pub provider: Option<String>,
    pub price: Option<u64>,
    /// Server time it was posted (Unix ms).
    pub posted_at: i64,
}

/// Tasks posted in the last day, newest first, with how each stands.
pub fn tasks(ctx: &mut Context, limit: usize) -> Result<Vec<TaskView>, OpsError> {
    let rt = runtime()?;
    let peer = Peer::connect(ctx, &rt)?;
    let mut ledger = peer.ledger();
    rt.block_on(catch_up(&peer.transport, &mut ledger))?;
    let stored = rt.block_on(peer.transport.read(TASKS_STREAM, "cmm.task.*", 1))?;
    let mut out = Vec::new();
    for m in stored.iter().rev().take(limit) {
        let Some(msg) = accept(&mut ctx.store, &m.bytes, m.at, peer.window_ms(), None) else {
            continue;
        };
        let Body::Task(task) = msg.body else { continue };
        let escrow = ledger.escrow(&task.task);
        let claimed =
            escrow.is_some() || rt.block_on(peer.transport.claim_of(&task.task))?.is_some();
        let state = match escrow.map(|e| e.settlement) {
            Some(Settlement::Open) => "locked".to_owned(),
            Some(Settlement::Released { .. }) => "completed".to_owned(),
            Some(Settlement::Refunded { reason }) => format!("refunded ({})", reason.as_str()),
            None if claimed => "claimed".to_owned(),
            None => "open".to_owned(),
        };
        out.push(TaskView {
            task: task.task.clone(),
            requester: msg.from,
            model: task.model,
            max_tokens: task.max_tokens,
            image: task.command.map(|c| c.image),
            bid: task.bid,
            candidates: task.candidates.len(),
            state,
            provider: escrow.map(|e| e.provider.clone()),
            price: escrow.map(|e| e.amount),
            posted_at: m.at,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct Balance {
    pub node: String,
    #[serde(flatten)]
    pub account: Account,
    /// Ledger entries replayed to compute it.
    pub entries: usize,
}

pub fn balance(ctx: &mut Context) -> Result<Balance, OpsError> {
    let rt = runtime()?;
    let peer = Peer::connect(ctx, &rt)?;
    let mut ledger = peer.ledger();
    rt.block_on(catch_up(&peer.transport, &mut ledger))?;
    Ok(Balance {
        node: peer.node(),
        account: ledger.account(&peer.node()),
        entries: ledger.lines().len(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct LedgerView {
    pub lines: Vec<Line>,
    /// Every account, as the replay computes it.
    pub accounts: BTreeMap<String, Account>,
    /// The first issuer checkpoint this node's replay disagreed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diverged: Option<u64>,
}

/// The ledger's entries (those of one task when given) and every balance.
pub fn ledger(ctx: &mut Context, task: Option<&str>) -> Result<LedgerView, OpsError> {
    let rt = runtime()?;
    let peer = Peer::connect(ctx, &rt)?;
    let mut ledger = peer.ledger();
    rt.block_on(catch_up(&peer.transport, &mut ledger))?;
    Ok(LedgerView {
        lines: ledger
            .lines()
            .iter()
            .filter(|l| task.is_none_or(|t| l.task.as_deref() == Some(t)))
            .cloned()
            .collect(),
        accounts: ledger.accounts().clone(),
        diverged: ledger.diverged(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct MarketStats {
    pub node: String,
    pub active_offers: usize,
    pub free_slots: u32,
    /// Mean asking price of the live offers.
    pub average_price: Option<f64>,
    /// RUV paid to providers, ever.
    pub volume: u64,
    pub tasks_settled: usize,
    pub tasks_open: usize,
    pub reputation: Reputation,
    /// Every node's reputation, computed from the ledger.
    pub reputations: BTreeMap<String, Reputation>,
    /// Ledger entries every node drops, by reason.
    pub ledger_dropped: BTreeMap<String, u64>,
    /// Live messages this node dropped, by reason.
    pub dropped_here: BTreeMap<String, u64>,
}

pub fn stats(ctx: &mut Context) -> Result<MarketStats, OpsError> {
    let rt = runtime()?;
    let peer = Peer::connect(ctx, &rt)?;
    let mut ledger = peer.ledger();
    rt.block_on(catch_up(&peer.transport, &mut ledger))?;
    let offers = rt.block_on(live_offers(&peer, &mut ctx.store))?;
    let reps = reputation::all(&ledger);
    let (settled, open): (Vec<_>, Vec<_>) = ledger
        .escrows()
        .partition(|e| e.settlement != Settlement::Open);
    let name = |reason: DropReason| reason.as_str().to_owned();
    Ok(MarketStats {
        node: peer.node(),
        active_offers: offers.len(),
        free_slots: offers
            .iter()
            .map(|o| o.offer.slots.saturating_sub(o.offer.busy))
            .sum(),
        average_price: (!offers.is_empty()).then(|| {
            offers.iter().map(|o| o.offer.price as f64).sum::<f64>() / offers.len() as f64
        }),
        volume: ledger.volume(),
        tasks_settled: settled.len(),
        tasks_open: open.len(),
        reputation: reputation_of(&reps, &peer.node()),
        reputations: reps,
        ledger_dropped: ledger
            .dropped()
            .into_iter()
            .map(|(r, n)| (name(r), n))
            .collect(),
        dropped_here: ctx.store.market_drops()?.into_iter().collect(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultView {
    pub task: String,
    pub provider: String,
    pub state: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The decrypted result, when it is this node's and verifies.
    pub output: Option<String>,
    /// Why there is no output, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A task's result from the results stream: only the one its claimed
/// provider signed (the provider the escrow locked to, or the one this node
/// recorded), since anyone can publish on a task's result subject.
pub fn result(ctx: &mut Context, task: &str) -> Result<ResultView, OpsError> {
    let rt = runtime()?;
    let peer = Peer::connect(ctx, &rt)?;
    let mut ledger = peer.ledger();
    rt.block_on(catch_up(&peer.transport, &mut ledger))?;
    let claimed = match ledger.escrow(task) {
        Some(escrow) => Some(escrow.provider.clone()),
        None => ctx.store.market_task(task)?.and_then(|row| row.counterpart),
    };
    let Some(provider) = claimed else {
        return Err(OpsError::UnknownTask {
            task: task.to_owned(),
            hint: " that a provider has claimed".into(),
        });
    };
    let subject = format!("cmm.result.{task}");
    let (from, r) = read_verified(&rt, &peer, &mut ctx.store, &subject, None)?
        .into_iter()
        .find_map(|m| match m.body {
            Body::Result(r) if r.task == task && m.from == provider => Some((m.from, r)),
            _ => None,
        })
        .ok_or_else(|| OpsError::UnknownTask {
            task: task.to_owned(),
            hint: " result from its provider that verifies (none delivered yet, or older \
                   than the results stream keeps)"
                .into(),
        })?;
    let keys = keys::decryption_keys(ctx)?;
    let (output, note) = match open_sealed(&keys, &r.payload, "the result") {
        Ok(plain) if matches_digest(&plain, &r.sha256) => {
            (Some(String::from_utf8_lossy(&plain).into_owned()), None)
        }
        Ok(_) => (
            None,
            Some("the result does not match its digest".to_owned()),
        ),
        Err(e) => (None, Some(format!("not readable by this node: {e}"))),
    };
    Ok(ResultView {
        task: r.task,
        provider: from,
        state: r.state,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        output,
        note,
    })
}
