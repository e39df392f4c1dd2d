//! The default approval policy: decides whether a job may run at all.
//!
//! It refuses models outside `compliance.allowedModels` and prompts larger
//! than `compliance.maxPromptBytes`. Everything else runs, but while
//! `compliance.requireApproval` is on the owner is asked first, unless they
//! passed `--approve-all` and `compliance.allowAutoApprove` lets that count.
//! The decision itself is the plain function `judge`, so it can be tested
//! without a host.

use std::sync::OnceLock;

wit_bindgen::generate!({ world: "approval-policy", path: "../../wit" });

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

impl Rules {
    /// Reads every key through `lookup`, so `validate-config` (which gets the
    /// configuration as a list) and `decide` (which asks the host for each
    /// key) share one parser and cannot disagree about what is valid.
    fn read(lookup: impl Fn(&str) -> Option<String>) -> Result<Rules, Vec<String>> {
        let mut r = Reader::new(lookup);
        let rules = Rules {
            require_approval: r.flag("compliance.requireApproval", true),
            allow_auto_approve: r.flag("compliance.allowAutoApprove", false),
            allowed_models: r.models("compliance.allowedModels", DEFAULT_MODELS),
            max_prompt_bytes: r.count("compliance.maxPromptBytes", DEFAULT_MAX_PROMPT_BYTES),
        };
        r.finish(rules)
    }
}

/// Reads settings one key at a time, collecting a message for every value
/// that does not parse instead of stopping at the first, so the owner can
/// fix them all in one go.
struct Reader<F> {
    lookup: F,
    problems: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    fn new(lookup: F) -> Self {
        Reader {
            lookup,
            problems: Vec::new(),
        }
    }

    /// The parsed value of `key`, or `default` when it is unset. A value
    /// that does not parse is recorded and also yields `default`, so reading
    /// can carry on.
    fn value<T>(
        &mut self,
        key: &str,
        default: T,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> T {
        let Some(raw) = (self.lookup)(key) else {
            return default;
        };
        parse(&raw).unwrap_or_else(|| {
            self.problems
                .push(format!("{key}: expected {expected}, got '{raw}'"));
            default
        })
    }

    fn flag(&mut self, key: &str, default: bool) -> bool {
        self.value(key, default, "true or false", |raw| match raw {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        })
    }

    fn count(&mut self, key: &str, default: u64) -> u64 {
        self.value(key, default, "a whole number", |raw| raw.parse().ok())
    }

    fn models(&mut self, key: &str, default: &str) -> Vec<String> {
        let expected = "a comma-separated list of at least one model name";
        self.value(key, split_models(default), expected, |raw| {
            let models = split_models(raw);
            (!models.is_empty()).then_some(models)
        })
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<String>> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(self.problems)
        }
    }
}

fn split_models(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(String::from)
        .collect()
}

/// The approval decision for one job under the given rules.
fn judge(job: &Job, rules: &Rules) -> Verdict {
    if !rules.allowed_models.contains(&job.model) {
        let allowed = rules.allowed_models.join(",");
        return Verdict::Deny(format!(
            "model '{}' is not allowed on this node (allowed: {allowed}); to allow it, run \
             `claude-max-market config --set compliance.allowedModels={allowed},{}`",
            job.model, job.model
        ));
    }
    if job.prompt_bytes > rules.max_prompt_bytes {
        return Verdict::Deny(format!(
            "the prompt is {} bytes, over compliance.maxPromptBytes ({}); shorten it or run \
             `claude-max-market config --set compliance.maxPromptBytes=<bytes>`",
            job.prompt_bytes, rules.max_prompt_bytes
        ));
    }
    if rules.require_approval {
        ask_owner(job, rules)
    } else {
        Verdict::Allow
    }
}

/// Whether the owner still has to be asked, when approval is required.
fn ask_owner(job: &Job, rules: &Rules) -> Verdict {
    match (job.pre_approved, rules.allow_auto_approve) {
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
fn what_runs(job: &Job) -> String {
    let work = if job.command.is_empty() {
        format!("answer a {}-byte prompt", job.prompt_bytes)
    } else {
        format!("run `{}`", job.command.join(" "))
    };
    let digest = job
        .image
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&job.image.digest);
    let image = match digest.get(..12) {
        Some(short) => format!("{} ({short})", job.image.reference),
        None => job.image.reference.clone(),
    };
    let workspace = job.workspace.as_ref().map_or(String::new(), |w| {
        format!(" on a workspace of {} files, {} bytes", w.files, w.bytes)
    });
    let egress = if job.egress {
        ", with web access through server-side tools"
    } else {
        ""
    };
    let b = &job.budget;
    format!(
        "job {}: {work} in {image}{workspace} with {}, budget {} tokens, {} requests, {} s{egress}, \
         for {}",
        job.id, job.model, b.tokens, b.requests, b.timeout_secs, job.requester
    )
}

struct ApprovalPolicy;

impl ConfigCheck for ApprovalPolicy {
    fn validate_config(config: Vec<(String, String)>) -> Result<(), Vec<String>> {
        // The last occurrence wins, as it would in a config file read top down.
        let lookup = |key: &str| {
            config
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        Rules::read(lookup).map(|_| ())
    }
}

/// The rules in force. Settings never change during an instance's life, so
/// they are read from the host once per instance, not once per decision.
fn current_rules() -> &'static Result<Rules, Vec<String>> {
    static RULES: OnceLock<Result<Rules, Vec<String>>> = OnceLock::new();
    RULES.get_or_init(|| Rules::read(settings::get))
}

impl Approval for ApprovalPolicy {
    fn decide(job: Job) -> Verdict {
        // The host only activates a plugin whose configuration validated, so
        // a failure here means the host changed underneath us: refuse rather
        // than guess.
        match current_rules() {
            Ok(rules) => judge(&job, rules),
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

    fn job(model: &str) -> Job {
        Job {
            id: "j1".into(),
            requester: "local".into(),
            model: model.into(),
            budget: Budget {
                tokens: 4096,
                requests: 1,
                timeout_secs: 300,
            },
            prompt_bytes: 1000,
            prompt_sha256: String::new(),
            image: Image {
                reference: "claude-runner".into(),
                digest: format!("sha256:{}", "ab".repeat(32)),
            },
            command: Vec::new(),
            agent: String::new(),
            workspace: None,
            egress: false,
            source: JobSource::Local,
            credential: CredentialKind::ApiKey,
            pre_approved: false,
            labels: Vec::new(),
        }
    }

    fn config(pairs: &[(&str, &str)]) -> Result<Rules, Vec<String>> {
        Rules::read(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
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
