//! `advertise`, `serve`, `bid`, and `market offers | tasks | stats |
//! balance | ledger | result | grant`. `execute --market` lives with
//! `execute`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::ops::Context;
use crate::ops::market::{self, AdvertiseOptions, ServeEvent, ServeOptions};

use super::output::short;
use super::{Finish, Output, serve_metrics};

#[derive(Debug, Clone, clap::Args)]
pub struct OfferArgs {
    /// Market jobs run at once (default: market.slots).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    slots: Option<u32>,
    /// Asking price per job in RUV (default: the pricing policy's quote); with --token-price, the most a job costs.
    #[arg(long, value_name = "P")]
    price: Option<u64>,
    /// Charge by use: RUV per 1,000 tokens a job uses, up to the price (its receipt says what it cost).
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..))]
    token_price: Option<u64>,
    /// Models offered, comma-separated (default: compliance.allowedModels).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    models: Option<Vec<String>>,
}

impl OfferArgs {
    fn options(self) -> AdvertiseOptions {
        AdvertiseOptions {
            slots: self.slots,
            price: self.price,
            token_price: self.token_price.unwrap_or(0),
            models: self.models,
        }
    }
}

pub fn advertise(home: Option<PathBuf>, args: OfferArgs, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let ad = market::advertise(&mut ctx, &args.options())?;
    out.emit(&ad, |w| {
        writeln!(
            w,
            "offered {} slot(s) at {} RUV for {} as {}; it lapses in {} s unless `serve` keeps it alive",
            ad.offer.slots,
            ad.offer.price,
            ad.offer.models.join(","),
            short(&ad.node),
            ad.ttl_secs
        )
    })?;
    Ok(Finish::Done)
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    offer: OfferArgs,
    /// Ask approval to run market jobs without a prompt (honoured only if compliance.allowAutoApprove is on).
    #[arg(long)]
    approve_all: bool,
    /// Stop after handling this many tasks.
    #[arg(long, value_name = "N")]
    max_tasks: Option<u32>,
    /// Serve Prometheus metrics at http://ADDR/metrics while serving.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

pub fn serve(home: Option<PathBuf>, args: ServeArgs, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let _metrics = serve_metrics(args.metrics)?;
    let opts = ServeOptions {
        advertise: args.offer.options(),
        approve_all: args.approve_all,
        max_tasks: args.max_tasks,
    };
    let json = out.json();
    // Events go out as they happen: one JSON object per line with --json.
    let summary = market::serve(&mut ctx, &opts, &mut |event| {
        let mut w = std::io::stdout().lock();
        let _ = if json {
            serde_json::to_writer(&mut w, event)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(w))
        } else {
            writeln!(w, "{}", describe(event))
        };
        let _ = w.flush();
    })?;
    if !json {
        println!(
            "stopped after {} task(s), {} completed",
            summary.handled, summary.completed
        );
    }
    Ok(Finish::Done)
}

fn describe(event: &ServeEvent) -> String {
    match event {
        ServeEvent::Serving { node, offer } => format!(
            "serving as {}: {} slot(s) at {} RUV for {} (Ctrl-C or SIGTERM stops)",
            short(node),
            offer.slots,
            offer.price,
            offer.models.join(",")
        ),
        ServeEvent::Skipped { task, reason } => format!("task {task}: skipped: {reason}"),
        ServeEvent::Waiting { task, reason } => {
            format!("task {task}: waiting: {reason}; taken up when a slot frees")
        }
        ServeEvent::BidRaised { task, bid } => {
            format!("task {task}: bid raised to {bid} RUV; asking the policies again")
        }
        ServeEvent::Claimed {
            task,
            requester,
            price,
        } => format!(
            "task {task}: claimed for {} at {price} RUV",
            short(requester)
        ),
        ServeEvent::Lost { task, reason } => format!("task {task}: not ours: {reason}"),
        ServeEvent::Finished {
            task,
            state,
            output_tokens,
            elapsed_ms,
        } => format!(
            "task {task}: {state} in {elapsed_ms} ms, {output_tokens} output tokens; result sent"
        ),
        ServeEvent::Failed { task, reason } => format!("task {task}: failed: {reason}"),
        ServeEvent::Stopping { running, abort } => format!(
            "stopping: offer withdrawn; {running} running job(s) will {}",
            if *abort {
                "be aborted and refunded"
            } else {
                "finish"
            }
        ),
    }
}

#[derive(Debug, clap::Args)]
pub struct BidArgs {
    /// The task to bid on (one this node posted).
    #[arg(long, value_name = "ID")]
    task_id: String,
    /// The most to pay, in RUV.
    #[arg(long, value_name = "N")]
    max_price: u64,
}

pub fn bid(home: Option<PathBuf>, args: BidArgs, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    let placed = market::bid(&mut ctx, &args.task_id, args.max_price)?;
    out.emit(&placed, |w| {
        writeln!(
            w,
            "task {}: bid {} RUV (was {})",
            placed.task, placed.bid, placed.previous
        )
    })?;
    Ok(Finish::Done)
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Live offers, with each provider's reputation.
    Offers,
    /// Tasks posted in the last day and how each stands.
    Tasks {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Active offers, average price, volume, reputations, dropped messages.
    Stats,
    /// This node's RUV: available, locked, earned, spent.
    Balance,
    /// The ledger's entries as replayed, and every balance.
    Ledger {
        /// Only this task's entries.
        #[arg(long, value_name = "ID")]
        task: Option<String>,
    },
    /// A task's result (decrypted when it is this node's).
    Result {
        #[arg(value_name = "TASK_ID")]
        task: String,
    },
    /// As an issuer: credit RUV to a node.
    Grant {
        /// The node id to credit (64 hex characters).
        #[arg(long, value_name = "NODE")]
        to: String,
        #[arg(long, value_name = "RUV")]
        amount: u64,
        /// The issuer's private key (default: this node's key).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Environment variable holding the key file's passphrase.
        #[arg(long, value_name = "VAR")]
        passphrase_env: Option<String>,
        #[arg(long, default_value = "")]
        memo: String,
    },
    /// As an issuer: sign the ledger's current state so nodes can start
    /// from it, and optionally purge the entries before it.
    Checkpoint {
        /// The issuer's private key (default: this node's key).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Environment variable holding the key file's passphrase.
        #[arg(long, value_name = "VAR")]
        passphrase_env: Option<String>,
        /// Remove the ledger entries before the checkpoint: nodes then
        /// start from it instead of the stream's first entry.
        #[arg(long)]
        purge: bool,
    },
}

pub fn run(home: Option<PathBuf>, cmd: Command, out: &Output) -> anyhow::Result<Finish> {
    let mut ctx = Context::open(home)?;
    match cmd {
        Command::Offers => {
            let offers = market::offers(&mut ctx)?;
            out.emit(&offers, |w| {
                if offers.is_empty() {
                    writeln!(w, "no live offers")?;
                }
                for o in &offers {
                    let images = if o.images.is_empty() {
                        String::new()
                    } else {
                        format!("  images {}", o.images.join(","))
                    };
                    writeln!(
                        w,
                        "{}  {:>5} RUV  {}/{} busy  rep {:.2}  {}{images}  (refreshed {} s ago)",
                        short(&o.node),
                        o.price,
                        o.busy,
                        o.slots,
                        o.reputation,
                        o.models.join(","),
                        o.age_secs
                    )?;
                }
                Ok(())
            })?;
        }
        Command::Tasks { limit } => {
            let tasks = market::tasks(&mut ctx, limit)?;
            out.emit(&tasks, |w| {
                if tasks.is_empty() {
                    writeln!(w, "no tasks in the last day")?;
                }
                for t in &tasks {
                    writeln!(
                        w,
                        "{}  {:<14} from {}  {}  bid {}{}",
                        t.task,
                        t.state,
                        short(&t.requester),
                        t.model,
                        t.bid,
                        match (&t.provider, t.price) {
                            (Some(p), Some(price)) => format!("  → {} at {price}", short(p)),
                            _ => String::new(),
                        }
                    )?;
                }
                Ok(())
            })?;
        }
        Command::Stats => {
            let s = market::stats(&mut ctx)?;
            out.emit(&s, |w| {
                writeln!(w, "offers      {} active, {} free slot(s)", s.active_offers, s.free_slots)?;
                match s.average_price {
                    Some(p) => writeln!(w, "price       {p:.1} RUV on average")?,
                    None => writeln!(w, "price       -")?,
                }
                writeln!(w, "volume      {} RUV paid; {} task(s) settled, {} open", s.volume, s.tasks_settled, s.tasks_open)?;
                let r = &s.reputation;
                writeln!(
                    w,
                    "reputation  {:.2} as provider ({} completed, {} failed, {} timed out, {} disputed), {:.2} as requester",
                    r.as_provider, r.completed, r.failed, r.timed_out, r.disputed, r.as_requester
                )?;
                let dropped: u64 = s.dropped_here.values().sum();
                writeln!(w, "dropped     {dropped} message(s) here; {} ledger entr(ies) everywhere", s.ledger_dropped.values().sum::<u64>())?;
                Ok(())
            })?;
        }
        Command::Balance => {
            let b = market::balance(&mut ctx)?;
            out.emit(&b, |w| {
                let a = &b.account;
                writeln!(
                    w,
                    "{}: {} RUV available, {} locked (granted {}, earned {}, spent {})",
                    short(&b.node),
                    a.available,
                    a.locked,
                    a.granted,
                    a.earned,
                    a.spent
                )
            })?;
        }
        Command::Ledger { task } => {
            let view = market::ledger(&mut ctx, task.as_deref())?;
            out.emit(&view, |w| {
                for l in &view.lines {
                    writeln!(
                        w,
                        "{:>6}  {:<8} {}  {:<24} {:>6}  {}",
                        l.seq,
                        l.kind,
                        short(&l.from),
                        l.task.as_deref().unwrap_or("-"),
                        l.amount.map(|a| a.to_string()).unwrap_or_default(),
                        l.effect
                    )?;
                }
                if let Some(seq) = view.diverged {
                    writeln!(w, "warning: this node's balances disagree with the issuer's checkpoint of entry {seq}")?;
                }
                Ok(())
            })?;
        }
        Command::Result { task } => {
            let r = market::result(&mut ctx, &task)?;
            out.emit(&r, |w| {
                writeln!(w, "task {} by {}: {}", r.task, short(&r.provider), r.state)?;
                match (&r.output, &r.note) {
                    (Some(text), _) => write!(w, "{text}"),
                    (None, Some(note)) => writeln!(w, "{note}"),
                    (None, None) => Ok(()),
                }
            })?;
        }
        Command::Grant {
            to,
            amount,
            key,
            passphrase_env,
            memo,
        } => {
            let g = market::grant(
                &mut ctx,
                &to,
                amount,
                key.as_deref(),
                passphrase_env.as_deref(),
                &memo,
            )?;
            out.emit(&g, |w| {
                writeln!(w, "granted {} RUV to {} (grant {}, issuer {})", g.amount, short(&g.to), g.grant, short(&g.issuer))?;
                if !g.issuer_trusted_here {
                    writeln!(w, "note: this node does not list the issuer in market.issuerKeys, so its balances ignore the grant")?;
                }
                Ok(())
            })?;
        }
        Command::Checkpoint {
            key,
            passphrase_env,
            purge,
        } => {
            let c = market::checkpoint(&mut ctx, key.as_deref(), passphrase_env.as_deref(), purge)?;
            out.emit(&c, |w| {
                writeln!(
                    w,
                    "checkpoint of the ledger after entry {} ({} accounts, {} escrows) stored at {}, state {}",
                    c.seq, c.accounts, c.escrows, c.stored_at, c.digest
                )?;
                if let Some(purged) = c.purged {
                    writeln!(w, "purged {purged} entries before it")?;
                }
                Ok(())
            })?;
        }
    }
    Ok(Finish::Done)
}
