//! The wasmtime engine every plugin runs on, and the limits each call gets.
//!
//! One engine per process: it owns the pooling allocator (so a fresh instance
//! per decision costs microseconds, not a page-table rebuild) and the epoch
//! ticker that turns the wall-clock deadline into interrupts.

use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use serde::Serialize;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::bindings::PolicyHost;
use super::sandbox::PluginState;

/// How often the ticker advances the epoch. Deadlines are rounded up to it,
/// so a 50 ms budget ends between 50 and 55 ms.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Plugin instances that may be live at once in one process: four warm roles,
/// four fresh ones and head room for concurrent callers.
const POOLED_INSTANCES: u32 = 32;

/// Memory the pool resets with a memset and keeps mapped between instances,
/// instead of handing it back to the kernel: a fresh instance per decision
/// touches only a few pages, and a madvise plus page faults per instance
/// cost more than clearing them. Measured in BENCHMARKS.md.
const KEEP_RESIDENT: usize = 128 << 10;

/// Whether each decision gets a fresh instance or reuses a warm one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A fresh Store and instance per call: no state survives between decisions.
    Fresh,
    /// One instance per plugin, reused until a call fails.
    Reuse,
}

/// What a single guest call may consume.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SandboxLimits {
    /// Wasm fuel units per call.
    pub fuel: u64,
    /// Wall-clock budget per call.
    pub timeout: Duration,
    /// Largest linear memory a plugin may grow to, in bytes.
    pub memory_bytes: usize,
    /// Largest string or list (in bytes) accepted from a plugin in one answer.
    pub max_answer_bytes: usize,
}

impl Default for SandboxLimits {
    /// Enough for an ordinary Python policy (componentize-py's interpreter
    /// burns about 11.5 million units starting up in a fresh instance), and
    /// far below what would keep a core busy.
    fn default() -> Self {
        SandboxLimits {
            fuel: 20_000_000,
            timeout: Duration::from_millis(50),
            memory_bytes: 16 << 20,
            max_answer_bytes: 64 << 10,
        }
    }
}

impl SandboxLimits {
    /// The most any setting or bundle can ask for. A bundle that leaves a
    /// limit unset asks for this, so the node's own cap is what applies.
    pub const CEILING: SandboxLimits = SandboxLimits {
        fuel: 10_000_000_000,
        timeout: Duration::from_secs(10),
        memory_bytes: 1024 << 20,
        max_answer_bytes: 16 << 20,
    };

    /// The smaller of each limit: what a bundle's request becomes on a
    /// node with its own caps.
    pub fn narrowed(&self, requested: &SandboxLimits) -> SandboxLimits {
        SandboxLimits {
            fuel: self.fuel.min(requested.fuel),
            timeout: self.timeout.min(requested.timeout),
            memory_bytes: self.memory_bytes.min(requested.memory_bytes),
            max_answer_bytes: self.max_answer_bytes.min(requested.max_answer_bytes),
        }
    }

    /// The epoch deadline for one call, in ticks from now. One tick more than
    /// the budget divides into, because the first tick may come at once.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_micros();
        self.timeout.as_micros().div_ceil(tick) as u64 + 1
    }
}

/// The shared engine plus the limits its calls run under.
pub struct PolicyEngine {
    engine: Engine,
    linker: Linker<PluginState>,
    limits: SandboxLimits,
    isolation: Isolation,
}

impl PolicyEngine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(limits: SandboxLimits, isolation: Isolation) -> wasmtime::Result<Arc<Self>> {
        let engine = Engine::new(&engine_config(&limits))?;
        let linker = host_linker(&engine)?;
        let this = Arc::new(PolicyEngine {
            engine,
            linker,
            limits,
            isolation,
        });
        start_ticker(Arc::downgrade(&this))?;
        Ok(this)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }
}

fn engine_config(limits: &SandboxLimits) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOLED_INSTANCES)
        .total_core_instances(POOLED_INSTANCES * 4)
        .total_memories(POOLED_INSTANCES * 2)
        .total_tables(POOLED_INSTANCES * 4)
        .max_memory_size(limits.memory_bytes)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        // Plugins' data segments are a few KiB: copying them into resident
        // memory is cheaper than mapping an image and taking a copy-on-write
        // fault on every page the decision writes.
        .memory_init_cow(false)
        .cranelift_opt_level(OptLevel::Speed)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Everything a plugin may import: the WIT host interfaces, and WASI backed
/// by the deny-everything context in `sandbox`.
fn host_linker(engine: &Engine) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    PolicyHost::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Advances the engine's epoch until the engine is dropped. The thread holds
/// only a weak reference so it never keeps the engine alive.
fn start_ticker(engine: Weak<PolicyEngine>) -> std::io::Result<()> {
    thread::Builder::new()
        .name("policy-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.engine.increment_epoch();
                drop(engine);
                thread::sleep(EPOCH_TICK);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_to_whole_ticks() {
        let mut limits = SandboxLimits::default();
        assert_eq!(limits.deadline_ticks(), 11);
        limits.timeout = Duration::from_millis(1);
        assert_eq!(limits.deadline_ticks(), 2);
        limits.timeout = Duration::from_millis(51);
        assert_eq!(limits.deadline_ticks(), 12);
    }
}
