//! The audit log's hash chain, with no SQL: how a row's hash is computed and
//! how a sequence of stored rows is checked. It must stay deterministic across
//! builds and platforms, because a hash written today is recomputed by every
//! later `audit --verify`.
//!
//! What it can and cannot show: each row's hash covers its content and the
//! previous row's hash, so editing a row, removing one from the middle, or
//! (with the separately stored head) cutting off the newest rows is detected.
//! Someone who can rewrite the whole file can recompute every hash and the head
//! too; the chain detects edits and removals, not a full rewrite. Catching that
//! needs the head hash kept somewhere the attacker cannot reach: `audit
//! head` signs it for keeping elsewhere, and `audit --verify --against`
//! checks the log still holds it.
//!
//! A broken chain is never silently mended. A restart row (kind
//! [`RESTART_KIND`]) links to the last row present and records the break it
//! found; the walk accepts it only if that is exactly the break it found
//! itself, so the record of a past break cannot hide a later one.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::audit::{ChainBreak, ChainRestart, ChainStatus};

/// The kind of the row that starts a new chain after a break.
pub const RESTART_KIND: &str = "audit.chain_restarted";

/// The `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hashed form of a row. Field order here is part of the on-disk format.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    ts: &'a str,
    kind: &'a str,
    subject: &'a str,
    details: &'a Value,
}

/// Returns `value` with every object's keys in sorted order. serde_json's map
/// is a BTreeMap, and so sorted, only while no crate in the build enables its
/// `preserve_order` feature; feature unification means any dependency could,
/// so the hash input is sorted here rather than trusting that.
pub(super) fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key.clone(), canonical(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// hex(sha256(prev_hash + "\n" + canonical JSON of the row)).
pub(super) fn row_hash(
    prev_hash: &str,
    seq: i64,
    ts: &str,
    kind: &str,
    subject: &str,
    details: &Value,
) -> String {
    let details = canonical(details);
    let row = Canonical {
        seq,
        ts,
        kind,
        subject,
        details: &details,
    };
    let json = serde_json::to_string(&row).expect("a row of strings and JSON always serializes");
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(json.as_bytes());
    hex::encode(hasher.finalize())
}

/// One audit row as read back from disk, before any trust is placed in it.
pub(super) struct StoredRow {
    pub seq: i64,
    pub ts: String,
    pub kind: String,
    pub subject: String,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Walks rows in seq order and remembers the first break.
pub(super) struct ChainWalk {
    rows: u64,
    last_seq: i64,
    last_hash: String,
    broken: Option<ChainBreak>,
    restarts: Vec<ChainRestart>,
}

impl ChainWalk {
    pub fn new() -> Self {
        ChainWalk {
            rows: 0,
            last_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
            broken: None,
            restarts: Vec::new(),
        }
    }

    pub fn step(&mut self, row: StoredRow) {
        self.rows += 1;
        if row.kind == RESTART_KIND {
            self.restart(&row);
        } else if self.broken.is_none() {
            self.broken = check_row(self.last_seq, &self.last_hash, &row);
        }
        self.last_seq = row.seq;
        self.last_hash = row.hash;
    }

    /// A sound restart row that records the break found so far ends it. A
    /// walk that found none accepts one too: it records a break at the
    /// head, which the head it was compared with no longer shows. A restart
    /// recording another break leaves the real one reported.
    fn restart(&mut self, row: &StoredRow) {
        if let Some(broken) = check_row(self.last_seq, &self.last_hash, row) {
            self.broken.get_or_insert(broken);
            return;
        }
        let Some(recorded) = recorded_break(&row.details) else {
            let reason = format!("row {}: a chain restart that records no break", row.seq);
            self.broken.get_or_insert(ChainBreak {
                seq: row.seq,
                reason,
            });
            return;
        };
        match self.broken.take() {
            Some(found) if found != recorded => self.broken = Some(found),
            _ => self.restarts.push(ChainRestart {
                seq: row.seq,
                repaired: recorded,
            }),
        }
    }

    pub fn finish(mut self, head_seq: i64, head_hash: &str) -> ChainStatus {
        if self.broken.is_none() {
            self.broken = check_head(self.last_seq, &self.last_hash, head_seq, head_hash);
        }
        ChainStatus {
            rows: self.rows,
            head: (self.rows > 0).then_some(self.last_hash),
            head_seq: self.last_seq,
            broken: self.broken,
            restarts: self.restarts,
        }
    }
}

/// The break a restart row's details record under `break`.
fn recorded_break(details: &str) -> Option<ChainBreak> {
    let details: Value = serde_json::from_str(details).ok()?;
    let recorded = details.get("break")?;
    Some(ChainBreak {
        seq: recorded.get("seq")?.as_i64()?,
        reason: recorded.get("reason")?.as_str()?.to_owned(),
    })
}

fn check_row(last_seq: i64, last_hash: &str, row: &StoredRow) -> Option<ChainBreak> {
    let broken = |seq, reason: String| Some(ChainBreak { seq, reason });
    if row.seq != last_seq + 1 {
        let missing = last_seq + 1;
        let reason = format!(
            "row {missing} is missing (seq jumps from {last_seq} to {})",
            row.seq
        );
        return broken(missing, reason);
    }
    if row.prev_hash != last_hash {
        let reason = format!("row {}: prev_hash does not match row {last_seq}", row.seq);
        return broken(row.seq, reason);
    }
    let Ok(details) = serde_json::from_str::<Value>(&row.details) else {
        let reason = format!("row {}: details are not valid JSON (altered)", row.seq);
        return broken(row.seq, reason);
    };
    let expected = row_hash(
        &row.prev_hash,
        row.seq,
        &row.ts,
        &row.kind,
        &row.subject,
        &details,
    );
    if expected != row.hash {
        let reason = format!("row {}: content does not match its hash (altered)", row.seq);
        return broken(row.seq, reason);
    }
    None
}

fn check_head(
    last_seq: i64,
    last_hash: &str,
    head_seq: i64,
    head_hash: &str,
) -> Option<ChainBreak> {
    let reason = if head_seq > last_seq {
        format!("the newest rows were removed (head row {head_seq} missing)")
    } else if head_seq < last_seq {
        format!(
            "rows after {head_seq} were added without updating the head (written outside the store)"
        )
    } else if head_hash != last_hash {
        format!(
            "row {last_seq}: hash does not match the recorded head (the newest row was replaced)"
        )
    } else {
        return None;
    };
    let seq = if head_seq > last_seq {
        last_seq + 1
    } else {
        last_seq
    };
    Some(ChainBreak { seq, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sealed(seq: i64, prev_hash: &str, details: Value) -> StoredRow {
        let hash = row_hash(prev_hash, seq, "t", "k", "s", &details);
        StoredRow {
            seq,
            ts: "t".into(),
            kind: "k".into(),
            subject: "s".into(),
            details: details.to_string(),
            prev_hash: prev_hash.into(),
            hash,
        }
    }

    #[test]
    fn genesis_is_64_zeros() {
        assert_eq!(GENESIS_HASH.len(), 64);
        assert!(GENESIS_HASH.bytes().all(|b| b == b'0'));
    }

    #[test]
    fn hash_ignores_key_order_but_not_content() {
        let a = row_hash(
            GENESIS_HASH,
            1,
            "t",
            "k",
            "s",
            &json!({"b": 1, "a": {"y": 2, "x": 3}}),
        );
        let mut reordered = serde_json::Map::new();
        reordered.insert("a".into(), json!({"x": 3, "y": 2}));
        reordered.insert("b".into(), json!(1));
        let b = row_hash(GENESIS_HASH, 1, "t", "k", "s", &Value::Object(reordered));
        assert_eq!(a, b);
        let c = row_hash(
            GENESIS_HASH,
            1,
            "t",
            "k",
            "s",
            &json!({"b": 2, "a": {"y": 2, "x": 3}}),
        );
        assert_ne!(a, c);
    }

    #[test]
    fn hash_format_is_stable() {
        // Pinned: changing it would make every existing log fail verification.
        let hash = row_hash(
            GENESIS_HASH,
            1,
            "2026-01-01T00:00:00.000000Z",
            "k",
            "s",
            &json!({}),
        );
        let input = format!(
            "{GENESIS_HASH}\n{{\"seq\":1,\"ts\":\"2026-01-01T00:00:00.000000Z\",\"kind\":\"k\",\"subject\":\"s\",\"details\":{{}}}}"
        );
        assert_eq!(hash, hex::encode(Sha256::digest(input.as_bytes())));
    }

    #[test]
    fn walk_accepts_an_intact_chain_and_its_head() {
        let first = sealed(1, GENESIS_HASH, json!({"n": 1}));
        let second = sealed(2, &first.hash, json!({"n": 2}));
        let head = second.hash.clone();
        let mut walk = ChainWalk::new();
        walk.step(first);
        walk.step(second);
        let status = walk.finish(2, &head);
        assert_eq!(status.rows, 2);
        assert_eq!(status.head.as_deref(), Some(head.as_str()));
        assert!(status.broken.is_none());
    }

    #[test]
    fn walk_reports_a_broken_link() {
        let first = sealed(1, GENESIS_HASH, json!({}));
        let second = sealed(2, GENESIS_HASH, json!({}));
        let head = second.hash.clone();
        let mut walk = ChainWalk::new();
        walk.step(first);
        walk.step(second);
        let broken = walk.finish(2, &head).broken.expect("a broken link");
        assert_eq!(broken.seq, 2);
        assert_eq!(broken.reason, "row 2: prev_hash does not match row 1");
    }

    #[test]
    fn empty_chain_matches_the_initial_head() {
        let status = ChainWalk::new().finish(0, GENESIS_HASH);
        assert_eq!(status.rows, 0);
        assert!(status.head.is_none() && status.broken.is_none());
    }
}
