//! Signed market messages. Everything a node puts on the market is RSA-PSS
//! signed by its node key and carries that key, so any receiver can check
//! the sender without a key directory: a node id *is* the SHA-256 of the
//! key it carries.
//!
//! The signature covers the exact payload bytes (base64 on the wire), so
//! nothing has to be canonicalised: a receiver verifies the bytes it got and
//! only then parses them. A message that is not signed, whose signature
//! does not verify, whose `from` is not its key's id, or that is outside the
//! replay window or seen before, is dropped with a [`DropReason`] and never
//! acted on.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::crypto::{KeyError, NodeKey, PublicKey};

use super::types::Body;

/// The wire format version this host writes and reads.
pub const WIRE_VERSION: u8 = 1;

/// What travels: the signed payload bytes, the signer's key and the
/// signature. `key` and `sig` are optional here only so an unsigned message
/// is told apart from a garbled one.
#[derive(Serialize, Deserialize)]
struct Wire {
    v: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    signed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

/// The signed part: a random id, the sender's clock, the sender's node id
/// and the body.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payload {
    id: String,
    /// Milliseconds since the Unix epoch on the sender's clock.
    ts: i64,
    from: String,
    #[serde(flatten)]
    body: Body,
}

/// A message whose signature verified.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Unique per message: what replay protection and idempotency key on.
    pub id: String,
    /// When the sender says it sent it (Unix milliseconds).
    pub ts: i64,
    /// The sender's node id (hex SHA-256 of `key`).
    pub from: String,
    pub key: PublicKey,
    pub body: Body,
}

impl Signed {
    /// Whether the sender's stamp is within `window_ms` of `at`, the time
    /// the message was read against (the server's, for stored messages).
    pub fn fresh_at(&self, at: i64, window_ms: i64) -> bool {
        self.ts.abs_diff(at) <= window_ms.unsigned_abs()
    }
}

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// Not a market message at all (not JSON, unknown version, bad base64,
    /// a body that does not parse).
    Malformed,
    /// No signature or no key.
    Unsigned,
    /// The signature does not verify, or `from` is not the key's id.
    BadSignature,
    /// Its timestamp is outside the replay window.
    Stale,
    /// A message with its id was seen before.
    Replayed,
    /// Signed, but by someone the message may not come from (a lock not by
    /// the task's requester, a grant not by a trusted issuer, ...).
    NotAuthorised,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::Malformed,
        DropReason::Unsigned,
        DropReason::BadSignature,
        DropReason::Stale,
        DropReason::Replayed,
        DropReason::NotAuthorised,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Unsigned => "unsigned",
            DropReason::BadSignature => "bad-signature",
            DropReason::Stale => "stale",
            DropReason::Replayed => "replayed",
            DropReason::NotAuthorised => "not-authorised",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Signs `body` as a new message from `key`, stamped `ts` (Unix ms).
/// Returns the wire bytes and the message id.
pub fn seal_at(key: &NodeKey, body: Body, ts: i64) -> Result<(Vec<u8>, String), KeyError> {
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    let id = hex::encode(id);
    let payload = Payload {
        id: id.clone(),
        ts,
        from: key.node_id(),
        body,
    };
    let signed = serde_json::to_vec(&payload).expect("a payload of strings and numbers encodes");
    let sig = key.sign_pss(&signed)?;
    let wire = Wire {
        v: WIRE_VERSION,
        key: Some(B64.encode(key.public().to_spki_der())),
        signed: B64.encode(&signed),
        sig: Some(B64.encode(sig)),
    };
    let bytes = serde_json::to_vec(&wire).expect("a wire record of strings encodes");
    Ok((bytes, id))
}

/// Signs `body` as a new message from `key`, stamped now.
pub fn seal(key: &NodeKey, body: Body) -> Result<(Vec<u8>, String), KeyError> {
    seal_at(key, body, now_ms())
}

/// Checks the signature and the sender's id, then parses the body. Replay
/// is checked separately ([`ReplayGuard`]): whether a message is fresh
/// depends on where it was read from.
pub fn open(bytes: &[u8]) -> Result<Signed, DropReason> {
    let wire: Wire = serde_json::from_slice(bytes).map_err(|_| DropReason::Malformed)?;
    if wire.v != WIRE_VERSION {
        return Err(DropReason::Malformed);
    }
    let (Some(key), Some(sig)) = (wire.key, wire.sig) else {
        return Err(DropReason::Unsigned);
    };
    if key.is_empty() || sig.is_empty() {
        return Err(DropReason::Unsigned);
    }
    let decode = |text: &str| B64.decode(text).map_err(|_| DropReason::Malformed);
    let key = PublicKey::from_spki_der(&decode(&key)?).map_err(|_| DropReason::BadSignature)?;
    let signed = decode(&wire.signed)?;
    if !key.verify_pss(&signed, &decode(&sig)?) {
        return Err(DropReason::BadSignature);
    }
    let payload: Payload = serde_json::from_slice(&signed).map_err(|_| DropReason::Malformed)?;
    if payload.from != key.node_id() {
        return Err(DropReason::BadSignature);
    }
    Ok(Signed {
        id: payload.id,
        ts: payload.ts,
        from: payload.from,
        key,
        body: payload.body,
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Refuses messages whose timestamp is more than `window_ms` from the
/// reference time, and any id seen before. Ids are remembered for twice
/// the window: anything older is refused as stale anyway.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: i64,
    seen: HashMap<String, i64>,
    newest: i64,
}

impl ReplayGuard {
    pub fn new(window_ms: i64) -> ReplayGuard {
        ReplayGuard {
            window_ms,
            seen: HashMap::new(),
            newest: i64::MIN,
        }
    }

    /// Admits `message` as read at `reference` (Unix ms): the server's
    /// timestamp for stored messages, the local clock for live ones.
    pub fn admit(&mut self, message: &Signed, reference: i64) -> Result<(), DropReason> {
        if !message.fresh_at(reference, self.window_ms) {
            return Err(DropReason::Stale);
        }
        if self.seen.contains_key(&message.id) {
            return Err(DropReason::Replayed);
        }
        self.seen.insert(message.id.clone(), reference);
        if reference > self.newest {
            self.newest = reference;
            let horizon = self.newest.saturating_sub(self.window_ms.saturating_mul(2));
            if self.seen.len() > 4096 {
                self.seen.retain(|_, at| *at >= horizon);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::testutil::shared_keys;
    use crate::market::types::{Bid, Body};

    fn bid() -> Body {
        Body::Bid(Bid {
            task: "t1".into(),
            bid: 40,
        })
    }

    fn wire(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn a_sealed_message_opens_with_its_sender_and_body() {
        let key = &shared_keys()[0];
        let (bytes, id) = seal(key, bid()).unwrap();
        let msg = open(&bytes).unwrap();
        assert_eq!(msg.id, id);
        assert_eq!(msg.from, key.node_id());
        assert!(matches!(msg.body, Body::Bid(Bid { ref task, bid: 40 }) if task == "t1"));
    }

    #[test]
    fn tampering_unsigning_and_key_swaps_are_refused() {
        let key = &shared_keys()[0];
        let other = &shared_keys()[1];
        let (bytes, _) = seal(key, bid()).unwrap();

        let mut unsigned = wire(&bytes);
        unsigned.as_object_mut().unwrap().remove("sig");
        let bytes_of = |v: &serde_json::Value| serde_json::to_vec(v).unwrap();
        assert_eq!(
            open(&bytes_of(&unsigned)).unwrap_err(),
            DropReason::Unsigned
        );

        let mut edited = wire(&bytes);
        let signed = B64.decode(edited["signed"].as_str().unwrap()).unwrap();
        let changed = String::from_utf8(signed).unwrap().replace("40", "41");
        edited["signed"] = B64.encode(changed).into();
        assert_eq!(
            open(&bytes_of(&edited)).unwrap_err(),
            DropReason::BadSignature
        );

        // The other key's signature over the same payload: `from` no longer
        // names the key that signed.
        let mut swapped = wire(&bytes);
        let signed = B64.decode(swapped["signed"].as_str().unwrap()).unwrap();
        swapped["key"] = B64.encode(other.public().to_spki_der()).into();
        swapped["sig"] = B64.encode(other.sign_pss(&signed).unwrap()).into();
        assert_eq!(
            open(&bytes_of(&swapped)).unwrap_err(),
            DropReason::BadSignature
        );

        assert_eq!(open(b"not json").unwrap_err(), DropReason::Malformed);
        let mut future = wire(&bytes);
        future["v"] = 2.into();
        assert_eq!(open(&bytes_of(&future)).unwrap_err(), DropReason::Malformed);
    }

    #[test]
    fn the_replay_guard_refuses_repeats_and_stale_messages() {
        let key = &shared_keys()[0];
        let mut guard = ReplayGuard::new(60_000);
        let (bytes, _) = seal_at(key, bid(), 1_000_000).unwrap();
        let msg = open(&bytes).unwrap();
        assert_eq!(guard.admit(&msg, 1_030_000), Ok(()));
        assert_eq!(guard.admit(&msg, 1_030_001), Err(DropReason::Replayed));
        let (old, _) = seal_at(key, bid(), 1_000_000).unwrap();
        let old = open(&old).unwrap();
        assert_eq!(guard.admit(&old, 1_060_001), Err(DropReason::Stale));
        assert_eq!(guard.admit(&old, 939_999), Err(DropReason::Stale));
    }
}
