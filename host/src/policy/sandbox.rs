//! The state a plugin call runs with, and the store built around it.
//!
//! A plugin gets no ambient capability: the WASI context has no preopened
//! directories, no environment, no arguments, no sockets, and clocks frozen at
//! zero (the `clock` import is the only time a plugin sees). A wasip2 guest
//! still links, and every attempt to reach outside simply fails. Its stderr
//! goes nowhere but a small tail that explains a failure.
//!
//! Nor is WASI's randomness a source of difference: language runtimes ask
//! for random bytes as they start (Python seeds its string hashes), so the
//! bytes are served from a stream fixed by the plugin's digest, and the same
//! plugin decides the same way on every node, in every instance.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView,
};

use super::engine::{PolicyEngine, SandboxLimits};
use super::stderr::StderrTail;

/// Log messages one call may emit before the rest are dropped, so a plugin
/// cannot flood the host's log.
const LOG_BUDGET: u32 = 32;

/// The configuration a plugin sees, sorted by key for lookup.
#[derive(Debug, Default)]
pub struct PluginSettings {
    pairs: Vec<(String, String)>,
}

impl PluginSettings {
    /// The first value given for a key wins: callers list the node's
    /// settings before a plugin's own, and a stable sort by key alone
    /// keeps that order.
    pub fn new(mut pairs: Vec<(String, String)>) -> Self {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        PluginSettings { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.pairs[i].1.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

/// Per-store state: what the imports read and what the limiter records.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: CappedMemory,
    pub(crate) settings: Arc<PluginSettings>,
    pub(crate) label: Arc<str>,
    pub(crate) logs_left: u32,
    pub(crate) stderr: StderrTail,
    /// The decision's time, pinned for the call; `None` outside a decision
    /// (validating settings), when the `clock` import reads the real one.
    pub(crate) clock: Option<u64>,
}

impl PluginState {
    pub(crate) fn table(&self) -> &ResourceTable {
        &self.table
    }

    pub(crate) fn table_mut(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// True once the plugin tried to grow memory past its cap.
    pub fn memory_exceeded(&self) -> bool {
        self.limiter.exceeded
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `StoreLimits`, plus a record of whether it refused a growth: a refused
/// growth surfaces as a generic trap, and the host must still report it as
/// a memory overrun.
struct CappedMemory {
    inner: StoreLimits,
    exceeded: bool,
}

impl ResourceLimiter for CappedMemory {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let verdict = self.inner.memory_growing(current, desired, max);
        self.exceeded |= !matches!(verdict, Ok(true));
        verdict
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.exceeded = true;
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, max)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A clock stuck at zero: WASI's clocks are not a channel into the plugin.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// Bytes of the random stream a plugin's WASI randomness cycles through.
const ENTROPY_BYTES: usize = 1024;

/// The random bytes and seed a plugin's WASI context serves, derived once
/// per plugin from its digest (SHA-256 in counter mode).
pub(crate) struct Entropy {
    bytes: Vec<u8>,
    seed: u128,
}

impl Entropy {
    pub fn of(digest: &str) -> Entropy {
        let block = |counter: u64| {
            let mut hash = Sha256::new();
            hash.update(b"claude-max-market plugin entropy\n");
            hash.update(digest.as_bytes());
            hash.update(counter.to_be_bytes());
            hash.finalize()
        };
        let bytes = (0..(ENTROPY_BYTES / 32) as u64).flat_map(block).collect();
        let seed = u128::from_be_bytes(block(u64::MAX)[..16].try_into().expect("16 bytes"));
        Entropy { bytes, seed }
    }
}

/// Builds a store for one plugin with every limit armed.
pub(crate) fn new_store(
    engine: &PolicyEngine,
    limits: &SandboxLimits,
    settings: Arc<PluginSettings>,
    label: Arc<str>,
    entropy: &Entropy,
) -> wasmtime::Result<Store<PluginState>> {
    let stderr = StderrTail::default();
    let state = PluginState {
        wasi: WasiCtx::builder()
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(Deterministic::new(entropy.bytes.clone()))
            .insecure_random(Deterministic::new(entropy.bytes.clone()))
            .insecure_random_seed(entropy.seed)
            .stderr(stderr.clone())
            .build(),
        table: ResourceTable::new(),
        limiter: CappedMemory {
            inner: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            exceeded: false,
        },
        settings,
        label,
        logs_left: LOG_BUDGET,
        stderr,
        clock: None,
    };
    let mut store = Store::new(engine.engine(), state);
    store.limiter(|s| &mut s.limiter);
    arm(&mut store, limits)?;
    Ok(store)
}

/// Refills fuel and resets the deadline and per-call budgets before a call,
/// so a reused instance gets exactly what a fresh one would.
pub(crate) fn arm(store: &mut Store<PluginState>, limits: &SandboxLimits) -> wasmtime::Result<()> {
    store.set_fuel(limits.fuel)?;
    store.set_epoch_deadline(limits.deadline_ticks());
    let state = store.data_mut();
    state.logs_left = LOG_BUDGET;
    state.limiter.exceeded = false;
    state.stderr.clear();
    state.clock = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_lookup_is_exact_and_first_value_wins() {
        let s = PluginSettings::new(vec![
            ("b.x".into(), "3".into()),
            ("a.y".into(), "1".into()),
            ("b.x".into(), "2".into()),
        ]);
        assert_eq!(s.get("a.y"), Some("1"));
        assert_eq!(
            s.get("b.x"),
            Some("3"),
            "the first given wins, not the smallest"
        );
        assert_eq!(s.get("b"), None);
    }
}
