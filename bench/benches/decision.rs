//! One full decision, four ways, in the same run: the wasm pipeline on warm
//! (reused) instances, on a fresh instance per call, the same rules as native
//! Rust, and approval/limits/compliance as a cedar policy.
//!
//! Run: `cargo bench -p cmm-bench --bench decision`

use std::hint::black_box;
use std::sync::Arc;

use claude_max_market::config::Settings;
use claude_max_market::policy::{
    Isolation, Outcome, Pipeline, PluginOrigin, PluginPre, PolicyEngine, Role, SandboxLimits, Slot,
    defaults,
};
use cmm_bench::{Cedar, input, native_decision};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn pipeline(isolation: Isolation) -> Pipeline {
    let engine: Arc<PolicyEngine> =
        PolicyEngine::new(SandboxLimits::default(), isolation).expect("engine");
    let slots = Role::ALL
        .into_iter()
        .map(|role| {
            let plugin = PluginPre::load(
                &engine,
                None,
                role,
                &defaults::name(role),
                PluginOrigin::Default,
                defaults::component(role),
            )
            .expect("the default plugins load");
            Slot::ready(plugin)
        })
        .collect();
    let mut settings = Settings::default();
    settings
        .set("compliance.requireApproval", "false")
        .expect("a valid setting");
    Pipeline::new(engine, slots, settings.flatten())
}

fn decision(c: &mut Criterion) {
    let input = input();
    let mut warm = pipeline(Isolation::Reuse);
    let mut fresh = pipeline(Isolation::Fresh);
    let cedar = Cedar::new();
    let request = cedar.request(&input);

    // Same answer from every contender before any is timed.
    let wasm = warm.decide(input.clone());
    assert_eq!(wasm.decision, Outcome::Allow, "{wasm:#?}");
    assert_eq!(fresh.decide(input.clone()).decision, Outcome::Allow);
    let (native_allows, native_quote) = native_decision(&input);
    assert!(native_allows && cedar.allows(&request));
    assert_eq!(wasm.quote().map(|q| q.price), Some(native_quote));

    // The pipeline takes its input by value and hands it back with the
    // decision, so each iteration gets a copy made outside the timing, as
    // cedar gets its prebuilt request.
    let mut group = c.benchmark_group("four-role decision");
    group.bench_function("wasm warm", |b| {
        b.iter_batched(
            || input.clone(),
            |input| black_box(warm.decide(input)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("wasm fresh instance", |b| {
        b.iter_batched(
            || input.clone(),
            |input| black_box(fresh.decide(input)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("native rust", |b| {
        b.iter(|| black_box(native_decision(black_box(&input))))
    });
    group.bench_function("cedar is_authorized", |b| {
        b.iter(|| black_box(cedar.allows(black_box(&request))))
    });
    group.bench_function("cedar with request building", |b| {
        b.iter(|| black_box(cedar.allows(&cedar.request(black_box(&input)))))
    });
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
