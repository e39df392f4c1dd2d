//! The default approval policy: decides whether a job may run at all.
//!
//! It refuses models outside `compliance.allowedModels` and prompts larger
//! than `compliance.maxPromptBytes`. Everything else runs, but while
//! `compliance.requireApproval` is on the owner is asked first, unless they
//! passed `--approve-all` and `compliance.allowAutoApprove` lets that count.
//! The decision itself is the plain function `judge`, so it can be tested
//! without a host.

cmm_policy_sdk::bindings!("approval-policy");

use cmm_policy_sdk::{Cached, Reader, Settings};

use claude_max_market::policy::logging::{self, Level};
use claude_max_market::policy::settings;
use claude_max_market::policy::types::Job;
use exports::claude_max_market::policy::approval::{Guest as Approval, Verdict};
use exports::claude_max_market::policy::config_check::Guest as ConfigCheck;

const DEFAULT_MODELS: &str = "claude-opus-4-1,claude-sonnet-4-5,claude-haiku-4-5";
const DEFAULT_MAX_PROMPT_BYTES: u64 = 200_000;

/// The settings this policy reads, with the documented defaults filled in.
#[derive(Debug)]
struct Rules {
    require_approval: bool,
    allow_auto_approve: bool,
    allowed_models: Vec<String>,
    max_prompt_bytes: u64,
}

impl Settings for Rules {
    fn read(r: &mut Reader<'_>) -> Rules {
        Rules {
            require_approval: r.flag("compliance.requireApproval", true),
            allow_auto_approve: r.flag("compliance.allowAutoApprove", false),
            allowed_models: r.list("compliance.allowedModels", DEFAULT_MODELS),
            max_prompt_bytes: r.count("compliance.maxPromptBytes", DEFAULT_MAX_PROMPT_BYTES),
        }
    }
}

/// The approval decision for one job under the given rules. It reads the
/// model and the prompt's size; the rest only when it asks the owner.
fn judge(job: &impl JobFacts, rules: &Rules) -> Verdict {
    let model = job.model();
    if !rules.allowed_models.contains(&model) {
        let allowed = rules.allowed_models.join(",");
        return Verdict::Deny(format!(
            "model '{model}' is not allowed on this node (allowed: {allowed}); to allow it, run \
             `claude-max-market config --set compliance.allowedModels={allowed},{model}`"
        ));
    }
    let prompt_bytes = job.prompt_bytes();
    if prompt_bytes > rules.max_prompt_bytes {
        return Verdict::Deny(format!(
            "the prompt is {prompt_bytes} bytes, over compliance.maxPromptBytes ({}); shorten it \
             or run `claude-max-market config --set compliance.maxPromptBytes=<bytes>`",
            rules.max_prompt_bytes
        ));
    }
    if rules.require_approval {
        ask_owner(job, rules)
    } else {
        Verdict::Allow
    }
}

/// Whether the owner still has to be asked, when approval is required.
fn ask_owner(job: &impl JobFacts, rules: &Rules) -> Verdict {
    match (job.pre_approved(), rules.allow_auto_approve) {
        (true, true) => Verdict::Allow,
        (true, false) => Verdict::Ask(
            "--approve-all was given but compliance.allowAutoApprove is false; approve this \
             job yourself, or run `claude-max-market config --set \
             compliance.allowAutoApprove=true` to let --approve-all count"
                .into(),
        ),
        (false, _) => Verdict::Ask(format!("{}?", what_runs(job))),
    }
}

/// The job in one sentence, as the owner is asked about it: what runs,
/// where, on what, and what it may spend.
fn what_runs(job: &impl JobFacts) -> String {
    let command = job.command();
    let work = if command.is_empty() {
        format!("answer a {}-byte prompt", job.prompt_bytes())
    } else {
        format!("run `{}`", command.join(" "))
    };
    let image = job.image();
    let digest = image
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&image.digest);
    let image = match digest.get(..12) {
        Some(short) => format!("{} ({short})", image.reference),
        None => image.reference,
    };
    let workspace = job.workspace().map_or(String::new(), |w| {
        format!(" on a workspace of {} files, {} bytes", w.files, w.bytes)
    });
    let egress = if job.egress() {
        ", with web access through server-side tools"
    } else {
        ""
    };
    let b = job.budget();
    format!(
        "job {}: {work} in {image}{workspace} with {}, budget {} tokens, {} requests, {} s{egress}, \
         for {}",
        job.id(),
        job.model(),
        b.tokens,
        b.requests,
        b.timeout_secs,
        job.requester()
    )
}

struct ApprovalPolicy;

impl ConfigCheck for ApprovalPolicy {
    fn validate_config(config: Vec<(String, String)>) -> Result<(), Vec<String>> {
        Rules::validate(&config)
    }
}

static RULES: Cached<Rules> = Cached::new();

impl Approval for ApprovalPolicy {
    fn decide(job: &Job) -> Verdict {
        // The host only activates a plugin whose configuration validated, so
        // a failure here means the host changed underneath us: refuse rather
        // than guess.
        match RULES.get(settings::get) {
            Ok(rules) => judge(job, rules),
            Err(problems) => {
                // The host records every decision; a log line is for what
                // only the plugin knows.
                let problems = problems.join("; ");
                logging::log(
                    Level::Warn,
                    &format!("settings changed after validation: {problems}"),
                );
                Verdict::Deny(format!("bad configuration: {problems}"))
            }
        }
    }
}

export!(ApprovalPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use claude_max_market::policy::types::{Budget, CredentialKind, Image, JobSource, Workspace};

    fn job(model: &str) -> JobRecord {
        cmm_policy_sdk::job! {
            model: model.into(),
            budget: Budget {
                tokens: 4096,
                requests: 1,
                timeout_secs: 300,
            },
            prompt_bytes: 1000,
            image: Image {
                reference: "claude-runner".into(),
                digest: format!("sha256:{}", "ab".repeat(32)),
            },
        }
    }

    fn config(pairs: &[(&str, &str)]) -> Result<Rules, Vec<String>> {
        Rules::from_pairs(&cmm_policy_sdk::testing::pairs(pairs))
    }

    fn defaults() -> Rules {
        config(&[]).expect("the defaults are valid")
    }

    #[test]
    fn missing_keys_take_the_documented_defaults() {
        let rules = defaults();
        assert!(rules.require_approval && !rules.allow_auto_approve);
        assert_eq!(rules.allowed_models.len(), 3);
        assert_eq!(rules.max_prompt_bytes, DEFAULT_MAX_PROMPT_BYTES);
    }

    #[test]
    fn every_bad_key_is_reported_and_unknown_keys_are_ignored() {
        let problems = config(&[
            ("compliance.maxPromptBytes", "abc"),
            ("compliance.allowedModels", " , "),
            ("compliance.requireApproval", "yes"),
            ("someone.else", "whatever"),
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 3);
        assert!(
            problems
                .contains(&"compliance.maxPromptBytes: expected a whole number, got 'abc'".into())
        );
    }

    #[test]
    fn unlisted_model_is_denied_with_the_fix() {
        let Verdict::Deny(reason) = judge(&job("gpt-5"), &defaults()) else {
            panic!("expected deny");
        };
        assert!(reason.contains("'gpt-5'"));
        assert!(reason.contains("config --set compliance.allowedModels="));
    }

    #[test]
    fn the_question_names_the_command_image_workspace_and_budget() {
        let mut agent = job("claude-sonnet-4-5");
        agent.command = vec!["python3".into(), "agent.py".into()];
        agent.workspace = Some(Workspace {
            bytes: 2048,
            files: 3,
        });
        agent.egress = true;
        let Verdict::Ask(question) = judge(&agent, &defaults()) else {
            panic!("expected ask");
        };
        for part in [
            "run `python3 agent.py`",
            "claude-runner (abababababab)",
            "workspace of 3 files, 2048 bytes",
            "budget 4096 tokens, 1 requests, 300 s",
            "web access",
        ] {
            assert!(question.contains(part), "{part} not in {question}");
        }
    }

    #[test]
    fn oversized_prompt_is_denied() {
        let mut big = job("claude-haiku-4-5");
        big.prompt_bytes = DEFAULT_MAX_PROMPT_BYTES + 1;
        assert!(matches!(judge(&big, &defaults()), Verdict::Deny(_)));
    }

    #[test]
    fn approve_all_counts_only_when_auto_approve_is_allowed() {
        let mut pre = job("claude-sonnet-4-5");
        pre.pre_approved = true;
        let mut rules = defaults();
        let asked = judge(&job("claude-sonnet-4-5"), &rules);
        assert!(
            matches!(&asked, Verdict::Ask(r) if r.contains("answer a 1000-byte prompt in claude-runner (abababababab) with claude-sonnet-4-5, budget 4096 tokens")),
            "{asked:?}"
        );
        assert!(matches!(judge(&pre, &rules), Verdict::Ask(r) if r.starts_with("--approve-all")));
        rules.allow_auto_approve = true;
        assert!(matches!(judge(&pre, &rules), Verdict::Allow));
        rules.require_approval = false;
        assert!(matches!(
            judge(&job("claude-sonnet-4-5"), &rules),
            Verdict::Allow
        ));
    }
}
