//! Unmodified Anthropic clients inside the sandbox: the official Python SDK
//! and Claude Code, each in its own image, talking to the gateway through
//! the relay on the container's loopback, with the mock as the upstream.

use std::path::Path;

use mock_anthropic::{Scenario, ToolCall};
use serde_json::{Value, json};

use crate::docker_support::{JobHome, KEY, inspect, job_end, job_events};
use crate::images;

const SDK_SCRIPT: &str = r#"
import anthropic
client = anthropic.Anthropic()
with client.messages.stream(
    model="claude-sonnet-4-5",
    max_tokens=200,
    messages=[{"role": "user", "content": "Stream a greeting to the sandbox"}],
) as stream:
    for text in stream.text_stream:
        print(text, end="", flush=True)
print()
count = client.messages.count_tokens(
    model="claude-sonnet-4-5",
    messages=[{"role": "user", "content": "How many tokens is this?"}],
)
print("counted", count.input_tokens)
"#;

#[test]
fn the_python_sdk_streams_and_counts_tokens_unmodified() {
    let env = JobHome::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sdk.py"), SDK_SCRIPT).unwrap();
    let run = env.execute(&[
        "--json",
        "--image",
        images::python_sdk(),
        "--workspace",
        dir.path().to_str().unwrap(),
        "--",
        "python3",
        "sdk.py",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let doc = job_end(&run.stdout);
    let output = doc["output"].as_str().unwrap();
    assert!(
        output.contains("Mock reply to: Stream a greeting"),
        "{output}"
    );
    assert!(output.contains("counted "), "{output}");
    let requests = env.mock.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/v1/messages", "/v1/messages/count_tokens"]);
    assert!(requests.iter().all(|r| r.header("x-api-key") == Some(KEY)));
    let job = &doc["job"];
    assert_eq!(job["requests"], 2, "a count uses the request cap");
    let reported = env.mock.reported();
    assert_eq!(job["input_tokens"], reported.input_tokens, "{doc:#}");
    assert_eq!(job["output_tokens"], reported.output_tokens);
}

/// A folder for Claude Code to work on.
fn notes() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "one\ntwo\n").unwrap();
    dir
}

/// `execute --json` arguments for Claude Code on `dir`, then `rest`.
fn claude_code_on<'a>(dir: &'a Path, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--json",
        "--agent",
        "claude-code",
        "--image",
        images::claude_code(),
        "--workspace",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(rest);
    args
}

fn bash(command: &str) -> ToolCall {
    ToolCall::new(
        "Bash",
        json!({ "command": command, "description": "Edit the notes" }),
    )
}

#[test]
fn claude_code_edits_a_workspace_through_a_scripted_conversation() {
    let env = JobHome::new();
    let dir = notes();
    // The first call sleeps so the test can look at the running container.
    env.mock.push(Scenario::ToolUse {
        text: "I'll look at the notes first.".into(),
        calls: vec![bash("sleep 2; cat notes.txt")],
        input_tokens: 2100,
        output_tokens: 33,
    });
    env.mock.push(Scenario::ToolUse {
        text: String::new(),
        calls: vec![bash("printf 'one\\nthree\\n' > notes.txt")],
        input_tokens: 2300,
        output_tokens: 41,
    });
    env.mock.push(Scenario::Reply {
        text: "notes.txt now says three.".into(),
        input_tokens: 2500,
        output_tokens: 9,
    });
    let child = env.spawn(&claude_code_on(
        dir.path(),
        &["--prompt", "Replace two with three in notes.txt"],
    ));
    let (container, _) = env.wait_for_container();
    let running = inspect(&container);
    assert_eq!(running["HostConfig"]["NetworkMode"], "none");
    let config = running["Config"].to_string();
    assert!(!config.contains(KEY), "the key is not in the container");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let events = job_events(&stdout);
    let tools: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "tool_call")
        .collect();
    assert_eq!(tools.len(), 2, "{stdout}");
    assert_eq!(tools[1]["tool"], "Bash");
    let answer = events.iter().find(|e| e["event"] == "answer").unwrap();
    assert_eq!(answer["text"], "notes.txt now says three.", "{answer:#}");
    assert_eq!(answer["is_error"], false);

    let doc = job_end(&stdout);
    let job = &doc["job"];
    assert_eq!(job["state"], "finished", "{doc:#}");
    assert_eq!(job["workspace"]["changed"], json!(["notes.txt"]), "{doc:#}");
    let id = job["job_id"].as_str().unwrap();
    let diff = env.home.ok(&["result", id, "--diff"]).stdout;
    assert!(diff.contains("-two\n+three"), "{diff}");

    let reported = env.mock.reported();
    assert_eq!(reported.replies, 3);
    assert_eq!(job["input_tokens"], reported.input_tokens, "{doc:#}");
    assert_eq!(job["output_tokens"], reported.output_tokens);
    let requests = env.mock.requests();
    assert!(requests.iter().all(|r| r.header("x-api-key") == Some(KEY)));
    // Claude Code's own beta passed the allow-list: the mock spoke to it.
    assert!(
        requests.iter().all(|r| r
            .header("anthropic-beta")
            .is_some_and(|b| b.contains("claude-code-20250219"))),
        "{:?}",
        requests
            .iter()
            .map(|r| r.header("anthropic-beta"))
            .collect::<Vec<_>>()
    );
    let logged = env.home.audit_of("gateway.request").len();
    assert_eq!(logged, requests.len(), "every request is on the audit log");
}

#[test]
fn an_agent_that_never_stops_ends_at_its_budget() {
    let env = JobHome::new();
    let dir = notes();
    // Within what any real tokenizer could make of Claude Code's requests,
    // which carry its whole system prompt and twelve tool definitions.
    env.mock.set_default(Scenario::ToolUse {
        text: String::new(),
        calls: vec![bash("echo again >> notes.txt")],
        input_tokens: 9000,
        output_tokens: 50,
    });
    let budget = 60_000u64;
    let budget_arg = budget.to_string();
    let run = env.execute(&claude_code_on(
        dir.path(),
        &[
            "--budget-tokens",
            &budget_arg,
            "--prompt",
            "Keep appending to notes.txt",
        ],
    ));
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let doc = job_end(&run.stdout);
    let job = &doc["job"];
    assert_eq!(job["state"], "out_of_budget", "{doc:#}");
    let used = job["input_tokens"].as_u64().unwrap() + job["output_tokens"].as_u64().unwrap();
    assert!(used <= budget, "metered {used} of {budget}");
    let reported = env.mock.reported();
    assert!(reported.replies >= 2, "it ran a while: {reported:?}");
    assert_eq!(used, reported.input_tokens + reported.output_tokens);
    let answer = job_events(&run.stdout)
        .into_iter()
        .find(|e| e["event"] == "answer")
        .expect("Claude Code reported how it ended");
    assert_eq!(answer["is_error"], true, "{answer:#}");
    let text = answer["text"].as_str().unwrap();
    assert!(
        text.contains("budget"),
        "the client saw the gateway's error: {text}"
    );
    // Before refusing, the gateway shrank max_tokens to what was left.
    let forwarded = env.home.audit_of("gateway.request");
    let clamped = forwarded
        .iter()
        .filter(|e| e["details"]["clamped"] == true)
        .count();
    assert!(clamped >= 1, "{forwarded:#?}");
}
