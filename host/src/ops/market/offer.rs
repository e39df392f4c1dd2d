//! This node's offer: `advertise` publishes it once, and `serve` puts it
//! when it starts. Its price is the owner's, or what the pricing policy
//! quotes for the largest job the offer grants.

use serde::Serialize;

use crate::market::message;
use crate::market::types::{Body, Offer};
use crate::policy::{DecisionInput, MarketContext, Role};
use crate::store::Budget;

use super::super::context::runtime;
use super::super::job::admit::{limits_of, usage_of};
use super::super::job::request::{JobRequest, Requester, ResolvedImage, Work};
use super::super::limits::today;
use super::super::{Context, OpsError, policy};
use super::Peer;

#[derive(Debug, Clone, Default)]
pub struct AdvertiseOptions {
    /// Defaults to `market.slots`.
    pub slots: Option<u32>,
    /// Defaults to what the pricing policy quotes for a job of
    /// `limits.maxTokensPerTask`.
    pub price: Option<u64>,
    /// RUV per 1,000 tokens used, when charging by use (0: by task). The
    /// price is then the most a task costs.
    pub token_price: u64,
    /// Defaults to `compliance.allowedModels`.
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Advertised {
    pub node: String,
    #[serde(flatten)]
    pub offer: Offer,
    /// Seconds the offer lives unless refreshed (`serve` refreshes it).
    pub ttl_secs: u32,
}

/// Publishes this node's offer once.
pub fn advertise(ctx: &mut Context, opts: &AdvertiseOptions) -> Result<Advertised, OpsError> {
    let rt = runtime()?;
    let peer = Peer::connect(ctx, &rt)?;
    let offer = offer(ctx, opts)?;
    put_offer(ctx, &rt, &peer, &offer)?;
    Ok(Advertised {
        node: peer.node(),
        offer,
        ttl_secs: peer.settings.offer_ttl_secs,
    })
}

pub(super) fn put_offer(
    ctx: &mut Context,
    rt: &tokio::runtime::Runtime,
    peer: &Peer,
    offer: &Offer,
) -> Result<(), OpsError> {
    ctx.store.append_audit(
        "market.offer",
        &peer.node(),
        &serde_json::to_value(offer).unwrap_or_default(),
    )?;
    let (bytes, _) = message::seal(&peer.key, Body::Offer(offer.clone()))?;
    rt.block_on(peer.transport.put_offer(&peer.node(), bytes))?;
    Ok(())
}

/// The offer from the options and the node's settings; the price, unless
/// given, is the pricing policy's quote (see [`quote`]) at no load.
pub(super) fn offer(ctx: &Context, opts: &AdvertiseOptions) -> Result<Offer, OpsError> {
    let slots = opts.slots.unwrap_or(ctx.settings.market.slots).max(1);
    let max_tokens = u32::try_from(ctx.settings.limits.max_tokens_per_task).unwrap_or(u32::MAX);
    let models = opts
        .models
        .clone()
        .unwrap_or_else(|| ctx.settings.compliance.allowed_models.clone());
    let mut offer = Offer {
        slots,
        busy: 0,
        price: 0,
        models,
        max_tokens,
        images: ctx.settings.compliance.allowed_images.clone(),
        token_price: opts.token_price,
    };
    offer.price = match opts.price {
        Some(price) => price,
        None => quote(ctx, &offer)?,
    };
    Ok(offer)
}

/// Pricing's quote for `offer`: what a job of the largest size it grants
/// costs at its load, with the node's settings and policies in `ctx`.
pub(super) fn quote(ctx: &Context, offer: &Offer) -> Result<u64, OpsError> {
    let engine = ctx.engine()?;
    let mut pipeline = policy::pipeline(ctx, &engine)?;
    let largest = JobRequest {
        id: "offer".into(),
        requester: Requester::Market("market".into()),
        model: offer.models.first().cloned().unwrap_or_default(),
        image: ResolvedImage {
            reference: ctx.settings.docker.image.clone(),
            id: String::new(),
        },
        budget: Budget {
            tokens: u64::from(offer.max_tokens),
            requests: 1,
            timeout_secs: ctx.settings.limits.timeout_secs,
        },
        work: Work::Prompt {
            text: String::new(),
            max_tokens: offer.max_tokens,
        },
        egress: false,
        pre_approved: false,
    };
    let usage = ctx.store.usage_snapshot(today())?;
    let input = DecisionInput {
        job: largest.policy_job().into(),
        usage: usage_of(&usage, limits_of(&ctx.settings)),
        market: MarketContext {
            slots: offer.slots,
            load: f64::from(offer.busy) / f64::from(offer.slots.max(1)),
            reputation: 0.5,
            offered_price: None,
            asked_price: None,
        },
        facts: Vec::new(),
        at: crate::policy::unix_now(),
    };
    let decision = pipeline.decide_role(Role::Pricing, &input);
    decision
        .quote
        .map(|q| q.price)
        .ok_or_else(|| OpsError::Denied {
            reason: format!(
                "pricing gave no price for the offer ({}); set one with --price",
                decision.reason.as_deref().unwrap_or("no reason given")
            ),
        })
}
