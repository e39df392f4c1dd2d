//! The requester: `execute --market` has the job admitted by this node's
//! own policies, chooses among the live offers with the pricing policy
//! (under `market.maxBidPrice` and the balance), waiting a little for the
//! first when none fits yet, and seals the payload and the workspace to
//! every candidate. The market's [`trade`] then posts the task, locks the
//! claimed price in escrow and follows it; this node opens and checks the
//! result, and the task settles on it: paid on a result that decrypts and
//! verifies, refunded on failure or timeout. `bid` changes the bid on a
//! task still open, never beyond what the balance covers.

use std::time::{Duration, Instant};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::crypto::NodeKey;
use crate::market::exchange::Exchange as _;
use crate::market::task::{Needs, better};
use crate::market::trade::{self, Reached};
use crate::market::types::{
    Bid, Body, CommandPayload, CommandTask, Receipt, Task, TaskResult, WorkspaceObject,
};
use crate::market::{Ledger, reputation, workspace};
use crate::policy::{DecisionInput, MarketContext};
use crate::runner::Docker;
use crate::runner::program::WORKSPACE_IN;
use crate::store::{MarketStep, Store};

use super::super::context::runtime;
use super::super::docker_image::pinned_digest;
use super::super::execute::{ExecuteOptions, Program, describe, require_consent};
use super::super::job::admit::{self, AdmittedJob, Confirm, limits_of, usage_of};
use super::super::job::folder::JobFolder;
use super::super::job::request::{JobRequest, Work, new_job_id};
use super::super::job::results::{self, WorkspaceSummary};
use super::super::limits::today;
use super::super::{Context, OpsError, keys, policy};
use super::journal::Journal;
use super::{
    LiveOffer, Peer, accept, b64, catch_up, live_offers, matches_digest, open_sealed, own_job,
    read_verified, reputation_of, secs, short,
};

#[derive(Debug, Clone)]
pub struct MarketExecuteOptions {
    /// The job, as a local `execute` takes it: a prompt, or a command (or
    /// an agent) in an image on a workspace, with its budget. Its timeout
    /// is the time the provider has once the task is locked, by default
    /// `market.taskTimeoutSecs`.
    pub job: ExecuteOptions,
    /// The most to pay; never above `market.maxBidPrice`.
    pub max_price: Option<u64>,
}

/// Progress while a market task is under way.
#[derive(Debug, Clone)]
pub enum MarketProgress {
    /// No offer fits yet, for these reasons; waiting up to `wait_secs` for
    /// one.
    AwaitingOffer {
        reasons: String,
        wait_secs: u32,
    },
    Posted {
        task: String,
        bid: u64,
        candidates: Vec<String>,
    },
    Claimed {
        provider: String,
        price: u64,
    },
    Locked {
        amount: u64,
    },
    Running,
    /// More of the output, as the provider streams it: not yet checked
    /// against the result's digest.
    Output(Vec<u8>),
}

/// How a market task ended for its requester.
#[derive(Debug, Clone, Serialize)]
pub struct MarketRun {
    pub task: String,
    pub provider: Option<String>,
    pub price: Option<u64>,
    /// completed, failed, timed-out, disputed or unclaimed.
    pub outcome: String,
    /// The provider's job state (finished, failed, timed_out, ...).
    pub job_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The result text (empty unless the task completed).
    pub output: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub elapsed_ms: u64,
    /// What this node paid the provider: the receipt's amount (the whole
    /// price without one); none unless the task completed.
    pub paid: Option<u64>,
    /// The provider's signed account of the task's usage upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// A command task's exit code on the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// A command task's workspace as it came back: what changed, and where
    /// `result` finds it to show or apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceSummary>,
}

impl MarketRun {
    pub fn completed(&self) -> bool {
        self.outcome == "completed"
    }
}

/// Runs a job on a peer: the whole of `execute --market`. The job is this
/// owner's own, so it goes through this node's policies first (approval,
/// with `confirm` answering an ask, and the daily limits) and is recorded
/// as a job like one run here, ended with how the market task ended.
pub fn execute(
    ctx: &mut Context,
    opts: &MarketExecuteOptions,
    confirm: Confirm<'_>,
    progress: &mut dyn FnMut(&MarketProgress),
) -> Result<MarketRun, OpsError> {
    require_consent(ctx)?;
    let cap = opts
        .max_price
        .unwrap_or(ctx.settings.market.max_bid_price)
        .min(ctx.settings.market.max_bid_price);
    let rt = runtime()?;
    let peer = Peer::connect(ctx, &rt)?;
    // Loaded before anything is posted: a local key problem must stop the
    // task here, not turn into a dispute of a provider's good result.
    let own_keys = keys::decryption_keys(ctx)?;
    let mut job_opts = opts.job.clone();
    job_opts.timeout_secs = Some(
        job_opts
            .timeout_secs
            .unwrap_or(peer.settings.task_timeout_secs),
    );
    // The image of a command is named by digest, which this node's Docker
    // knows when it has the image; a prompt runs in the provider's own.
    let docker = match job_opts.program {
        Program::Prompt(_) => None,
        _ => rt.block_on(Docker::connect()).ok(),
    };
    let id = new_job_id();
    let folder = JobFolder::create(ctx, &id)?;
    let job = describe(ctx, &rt, (docker.as_ref(), false), &job_opts, id, &folder)?;
    let image = task_image(&job)?;
    let mut ledger = peer.ledger();
    rt.block_on(catch_up(&peer.transport, &mut ledger))?;
    let available = ledger.account(&peer.node()).available;
    // A price asked for that the balance cannot cover would be posted,
    // claimed, and then fail to lock, holding the provider's slot; with
    // nothing available no offer can fit, so there is nothing to wait for.
    if available == 0 || (opts.max_price.is_some() && cap > available) {
        return Err(OpsError::InsufficientBalance {
            available,
            needed: cap,
        });
    }
    let admitted = admit::admit(ctx, job, folder, confirm)?;
    let trade = Trade {
        rt: &rt,
        peer: &peer,
        own_keys: &own_keys,
        job: &admitted,
        image,
        bid: cap.min(available),
        timeout_secs: admitted.grant().timeout_secs,
    };
    let run = trade.run(ctx, &mut ledger, progress);
    trade.remove_objects();
    own_job::end(ctx, admitted, &run)?;
    run
}

/// The image a command task names, by digest: its id on this node, or
/// the digest its reference is pinned to. `None` for a prompt, which runs
/// in the provider's own job image.
fn task_image(job: &JobRequest) -> Result<Option<String>, OpsError> {
    if matches!(job.work, Work::Prompt { .. }) {
        return Ok(None);
    }
    let reference = &job.image.reference;
    if pinned_digest(reference).is_some() {
        return Ok(Some(reference.clone()));
    }
    if !job.image.id.is_empty() {
        return Ok(Some(job.image.id.clone()));
    }
    Err(OpsError::InvalidInput {
        what: format!(
            "a market task names its image by digest, and {reference} is not on this node to \
             read its digest from; load it here (`docker load`) or pin it (`REPO@sha256:…`)"
        ),
    })
}

/// One market task of this node's, from choosing offers to settling.
struct Trade<'a> {
    rt: &'a tokio::runtime::Runtime,
    peer: &'a Peer,
    /// This node's keys, for the output sealed to it.
    own_keys: &'a [NodeKey],
    job: &'a AdmittedJob,
    /// A command's image, by digest.
    image: Option<String>,
    /// The most this node pays: the cap, within the available balance.
    bid: u64,
    timeout_secs: u32,
}

impl Trade<'_> {
    /// Posts the task to the offers that fit, locks the claimed price,
    /// waits for the result and pays or refunds on it: the market's
    /// [`trade`] drives it, and this node records each step.
    fn run(
        &self,
        ctx: &mut Context,
        ledger: &mut Ledger,
        progress: &mut dyn FnMut(&MarketProgress),
    ) -> Result<MarketRun, OpsError> {
        let (rt, peer) = (self.rt, self.peer);
        let candidates = self.await_offers(ctx, ledger, progress)?;
        let task = self.task(&candidates)?;
        let id = task.task.clone();
        let market = peer.exchange();
        let started = Instant::now();
        let reached = rt.block_on(trade::post(
            &market,
            &mut self.journal(&mut ctx.store, progress),
            task,
            ledger,
            secs(peer.settings.claim_wait_secs),
        ))?;
        let unfinished =
            |outcome: &str, provider: Option<String>, price, detail: String| MarketRun {
                task: id.clone(),
                provider,
                price,
                outcome: outcome.into(),
                job_state: None,
                detail: Some(detail),
                output: String::new(),
                input_tokens: 0,
                output_tokens: 0,
                elapsed_ms: elapsed_ms(started),
                paid: None,
                receipt: None,
                exit_code: None,
                workspace: None,
            };
        let following = match reached {
            Reached::Unclaimed { detail } => {
                return Ok(unfinished("unclaimed", None, None, detail));
            }
            Reached::Unfunded {
                provider,
                price,
                detail,
            } => return Ok(unfinished("unfunded", Some(provider), Some(price), detail)),
            Reached::Followed(following) => following,
        };
        let ended = following.end(|result| self.open(ctx, result));
        let closed = rt.block_on(ended.settle(
            &market,
            &mut self.journal(&mut ctx.store, progress),
            ledger,
        ))?;
        let result = closed.result.as_ref();
        let (output, workspace) = closed.opened.unwrap_or_default();
        Ok(MarketRun {
            task: id,
            provider: Some(closed.provider),
            price: Some(closed.price),
            outcome: closed.settled.outcome.as_str().into(),
            job_state: result.map(|r| r.state.clone()),
            detail: closed.detail,
            output,
            input_tokens: result.map_or(0, |r| r.input_tokens),
            output_tokens: result.map_or(0, |r| r.output_tokens),
            elapsed_ms: elapsed_ms(started),
            paid: closed.settled.paid,
            receipt: closed.receipt,
            exit_code: result.and_then(|r| r.exit_code),
            workspace,
        })
    }

    /// The task to post to `candidates`: the payload (a prompt, or a
    /// command line) and the workspace sealed to every one of them.
    fn task(&self, candidates: &[LiveOffer]) -> Result<Task, OpsError> {
        let job = self.job.request();
        let keys: Vec<_> = candidates.iter().map(|o| o.key.clone()).collect();
        let (payload, max_tokens) = match &job.work {
            Work::Prompt { text, max_tokens } => (text.clone().into_bytes(), *max_tokens),
            Work::Command(c) => {
                let payload = CommandPayload {
                    argv: c.argv.clone(),
                    env: c.env.clone(),
                    stdin: c.stdin.clone(),
                };
                (
                    serde_json::to_vec(&payload).expect("a command line of strings encodes"),
                    0,
                )
            }
        };
        let mut sealed = Vec::new();
        crate::crypto::encrypt(
            payload.as_slice(),
            &mut sealed,
            &keys,
            crate::crypto::DEFAULT_SEGMENT_SIZE,
        )?;
        let command = match (&job.work, &self.image) {
            (Work::Command(c), Some(image)) => Some(CommandTask {
                image: image.clone(),
                reference: job.image.reference.clone(),
                agent: c.agent.clone(),
                budget_tokens: job.budget.tokens,
                max_requests: job.budget.requests,
                egress: job.egress,
                workspace: match &c.workspace {
                    Some(_) => Some(self.send_workspace(&keys)?),
                    None => None,
                },
            }),
            _ => None,
        };
        Ok(Task {
            task: job.id.clone(),
            model: job.model.clone(),
            max_tokens,
            prompt_bytes: payload.len() as u64,
            prompt_sha256: hex::encode(Sha256::digest(&payload)),
            bid: self.bid,
            candidates: candidates.iter().map(|o| o.node.clone()).collect(),
            timeout_secs: self.timeout_secs,
            payload: b64(&sealed),
            command,
        })
    }

    /// Where the task's steps are kept: the job's market record and the
    /// audit log; what it hears goes to `progress`.
    fn journal<'a>(
        &'a self,
        store: &'a mut Store,
        progress: &'a mut dyn FnMut(&MarketProgress),
    ) -> Journal<'a> {
        Journal::new(
            store,
            self.peer.window_ms(),
            self.job.request(),
            self.own_keys,
            progress,
        )
    }

    /// The result's output and, for a command task, its workspace, which
    /// lands where a local job's does for `result` to show and apply. Any
    /// part that does not open or verify disputes the whole result.
    fn open(
        &self,
        ctx: &Context,
        result: &TaskResult,
    ) -> Result<(String, Option<WorkspaceSummary>), String> {
        let text = open_result(self.own_keys, result)?;
        let job = self.job.request();
        let (Some(object), Work::Command(c)) = (&result.workspace, &job.work) else {
            return Ok((text, None));
        };
        let Some(snapshot) = &c.workspace else {
            return Err("the result carries a workspace although the task sent none".into());
        };
        let scratch = results::path(ctx, &job.id);
        let dispute = |e: &dyn std::fmt::Display| {
            // What did not verify is not kept.
            let _ = std::fs::remove_dir_all(&scratch);
            format!("the returned workspace: {e}")
        };
        let dest = results::create(ctx, &job.id).map_err(|e| dispute(&e))?;
        let received = workspace::receive(
            self.rt.handle(),
            &self.peer.transport,
            object,
            self.own_keys,
            &scratch,
            (&dest, ctx.workspace_limits(), None),
        )
        .map_err(|e| dispute(&e))?;
        let base = self.job.folder().path().join(WORKSPACE_IN);
        let base = Dir::open_ambient_dir(&base, ambient_authority()).map_err(|e| dispute(&e))?;
        let source = snapshot.source.display().to_string();
        let summary = results::save(ctx, &job.id, &source, &snapshot.manifest, &base, received)
            .map_err(|e| dispute(&e))?;
        Ok((text, Some(summary)))
    }

    /// Removes the task's workspace objects, there or not: nobody reads
    /// them once the task is over.
    fn remove_objects(&self) {
        let job = self.job.request();
        if !matches!(&job.work, Work::Command(c) if c.workspace.is_some()) {
            return;
        }
        for way in ["in", "out"] {
            let name = object_name(&job.id, way);
            if let Err(e) = self
                .rt
                .block_on(self.peer.transport.delete_workspace(&name))
            {
                tracing::warn!(object = %name, error = %e, "could not remove a workspace object");
            }
        }
    }

    /// Packs, seals to the candidates and stores the job's copy of its
    /// workspace.
    fn send_workspace(
        &self,
        readers: &[crate::crypto::PublicKey],
    ) -> Result<WorkspaceObject, OpsError> {
        let folder = self.job.folder();
        let copy = folder.path().join(WORKSPACE_IN);
        let dir =
            Dir::open_ambient_dir(&copy, ambient_authority()).map_err(|source| OpsError::Read {
                path: copy.clone(),
                source,
            })?;
        Ok(workspace::send(
            self.rt.handle(),
            &self.peer.transport,
            &dir,
            folder.path(),
            &object_name(&self.job.request().id, "in"),
            readers,
        )?)
    }

    /// The offers that fit, best first. None may be live yet (a provider
    /// started a moment ago has not advertised): this waits up to
    /// `market.offerWaitSecs` for the first, saying once that it waits.
    fn await_offers(
        &self,
        ctx: &mut Context,
        ledger: &Ledger,
        progress: &mut dyn FnMut(&MarketProgress),
    ) -> Result<Vec<LiveOffer>, OpsError> {
        let wait = self.peer.settings.offer_wait_secs;
        let deadline = Instant::now() + secs(wait);
        let me = self.peer.node();
        let mut told = false;
        loop {
            let offers = self.rt.block_on(live_offers(self.peer, &mut ctx.store))?;
            let reasons = match choose(ctx, self.job.request(), &me, &offers, ledger, self.bid) {
                Err(OpsError::NoOffer { reasons }) => reasons,
                chosen => return chosen,
            };
            if Instant::now() >= deadline {
                return Err(OpsError::NoOffer {
                    reasons: format!(
                        "{reasons}; waited {wait} s (market.offerWaitSecs): is a provider \
                         running `claude-max-market serve`?"
                    ),
                });
            }
            if !told {
                progress(&MarketProgress::AwaitingOffer {
                    reasons,
                    wait_secs: wait,
                });
                told = true;
            }
            std::thread::sleep(OFFER_POLL);
        }
    }
}

/// How often to look for offers while waiting for one: each look reads
/// every offer in the bucket.
const OFFER_POLL: Duration = Duration::from_millis(500);

/// The offers this task may go to, best first ([`better`]): those that
/// meet its [`Needs`] and that this node's pricing policy accepts given
/// the provider's reputation.
fn choose(
    ctx: &Context,
    job: &JobRequest,
    me: &str,
    offers: &[LiveOffer],
    ledger: &Ledger,
    cap: u64,
) -> Result<Vec<LiveOffer>, OpsError> {
    let reps = reputation::all(ledger);
    let engine = ctx.engine()?;
    let mut pipeline = policy::pipeline(ctx, &engine)?;
    let usage = ctx.store.usage_snapshot(today())?;
    let image = crate::policy::Image {
        reference: job.image.reference.clone(),
        digest: job.image.id.clone(),
    };
    let needs = Needs {
        model: &job.model,
        tokens: job.budget.tokens,
        image: (!matches!(job.work, Work::Prompt { .. })).then_some(&image),
        cap,
    };
    let mut fits = Vec::new();
    let mut reasons = Vec::new();
    for o in offers {
        let who = short(&o.node);
        let rep = reputation_of(&reps, &o.node).as_provider;
        let refusal = if o.node == me {
            continue;
        } else if let Some(unmet) = needs.unmet_by(&o.offer) {
            Some(format!("{who} {unmet}"))
        } else {
            let input = DecisionInput {
                job: job.policy_job().into(),
                usage: usage_of(&usage, limits_of(&ctx.settings)),
                market: MarketContext {
                    slots: o.offer.slots,
                    load: f64::from(o.offer.busy) / f64::from(o.offer.slots.max(1)),
                    reputation: rep,
                    offered_price: Some(cap),
                    asked_price: Some(o.offer.price),
                },
                facts: Vec::new(),
                at: crate::policy::unix_now(),
            };
            match pipeline.consider_bid(&input, o.offer.price) {
                Ok(None) => None,
                Ok(Some(reason)) => Some(format!("{who}: pricing refused: {reason}")),
                Err(failure) => Some(format!("{who}: pricing failed: {failure}")),
            }
        };
        match refusal {
            Some(reason) => reasons.push(reason),
            None => fits.push((o.clone(), rep)),
        }
    }
    if fits.is_empty() {
        return Err(OpsError::NoOffer {
            reasons: if reasons.is_empty() {
                "there are no provider offers".into()
            } else {
                reasons.join("; ")
            },
        });
    }
    fits.sort_by(|(a, ra), (b, rb)| better((&a.node, &a.offer, *ra), (&b.node, &b.offer, *rb)));
    Ok(fits.into_iter().map(|(o, _)| o).collect())
}

/// Decrypts a result and checks it against its digest.
fn open_result(keys: &[NodeKey], result: &TaskResult) -> Result<String, String> {
    let plain = open_sealed(keys, &result.payload, "the result")?;
    if !matches_digest(&plain, &result.sha256) {
        return Err("the result does not match its digest".into());
    }
    String::from_utf8(plain).map_err(|_| "the result is not UTF-8 text".into())
}

/// The object a task's workspace travels in, one way (`in`, `out`).
pub(super) fn object_name(task: &str, way: &str) -> String {
    format!("{task}-{way}")
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Serialize)]
pub struct BidPlaced {
    pub task: String,
    pub bid: u64,
    pub previous: u64,
}

/// Changes the bid on a task this node posted that nobody has claimed yet.
pub fn bid(ctx: &mut Context, task_id: &str, max_price: u64) -> Result<BidPlaced, OpsError> {
    let cap = ctx.settings.market.max_bid_price;
    if max_price > cap {
        return Err(OpsError::InvalidInput {
            what: format!(
                "--max-price {max_price} is over market.maxBidPrice ({cap}); raise that first"
            ),
        });
    }
    let rt = runtime()?;
    let peer = Peer::connect(ctx, &rt)?;
    let subject = format!("cmm.task.{task_id}");
    let (from, task) = read_verified(&rt, &peer, &mut ctx.store, &subject, None)?
        .into_iter()
        .find_map(|m| match m.body {
            Body::Task(task) if task.task == task_id => Some((m.from, task)),
            _ => None,
        })
        .ok_or_else(|| OpsError::UnknownTask {
            task: task_id.to_owned(),
            hint: "; `market tasks` lists the open ones".into(),
        })?;
    if from != peer.node() {
        return Err(OpsError::InvalidInput {
            what: format!(
                "task {task_id} was posted by {}, not by this node; only its requester may bid on it",
                short(&from)
            ),
        });
    }
    if rt.block_on(peer.transport.claim_of(task_id))?.is_some() {
        return Err(OpsError::InvalidInput {
            what: format!("task {task_id} is already claimed; its price is settled"),
        });
    }
    // A bid the balance cannot cover would be claimed and never locked,
    // keeping the provider that claimed it waiting for nothing.
    let mut ledger = peer.ledger();
    rt.block_on(catch_up(&peer.transport, &mut ledger))?;
    let available = ledger.account(&peer.node()).available;
    if max_price > available {
        return Err(OpsError::InsufficientBalance {
            available,
            needed: max_price,
        });
    }
    let (market, window, me) = (peer.exchange(), peer.window_ms(), peer.node());
    let previous = rt.block_on(trade::current_bid(&market, &task, |m| {
        accept(&mut ctx.store, &m.bytes, m.at, window, Some(&me))
    }))?;
    let step = MarketStep {
        task: task_id,
        role: "requester",
        counterpart: None,
        price: None,
        state: "posted",
        detail: None,
    };
    ctx.store.market_step(
        step,
        "market.bid",
        &json!({ "bid": max_price, "previous": previous }),
    )?;
    rt.block_on(market.publish(Body::Bid(Bid {
        task: task_id.to_owned(),
        bid: max_price,
    })))?;
    Ok(BidPlaced {
        task: task_id.to_owned(),
        bid: max_price,
        previous,
    })
}
