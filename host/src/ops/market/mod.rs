//! Market operations: `advertise` and `serve` (the provider), `execute
//! --market` and `bid` (the requester), the views (`market offers`,
//! `tasks`, `stats`, `balance`, `ledger`, `result`) and `market grant` (an
//! issuer's). This file holds what they share: connecting, signing and
//! publishing, checking what comes in, and replaying the ledger.

mod checkpoint;
mod grant;
mod journal;
mod offer;
mod own_job;
mod provider;
mod receipt;
mod requester;
mod views;
mod work;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::config::MarketSettings;
use crate::crypto::NodeKey;
use crate::market::exchange::{Exchange as _, Signer};
use crate::market::message::{self, DropReason, Signed};
use crate::market::replay::catch_up;
use crate::market::reputation::{self, Reputation};
use crate::market::transport::{Auth, Tls};
use crate::market::types::{Body, Offer};
use crate::market::{Connection, Ledger, MarketError, Transport};
use crate::store::Store;

use super::{Context, OpsError, keys};

pub use checkpoint::{Checkpointed, checkpoint};
pub use grant::{Granted, grant};
pub use offer::{AdvertiseOptions, Advertised, advertise};
pub use provider::{ServeEvent, ServeOptions, ServeSummary, serve};
pub use requester::{BidPlaced, MarketExecuteOptions, MarketProgress, MarketRun, bid, execute};
pub use views::{
    Balance, LedgerView, MarketStats, OfferView, ResultView, TaskView, balance, ledger, offers,
    result, stats, tasks,
};

/// The connection settings in `[market]`, with secrets read from where the
/// settings say they are (never from the settings file itself).
fn connection(settings: &MarketSettings) -> Result<Connection, OpsError> {
    let env = |name: &str| {
        (!name.is_empty())
            .then(|| std::env::var(name).ok())
            .flatten()
    };
    let auth = if !settings.nkey_seed_file.is_empty() {
        let path = PathBuf::from(&settings.nkey_seed_file);
        let seed = std::fs::read_to_string(&path).map_err(|source| OpsError::Read {
            path: path.clone(),
            source,
        })?;
        Auth::NkeySeed(seed.trim().to_owned())
    } else if !settings.user.is_empty() {
        let password = env(&settings.password_env).ok_or_else(|| OpsError::InvalidInput {
            what: format!(
                "market.user is set but the password variable {} is not; export it or set market.passwordEnv",
                settings.password_env
            ),
        })?;
        Auth::UserPassword {
            user: settings.user.clone(),
            password,
        }
    } else if let Some(token) = env(&settings.token_env) {
        Auth::Token(token)
    } else {
        Auth::None
    };
    let path = |p: &str| (!p.is_empty()).then(|| PathBuf::from(p));
    Ok(Connection {
        urls: settings.url.clone(),
        auth,
        tls: Tls {
            ca_file: path(&settings.tls_ca_file),
            cert_file: path(&settings.tls_cert_file),
            key_file: path(&settings.tls_key_file),
        },
        replicas: settings.replicas as usize,
        offer_ttl: Duration::from_secs(u64::from(settings.offer_ttl_secs)),
    })
}

/// This node on the market: its key and a connection.
struct Peer {
    key: NodeKey,
    transport: Transport,
    settings: MarketSettings,
}

impl Peer {
    /// Connects (refusing at once when `market.url` is empty).
    fn connect(ctx: &mut Context, runtime: &tokio::runtime::Runtime) -> Result<Peer, OpsError> {
        let settings = ctx.settings.market.clone();
        if settings.url.is_empty() {
            return Err(MarketError::NotConfigured.into());
        }
        let conn = connection(&settings)?;
        let (key, _, _) = keys::current(ctx)?;
        let transport = runtime.block_on(Transport::connect(&conn))?;
        Ok(Peer {
            key,
            transport,
            settings,
        })
    }

    fn node(&self) -> String {
        self.key.node_id()
    }

    fn window_ms(&self) -> i64 {
        i64::from(self.settings.replay_window_secs) * 1000
    }

    fn ledger(&self) -> Ledger {
        Ledger::new(self.settings.issuer_keys.clone(), self.window_ms())
    }

    /// The market as the task flows use it, signing as this node.
    fn exchange(&self) -> Signer<'_> {
        Signer {
            key: &self.key,
            transport: &self.transport,
        }
    }
}

/// Opens a message read from the market at server time `at`, refusing it
/// (and counting why) unless it verifies, is fresh, and is signed by
/// `expected` when given.
fn accept(
    store: &mut Store,
    bytes: &[u8],
    at: i64,
    window_ms: i64,
    expected: Option<&str>,
) -> Option<Signed> {
    let checked = message::open(bytes).and_then(|m| {
        if !m.fresh_at(at, window_ms) {
            Err(DropReason::Stale)
        } else if expected.is_some_and(|who| who != m.from) {
            Err(DropReason::NotAuthorised)
        } else {
            Ok(m)
        }
    });
    checked
        .inspect_err(|reason| count_drop(store, *reason))
        .ok()
}

fn count_drop(store: &mut Store, reason: DropReason) {
    tracing::warn!(%reason, "dropped a market message");
    if let Err(e) = store.count_market_drop(reason.as_str()) {
        tracing::warn!(error = %e, "could not count a dropped market message");
    }
}

/// A verified live offer.
#[derive(Debug, Clone)]
struct LiveOffer {
    node: String,
    key: crate::crypto::PublicKey,
    offer: Offer,
    /// Server time of the offer's last refresh (Unix ms).
    at: i64,
}

/// The offers on the market that verify: each signed by the node it is
/// filed under, and fresh.
async fn live_offers(peer: &Peer, store: &mut Store) -> Result<Vec<LiveOffer>, OpsError> {
    let mut out = Vec::new();
    for (node, at, bytes) in peer.transport.offers().await? {
        let Some(msg) = accept(store, &bytes, at, peer.window_ms(), Some(&node)) else {
            continue;
        };
        if let Body::Offer(offer) = msg.body {
            out.push(LiveOffer {
                node,
                key: msg.key,
                offer,
                at,
            });
        }
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(out)
}

fn reputation_of(reps: &BTreeMap<String, Reputation>, node: &str) -> Reputation {
    reps.get(node).cloned().unwrap_or_else(reputation::neutral)
}

/// The first 12 characters of a node id, for people.
fn short(node: &str) -> String {
    node.chars().take(12).collect()
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn unb64(text: &str, what: &str) -> Result<Vec<u8>, OpsError> {
    B64.decode(text).map_err(|_| OpsError::InvalidInput {
        what: format!("{what} is not valid base64"),
    })
}

/// Decrypts `what`, a base64 CMMENC envelope, with this node's `keys`.
fn open_sealed(keys: &[NodeKey], payload: &str, what: &str) -> Result<Vec<u8>, String> {
    let sealed = unb64(payload, what).map_err(|e| e.to_string())?;
    let mut plain = Vec::new();
    crate::crypto::decrypt(sealed.as_slice(), &mut plain, keys)
        .map_err(|e| format!("{what} did not decrypt: {e}"))?;
    Ok(plain)
}

/// Whether `plain` is what the hex SHA-256 `sha256` describes.
fn matches_digest(plain: &[u8], sha256: &str) -> bool {
    hex::encode(Sha256::digest(plain)) == sha256
}

/// Whole seconds, from a setting.
fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// The messages stored on `subject` that verify (signed by `from`, when
/// given), oldest first; each one that does not is counted. Reading them
/// all, not only the last, keeps a later forgery from hiding a genuine
/// message.
fn read_verified(
    rt: &tokio::runtime::Runtime,
    peer: &Peer,
    store: &mut Store,
    subject: &str,
    from: Option<&str>,
) -> Result<Vec<Signed>, OpsError> {
    let stored = rt.block_on(peer.exchange().read(subject))?;
    Ok(stored
        .iter()
        .filter_map(|m| accept(store, &m.bytes, m.at, peer.window_ms(), from))
        .collect())
}
