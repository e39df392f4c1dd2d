//! Shared fixtures for the store's unit tests: a real database file in a temp
//! folder, a second raw connection to it for tampering, and sample records.
//! Test-only; it must not be compiled into the host.

use std::path::Path;

use rusqlite::Connection;
use tempfile::TempDir;

use super::{Budget, DecisionRecord, NewJob, Outcome, Store, Verdict};

/// A freshly migrated store at `<tempdir>/state.db`; keep the TempDir alive.
pub fn temp_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let store = Store::open(&dir.path().join("state.db")).expect("opening a fresh store");
    (dir, store)
}

/// A plain connection, as someone with the file (not the store) would have.
pub fn raw_conn(path: &Path) -> Connection {
    Connection::open(path).expect("opening the database directly")
}

pub fn sample_job(id: &str) -> NewJob {
    NewJob {
        id: id.to_owned(),
        model: "claude-sonnet-4-5".to_owned(),
        budget: Budget {
            tokens: 1024,
            requests: 10,
            timeout_secs: 300,
        },
        prompt_bytes: 12,
        prompt_sha256: "ab".repeat(32),
        image: "agent:1".to_owned(),
        image_id: format!("sha256:{}", "e".repeat(64)),
        command: vec!["python3".to_owned(), "agent.py".to_owned()],
        agent: String::new(),
        workspace: None,
        egress: false,
        source: "local".to_owned(),
        requester: "owner".to_owned(),
        host: None,
    }
}

pub fn verdict(outcome: Outcome, granted_tokens: u64) -> Verdict {
    Verdict {
        outcome,
        grant: (outcome == Outcome::Allow).then_some(Budget {
            tokens: granted_tokens,
            requests: 10,
            timeout_secs: 300,
        }),
        decisions: vec![DecisionRecord {
            role: "limits".to_owned(),
            plugin: "default-limits".to_owned(),
            digest: "cd".repeat(32),
            origin: "embedded".to_owned(),
            bundle: None,
            outcome,
            reason: (outcome != Outcome::Allow).then(|| "over the daily task limit".to_owned()),
            error_class: None,
            elapsed_us: 42,
        }],
        replay: None,
    }
}

/// Counts rows with raw SQL, so assertions don't trust the code under test.
pub fn count(store: &Store, sql: &str) -> i64 {
    store
        .conn
        .query_row(sql, [], |row| row.get(0))
        .expect("counting rows")
}
