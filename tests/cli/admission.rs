//! Admission through the library API: parallel processes can never exceed a
//! limit together, because admission is one IMMEDIATE transaction.

use std::sync::{Arc, Barrier};

use claude_max_market::ops::execute::{ExecuteOptions, Program, PromptSource};
use claude_max_market::ops::{Context, OpsError, execute};

use crate::support::Home;

#[test]
fn eight_parallel_admissions_against_a_limit_of_five_admit_five() {
    let home = Home::opted_in();
    home.set(&[
        "compliance.requireApproval=false",
        "limits.dailyTasks=5",
        "limits.concurrentJobs=100",
    ]);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let path = home.path().to_path_buf();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut ctx = Context::open(Some(path)).expect("opening the home");
                let opts = ExecuteOptions {
                    budget_tokens: Some(100),
                    ..options(PromptSource::Text(format!("job {i}")))
                };
                barrier.wait();
                execute::admit(&mut ctx, &opts)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 5, "{results:?}");
    for denied in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(denied, OpsError::Denied { reason } if reason.contains("limits")),
            "{denied}"
        );
    }
    let (_, status) = home.json(&["status"]);
    assert_eq!(status["usage_today"]["tasks_today"], 5);
    assert_eq!(status["usage_today"]["tokens_today"], 500);
    assert_eq!(status["audit"]["broken"], serde_json::Value::Null);
}

fn options(prompt: PromptSource) -> ExecuteOptions {
    ExecuteOptions {
        program: Program::Prompt(prompt),
        model: None,
        max_tokens: None,
        budget_tokens: None,
        max_requests: None,
        timeout_secs: None,
        workspace: None,
        env: Vec::new(),
        egress: false,
        approve_all: false,
    }
}

#[test]
fn admission_needs_consent() {
    let home = Home::new();
    let mut ctx = Context::open(Some(home.path().to_path_buf())).unwrap();
    let opts = options(PromptSource::Text("hi".into()));
    let err = execute::admit(&mut ctx, &opts).unwrap_err();
    assert!(matches!(err, OpsError::TermsNotAccepted { .. }), "{err}");
    assert!(err.is_denial());
}
