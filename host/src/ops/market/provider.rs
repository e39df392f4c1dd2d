//! The provider: `serve` puts this node's offer and keeps it alive, keeps
//! the tasks addressed to this node on the market's desk, and decides on
//! each with the active policies (approval, limits, compliance, pricing).
//! For a task it takes, the market's [`provide`] claims it, waits for the
//! requester's lock and delivers it; the job runs here through the same
//! Docker + gateway path as a local `execute`.
//!
//! Each task is handled on its own thread with its own database connection
//! and a pipeline built for it, so a policy changed while serving applies
//! to the next task and never to one already running. The offer follows
//! them too: each refresh quotes it again, so changed rates show on the
//! market without a restart. A task id is the job id, and the store
//! refuses to admit a job id twice: a redelivered task is never run twice.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::gateway::ApiKey;
use crate::market::message::{self, now_ms};
use crate::market::provide::{self, Delivery, Done};
use crate::market::reputation;
use crate::market::serving::{Desk, Intake, Taken};
use crate::market::transport::{Start, TASKS_STREAM};
use crate::market::types::{Body, Claim, Offer, Task};
use crate::market::{Ledger, Signed};
use crate::metrics;
use crate::policy::MarketContext;
use crate::runner::{Docker, RunnerError, Stream};
use crate::store::{JobEnd, MarketStep};

use super::super::context::runtime;
use super::super::execute::require_consent;
use super::super::job::JobEvent;
use super::super::job::admit::{AdmittedJob, MarketTerms, admit_market};
use super::super::job::folder::JobFolder;
use super::super::job::request::{JobRequest, Requester};
use super::super::job::run::run as run_job;
use super::super::{Context, OpsError, reconcile};
use super::offer::{AdvertiseOptions, offer, put_offer, quote};
use super::{Peer, accept, catch_up, count_drop, receipt, secs, work};

/// The most output a market job returns; the rest stays in the provider's log.
const MAX_RESULT_BYTES: usize = 512 * 1024;

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub advertise: AdvertiseOptions,
    /// Ask approval to let market jobs run without the owner at a prompt
    /// (honoured only where `compliance.allowAutoApprove` lets it).
    pub approve_all: bool,
    /// Stop after this many tasks have been handled (for scripts and tests).
    pub max_tasks: Option<u32>,
}

/// What `serve` reports as it goes.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum ServeEvent {
    Serving {
        node: String,
        #[serde(flatten)]
        offer: Offer,
    },
    /// Passed over by the policies; a raised bid brings it back.
    Skipped {
        task: String,
        reason: String,
    },
    /// Every slot is busy; considered when one frees, while its requester
    /// still waits.
    Waiting {
        task: String,
        reason: String,
    },
    BidRaised {
        task: String,
        bid: u64,
    },
    Claimed {
        task: String,
        requester: String,
        price: u64,
    },
    Lost {
        task: String,
        reason: String,
    },
    Finished {
        task: String,
        state: String,
        output_tokens: u64,
        elapsed_ms: u64,
    },
    Failed {
        task: String,
        reason: String,
    },
    Stopping {
        running: u32,
        abort: bool,
    },
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServeSummary {
    pub handled: u32,
    pub completed: u32,
}

/// What every task handler shares.
struct Shared {
    home: PathBuf,
    peer: Peer,
    ledger: Mutex<Ledger>,
    approve_all: bool,
    /// The offer as first put. Its slots, models and largest job hold while
    /// serving; its price is `price`'s.
    offer: Offer,
    /// What this node asks now: the fixed price, or pricing's latest quote.
    price: AtomicU64,
    /// The price the owner set (`--price`): what this node asks instead of
    /// pricing's quote.
    fixed_price: Option<u64>,
    busy: AtomicU32,
    cancel: CancellationToken,
    events: mpsc::Sender<ServeEvent>,
}

/// Runs the provider until SIGTERM or Ctrl-C (or `max_tasks`), reporting
/// to `report` as it goes.
pub fn serve(
    ctx: &mut Context,
    opts: &ServeOptions,
    report: &mut dyn FnMut(&ServeEvent),
) -> Result<ServeSummary, OpsError> {
    require_consent(ctx)?;
    ctx.api_key()?;
    let rt = runtime()?;
    let docker = rt.block_on(Docker::connect())?;
    // A provider killed mid-task left its container and job behind: they
    // are ended before this one takes anything.
    rt.block_on(reconcile::run(ctx, Some(&docker)))?;
    let image = ctx.settings.docker.image.clone();
    if rt.block_on(docker.image(&image))?.is_none() {
        return Err(RunnerError::ImageMissing { image }.into());
    }
    let peer = Peer::connect(ctx, &rt)?;
    let offer = offer(ctx, &opts.advertise)?;
    put_offer(ctx, &rt, &peer, &offer)?;
    let (events, received) = mpsc::channel();
    let shared = Arc::new(Shared {
        home: ctx.home.root().to_path_buf(),
        ledger: Mutex::new(peer.ledger()),
        peer,
        approve_all: opts.approve_all,
        price: AtomicU64::new(offer.price),
        offer: offer.clone(),
        fixed_price: opts.advertise.price,
        busy: AtomicU32::new(0),
        cancel: CancellationToken::new(),
        events,
    });
    report(&ServeEvent::Serving {
        node: shared.peer.node(),
        offer,
    });
    let summary = rt.block_on(serve_loop(ctx, &shared, opts, &received, report));
    // Withdraw first: no requester should pick a node that is leaving.
    if let Err(e) = rt.block_on(shared.peer.transport.withdraw_offer(&shared.peer.node())) {
        tracing::warn!(error = %e, "could not withdraw the offer");
    }
    let running = shared.busy.load(Ordering::SeqCst);
    let abort = shared.peer.settings.abort_on_stop;
    report(&ServeEvent::Stopping { running, abort });
    if abort {
        shared.cancel.cancel();
    }
    let mut summary = summary?;
    while shared.busy.load(Ordering::SeqCst) > 0 {
        if let Ok(event) = received.recv_timeout(Duration::from_millis(200)) {
            tally(&mut summary, &event);
            report(&event);
        }
    }
    while let Ok(event) = received.try_recv() {
        tally(&mut summary, &event);
        report(&event);
    }
    ctx.store
        .append_audit("market.serve-stopped", &shared.peer.node(), &json!(summary))?;
    Ok(summary)
}

/// Counts what became of a task, in the summary and the process's metrics.
fn tally(summary: &mut ServeSummary, event: &ServeEvent) {
    let state = match event {
        ServeEvent::Skipped { .. } => Some("skipped"),
        ServeEvent::Claimed { .. } => Some("claimed"),
        ServeEvent::Lost { .. } => Some("lost"),
        ServeEvent::Failed { .. } => Some("error"),
        ServeEvent::Finished { state, .. } => Some(state.as_str()),
        _ => None,
    };
    if let Some(state) = state {
        metrics::global().market_task(state);
    }
    match event {
        ServeEvent::Finished { state, .. } => {
            summary.handled += 1;
            if state == "finished" {
                summary.completed += 1;
            }
        }
        ServeEvent::Failed { .. } | ServeEvent::Lost { .. } => summary.handled += 1,
        _ => {}
    }
}

async fn serve_loop(
    ctx: &mut Context,
    shared: &Arc<Shared>,
    opts: &ServeOptions,
    received: &mpsc::Receiver<ServeEvent>,
    report: &mut dyn FnMut(&ServeEvent),
) -> Result<ServeSummary, OpsError> {
    let peer = &shared.peer;
    let since = now_ms() - i64::from(peer.settings.claim_wait_secs) * 1000;
    // Tasks and bids in one ordered feed: a bid never overtakes its task.
    let mut feed = peer
        .transport
        .watch(TASKS_STREAM, "", Start::Since(since))
        .await?;
    let mut refresh = tokio::time::interval(secs(peer.settings.offer_ttl_secs) / 3);
    let mut drain = tokio::time::interval(Duration::from_millis(100));
    let mut term =
        signal(SignalKind::terminate()).map_err(|source| OpsError::Runtime { source })?;
    let mut summary = ServeSummary::default();
    let mut desk = Desk::new(peer.node(), peer.window_ms());
    let mut advertised_busy = 0;
    loop {
        if opts.max_tasks.is_some_and(|max| summary.handled >= max) {
            break;
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = refresh.tick() => {
                desk.expire(now_ms() - i64::from(peer.settings.claim_wait_secs) * 1000);
                advertised_busy = refresh_offer(shared).await;
            }
            _ = drain.tick() => {
                while let Ok(event) = received.try_recv() {
                    settle(&mut desk, &event);
                    tally(&mut summary, &event);
                    report(&event);
                }
                let busy = shared.busy.load(Ordering::SeqCst);
                metrics::global().market_running(busy);
                if busy < advertised_busy {
                    for id in desk.waiting() {
                        consider(&mut desk, shared, &id);
                    }
                }
                // Requesters skip busy offers: say at once when a slot frees.
                if shared.busy.load(Ordering::SeqCst) != advertised_busy {
                    advertised_busy = refresh_offer(shared).await;
                }
            }
            next = feed.next() => {
                let Some(stored) = next else { break };
                let stored = match stored {
                    Ok(stored) => stored,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading tasks failed");
                        continue;
                    }
                };
                let Some(msg) = accept(&mut ctx.store, &stored.bytes, stored.at, peer.window_ms(), None) else {
                    continue;
                };
                let store = &ctx.store;
                let handled = |id: &str| store.market_task(id).map(|row| row.is_some());
                match desk.receive(msg, stored.at, handled)? {
                    Intake::Posted(id) => {
                        if shared.busy.load(Ordering::SeqCst) >= shared.offer.slots {
                            report(&ServeEvent::Waiting { task: id, reason: "every slot is busy".into() });
                            continue;
                        }
                        consider(&mut desk, shared, &id);
                    }
                    Intake::Raised { task, bid } => {
                        report(&ServeEvent::BidRaised { task: task.clone(), bid });
                        consider(&mut desk, shared, &task);
                    }
                    Intake::Refused(reason) => count_drop(&mut ctx.store, reason),
                    Intake::Ignored => {}
                }
            }
        }
    }
    Ok(summary)
}

/// Hands task `id` to a handler thread when the desk gives it out (a slot
/// is free and the policies have not judged it at its current bid).
fn consider(desk: &mut Desk, shared: &Arc<Shared>, id: &str) {
    let free = shared.busy.load(Ordering::SeqCst) < shared.offer.slots;
    let Some((msg, task)) = desk.hand_out(id, free) else {
        return;
    };
    shared.busy.fetch_add(1, Ordering::SeqCst);
    let handler = Arc::clone(shared);
    std::thread::spawn(move || {
        let id = task.task.clone();
        let event = take(&handler, &msg, task).unwrap_or_else(|e| ServeEvent::Failed {
            task: id,
            reason: e.to_string(),
        });
        let _ = handler.events.send(event);
        handler.busy.fetch_sub(1, Ordering::SeqCst);
    });
}

/// Follows a handler's outcome on the desk: a task the policies passed
/// over stays; one that was taken, lost or failed is done.
fn settle(desk: &mut Desk, event: &ServeEvent) {
    match event {
        ServeEvent::Skipped { task, .. } => desk.passed_over(task),
        ServeEvent::Lost { task, .. }
        | ServeEvent::Finished { task, .. }
        | ServeEvent::Failed { task, .. } => desk.done(task),
        _ => {}
    }
}

/// Puts the offer again with the current load and price; returns the load
/// put. Without a fixed price it is quoted again from the settings and
/// policies as they are now: the owner may change the rates while serving,
/// and requesters choose by the advertised price.
async fn refresh_offer(shared: &Shared) -> u32 {
    let peer = &shared.peer;
    let mut offer = Offer {
        busy: shared.busy.load(Ordering::SeqCst),
        price: shared.price.load(Ordering::SeqCst),
        ..shared.offer.clone()
    };
    if shared.fixed_price.is_none() {
        match requote(shared, &offer) {
            Ok(price) => offer.price = price,
            Err(e) => {
                tracing::warn!(error = %e, "could not quote the offer again; its price stays")
            }
        }
    }
    let busy = offer.busy;
    match message::seal(&peer.key, Body::Offer(offer)) {
        Ok((bytes, _)) => {
            if let Err(e) = peer.transport.put_offer(&peer.node(), bytes).await {
                tracing::warn!(error = %e, "could not refresh the offer");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not sign the offer"),
    }
    busy
}

/// Pricing's quote for `offer` from the settings and policies on disk now;
/// a price that changed is recorded on the audit log before it is put.
fn requote(shared: &Shared, offer: &Offer) -> Result<u64, OpsError> {
    let mut ctx = Context::open(Some(shared.home.clone()))?;
    let price = quote(&ctx, offer)?;
    if shared.price.load(Ordering::SeqCst) != price {
        let changed = Offer {
            price,
            ..offer.clone()
        };
        ctx.store
            .append_audit("market.offer", &shared.peer.node(), &json!(changed))?;
        shared.price.store(price, Ordering::SeqCst);
    }
    Ok(price)
}

/// Handles one task from decision to delivered result.
fn take(shared: &Shared, msg: &Signed, task: Task) -> Result<ServeEvent, OpsError> {
    let rt = runtime()?;
    let mut ctx = Context::open(Some(shared.home.clone()))?;
    let peer = &shared.peer;
    let (api_key, _) = ctx.api_key()?;
    let docker = rt.block_on(Docker::connect())?;
    let skip = |reason: String| {
        Ok(ServeEvent::Skipped {
            task: task.task.clone(),
            reason,
        })
    };
    let requester_rep = {
        let mut ledger = shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
        rt.block_on(catch_up(&peer.transport, &mut ledger))?;
        reputation::of(&ledger, &msg.from).as_requester
    };
    // Opened before anything is claimed: a task this node cannot run is
    // one it must not take.
    let folder = JobFolder::create(&ctx, &task.task)?;
    let opened = match work::open(&mut ctx, &rt, &docker, peer, (&task, &msg.from), &folder)? {
        Ok(opened) => opened,
        Err(reason) => return skip(reason),
    };
    let request = JobRequest {
        id: task.task.clone(),
        requester: Requester::Market(msg.from.clone()),
        model: task.model.clone(),
        image: opened.image,
        budget: opened.budget,
        work: opened.work,
        egress: opened.egress,
        pre_approved: shared.approve_all,
    };
    let terms = MarketTerms {
        market: MarketContext {
            slots: shared.offer.slots,
            load: f64::from(shared.busy.load(Ordering::SeqCst).saturating_sub(1))
                / f64::from(shared.offer.slots),
            reputation: requester_rep,
            offered_price: Some(shared.price.load(Ordering::SeqCst)),
            asked_price: Some(task.bid),
        },
        fixed: shared.fixed_price,
        bid: task.bid,
    };
    let (mut admitted, price) = match admit_market(&mut ctx, request, folder, terms)? {
        Ok(taken) => taken,
        Err(reason) => return skip(format!("refused by policy: {reason}")),
    };

    // The claim: exactly one provider's create succeeds.
    let claim = Claim {
        task: task.task.clone(),
        requester: msg.from.clone(),
        price,
    };
    let step = MarketStep {
        task: &task.task,
        role: "provider",
        counterpart: Some(&msg.from),
        price: Some(price),
        state: "claiming",
        detail: None,
    };
    ctx.store
        .market_step(step, "market.claim", &json!({ "claim": claim }))?;
    let market = peer.exchange();
    let Some(taken) = rt.block_on(provide::claim(&market, claim))? else {
        let reason = "another provider claimed it first";
        ctx.store
            .end_job(&task.task, JobEnd::Cancelled, None, Some(reason))?;
        ctx.store.market_step(
            MarketStep {
                state: "lost",
                ..step
            },
            "market.claim-lost",
            &json!({}),
        )?;
        return Ok(ServeEvent::Lost {
            task: task.task,
            reason: reason.into(),
        });
    };
    let _ = shared.events.send(ServeEvent::Claimed {
        task: task.task.clone(),
        requester: msg.from.clone(),
        price,
    });

    // Run only once the requester's escrow is on the ledger.
    let locked = provide::await_lock(
        &market,
        &shared.ledger,
        &taken,
        secs(peer.settings.claim_wait_secs),
        shared.cancel.cancelled(),
    );
    let Some(timeout_secs) = rt.block_on(locked)? else {
        let reason = "the requester did not lock the price in time";
        ctx.store
            .end_job(&task.task, JobEnd::Cancelled, None, Some(reason))?;
        ctx.store.market_step(
            MarketStep {
                state: "abandoned",
                detail: Some(reason),
                ..step
            },
            "market.abandoned",
            &json!({ "reason": reason }),
        )?;
        return Ok(ServeEvent::Failed {
            task: task.task,
            reason: reason.into(),
        });
    };
    ctx.store.market_step(
        MarketStep {
            state: "running",
            ..step
        },
        "market.running",
        &json!({ "timeout_secs": timeout_secs }),
    )?;
    admitted.narrow_timeout(timeout_secs);
    let running = Running {
        rt: &rt,
        docker: &docker,
        key: api_key,
        requester: &msg.key,
        taken: &taken,
    };
    deliver(shared, &mut ctx, running, admitted, step)
}

/// What running a claimed task needs.
struct Running<'a> {
    rt: &'a tokio::runtime::Runtime,
    docker: &'a Docker,
    key: ApiKey,
    requester: &'a crate::crypto::PublicKey,
    taken: &'a Taken,
}

/// Runs a locked task, streaming its output to the requester as parts,
/// and delivers its receipt and result sealed to the requester.
fn deliver(
    shared: &Shared,
    ctx: &mut Context,
    running: Running<'_>,
    admitted: AdmittedJob,
    step: MarketStep<'_>,
) -> Result<ServeEvent, OpsError> {
    let (peer, rt, task) = (&shared.peer, running.rt, step.task);
    let market = peer.exchange();
    let delivery = Delivery::new(&market, task, running.requester);
    rt.block_on(delivery.running())?;
    let mut output = Vec::new();
    let (pieces, received) = mpsc::channel::<Vec<u8>>();
    let report = std::thread::scope(|scope| {
        let (handle, delivery) = (rt.handle(), &delivery);
        scope.spawn(move || delivery.stream_parts(handle, received));
        let pieces = pieces;
        let report = run_job(
            ctx,
            rt,
            running.docker,
            admitted,
            running.key,
            shared.cancel.child_token(),
            &mut |event| {
                if let JobEvent::Output(Stream::Stdout, bytes) = event
                    && output.len() < MAX_RESULT_BYTES
                {
                    let room = MAX_RESULT_BYTES - output.len();
                    let piece = &bytes[..bytes.len().min(room)];
                    output.extend_from_slice(piece);
                    let _ = pieces.send(piece.to_vec());
                }
            },
        );
        // The stream ends with the job: its last part goes out before the
        // result.
        drop(pieces);
        report
    })?;

    let receipt = running
        .taken
        .receipt(receipt::metered(ctx, task)?, shared.offer.token_price);
    ctx.store.append_audit(
        "market.receipt",
        task,
        &serde_json::to_value(&receipt).unwrap_or_default(),
    )?;
    let workspace = match &report.workspace {
        Some(kept) if kept.returned => {
            match work::send_back(ctx, rt, peer, task, running.requester) {
                Ok(object) => Some(object),
                Err(e) => {
                    tracing::warn!(task, error = %e, "could not send the workspace back");
                    None
                }
            }
        }
        _ => None,
    };
    let result = delivery.result(Done {
        state: report.state.clone(),
        output,
        input_tokens: report.input_tokens,
        output_tokens: report.output_tokens,
        exit_code: report.exit_code,
        workspace,
    })?;
    ctx.store.market_step(
        MarketStep {
            state: if report.state == "finished" {
                "delivered"
            } else {
                "failed"
            },
            detail: report.detail.as_deref(),
            ..step
        },
        "market.result",
        &json!({
            "state": report.state,
            "sha256": result.sha256,
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
        }),
    )?;
    rt.block_on(delivery.deliver(receipt, result))?;
    Ok(ServeEvent::Finished {
        task: task.to_owned(),
        state: report.state,
        output_tokens: report.output_tokens,
        elapsed_ms: report.elapsed_ms,
    })
}
