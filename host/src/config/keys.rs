//! The key registry: every setting's name, type, default, meaning and rule.
//!
//! This table is the one place a key is described. The command line, the
//! policy plugins' flattened settings and the file check all go through it,
//! so adding a key here is all it takes to expose it everywhere. It holds
//! no settings of its own and never touches the file.

use std::sync::LazyLock;

use super::Settings;
use super::access::{Access, Field};
use super::error::ConfigError;
use super::rules::{IntRange, ListRule, TextRule};
use super::suggest;
use super::values::ByteSize;

/// A field of `Settings` by path, e.g. `field!(limits.daily_tasks)`.
macro_rules! field {
    ($section:ident . $name:ident) => {
        Field {
            read: |s| &s.$section.$name,
            write: |s| &mut s.$section.$name,
        }
    };
}

/// One setting as users and plugins see it.
#[derive(Debug)]
pub struct KeyInfo {
    /// `section.key`, as in `config --set limits.dailyTasks=5`.
    pub name: &'static str,
    /// The type, e.g. `bool`, `integer 1..=1024`, `size`, `list`.
    pub kind: &'static str,
    /// The default value, in the same form as `Settings::get`.
    pub default: String,
    /// One line on what the key does.
    pub description: &'static str,
    pub(super) access: &'static Access,
}

struct Spec {
    name: &'static str,
    description: &'static str,
    access: Access,
}

const MODEL_NAME: TextRule = TextRule::Name {
    what: "a model name",
    example: "claude-sonnet-4-5",
};

static SPECS: [Spec; 55] = [
    Spec {
        name: "api.defaultModel",
        description: "Model a job uses when it does not name one",
        access: Access::Text(field!(api.default_model), MODEL_NAME),
    },
    Spec {
        name: "api.baseUrl",
        description: "Messages API upstream the job gateway forwards to, with the owner's key",
        access: Access::Text(field!(api.base_url), TextRule::BaseUrl),
    },
    Spec {
        name: "api.maxRetries",
        description: "Times the gateway retries an upstream 429 or 529 before passing it on",
        access: Access::U32(field!(api.max_retries), IntRange::new(0, 10)),
    },
    Spec {
        name: "docker.image",
        description: "Image that job containers run",
        access: Access::Text(
            field!(docker.image),
            TextRule::Name {
                what: "a Docker image reference",
                example: "claude-max-market-job:0.2.0",
            },
        ),
    },
    Spec {
        name: "docker.memory",
        description: "Memory cap of a job container (Docker refuses less than 6m)",
        access: Access::Size(field!(docker.memory), ByteSize::mib(6)),
    },
    Spec {
        name: "docker.cpuMillis",
        description: "Hard CPU cap of a job container in thousandths of a CPU (1500 is 1.5 CPUs); 0 for none beyond docker.cpuShares",
        access: Access::U32(field!(docker.cpu_millis), IntRange::new(0, 1_024_000)),
    },
    Spec {
        name: "docker.cpuShares",
        description: "CPU weight of a job container relative to other containers",
        access: Access::U32(field!(docker.cpu_shares), IntRange::new(2, 262_144)),
    },
    Spec {
        name: "docker.pidsLimit",
        description: "Most processes a job container may run at once",
        access: Access::U32(field!(docker.pids_limit), IntRange::new(8, 32_768)),
    },
    Spec {
        name: "docker.tmpfsSize",
        description: "Size of the writable scratch space inside a job container",
        access: Access::Size(field!(docker.tmpfs_size), ByteSize::mib(1)),
    },
    Spec {
        name: "security.keyRotationDays",
        description: "Days after which this node's key is due for rotation",
        access: Access::U32(field!(security.key_rotation_days), IntRange::new(1, 3650)),
    },
    Spec {
        name: "security.keyPassphraseEnv",
        description: "Environment variable holding the node key's passphrase (empty: none)",
        access: Access::Text(field!(security.key_passphrase_env), TextRule::EnvVarOrEmpty),
    },
    Spec {
        name: "security.apiKeyFile",
        description: "File holding the Anthropic API key (empty: none)",
        access: Access::Text(field!(security.api_key_file), TextRule::PathOrEmpty),
    },
    Spec {
        name: "limits.dailyTasks",
        description: "Jobs that may start per day; 0 stops all jobs",
        access: Access::U32(field!(limits.daily_tasks), IntRange::new(0, 1_000_000)),
    },
    Spec {
        name: "limits.dailyTokens",
        description: "Tokens all jobs together may use or reserve per UTC day",
        access: Access::U64(field!(limits.daily_tokens), IntRange::at_least(0)),
    },
    Spec {
        name: "limits.maxTokensPerTask",
        description: "Largest token budget (input + output, over all its requests) one job may have",
        access: Access::U64(
            field!(limits.max_tokens_per_task),
            IntRange::new(1, 1_000_000_000),
        ),
    },
    Spec {
        name: "limits.timeoutSecs",
        description: "Seconds a job may run before it is stopped",
        access: Access::U32(field!(limits.timeout_secs), IntRange::new(1, 86_400)),
    },
    Spec {
        name: "limits.requestsPerJob",
        description: "Messages API requests one job may send through its gateway",
        access: Access::U32(field!(limits.requests_per_job), IntRange::new(1, 10_000)),
    },
    Spec {
        name: "limits.concurrentJobs",
        description: "Jobs that may run at the same time",
        access: Access::U32(field!(limits.concurrent_jobs), IntRange::new(1, 1024)),
    },
    Spec {
        name: "workspace.maxBytes",
        description: "Largest workspace a job may take in or fill (its /workspace tmpfs; counts against docker.memory)",
        access: Access::Size(field!(workspace.max_bytes), ByteSize::mib(1)),
    },
    Spec {
        name: "workspace.maxFiles",
        description: "Most files and folders a job's workspace may hold",
        access: Access::U32(field!(workspace.max_files), IntRange::new(1, 10_000_000)),
    },
    Spec {
        name: "gateway.allowedBetas",
        description: "anthropic-beta values a job's requests may pass upstream; others are dropped",
        access: Access::List(
            field!(gateway.allowed_betas),
            ListRule::Names {
                what: "beta flags",
                example: "claude-code-20250219",
            },
        ),
    },
    Spec {
        name: "market.url",
        description: "NATS servers of the market (nats:// or tls://); empty keeps the market off",
        access: Access::List(field!(market.url), ListRule::NatsUrls),
    },
    Spec {
        name: "market.basePrice",
        description: "Fixed part of the price this host asks per job",
        access: Access::U64(field!(market.base_price), IntRange::at_least(0)),
    },
    Spec {
        name: "market.pricePerKiloToken",
        description: "Price this host asks per 1000 tokens a job uses",
        access: Access::U64(field!(market.price_per_kilo_token), IntRange::at_least(0)),
    },
    Spec {
        name: "market.maxBidPrice",
        description: "Most this host will bid for a job on the market",
        access: Access::U64(field!(market.max_bid_price), IntRange::at_least(0)),
    },
    Spec {
        name: "market.user",
        description: "User name for the NATS servers; the password comes from market.passwordEnv",
        access: Access::Text(field!(market.user), TextRule::NameOrEmpty),
    },
    Spec {
        name: "market.passwordEnv",
        description: "Environment variable holding the NATS password (used with market.user)",
        access: Access::Text(field!(market.password_env), TextRule::EnvVarOrEmpty),
    },
    Spec {
        name: "market.tokenEnv",
        description: "Environment variable holding a NATS token; used when it is set",
        access: Access::Text(field!(market.token_env), TextRule::EnvVarOrEmpty),
    },
    Spec {
        name: "market.nkeySeedFile",
        description: "File (0600) holding a NATS NKey seed to authenticate with",
        access: Access::Text(field!(market.nkey_seed_file), TextRule::PathOrEmpty),
    },
    Spec {
        name: "market.tlsCaFile",
        description: "PEM file of CA certificates for tls:// servers; setting it requires TLS",
        access: Access::Text(field!(market.tls_ca_file), TextRule::PathOrEmpty),
    },
    Spec {
        name: "market.tlsCertFile",
        description: "PEM client certificate for servers that require one (with market.tlsKeyFile)",
        access: Access::Text(field!(market.tls_cert_file), TextRule::PathOrEmpty),
    },
    Spec {
        name: "market.tlsKeyFile",
        description: "PEM private key of market.tlsCertFile",
        access: Access::Text(field!(market.tls_key_file), TextRule::PathOrEmpty),
    },
    Spec {
        name: "market.replicas",
        description: "Copies of each market stream when this node creates them (1, or 3 on a cluster)",
        access: Access::U32(field!(market.replicas), IntRange::new(1, 5)),
    },
    Spec {
        name: "market.slots",
        description: "Market jobs this node runs at once when it serves",
        access: Access::U32(field!(market.slots), IntRange::new(1, 64)),
    },
    Spec {
        name: "market.offerTtlSecs",
        description: "Seconds an offer lives unless refreshed (serve refreshes at a third of it)",
        access: Access::U32(field!(market.offer_ttl_secs), IntRange::new(3, 3600)),
    },
    Spec {
        name: "market.offerWaitSecs",
        description: "Seconds execute --market waits for a fitting offer when none is live (0: none)",
        access: Access::U32(field!(market.offer_wait_secs), IntRange::new(0, 3600)),
    },
    Spec {
        name: "market.claimWaitSecs",
        description: "Seconds a requester waits for a provider to claim its task",
        access: Access::U32(field!(market.claim_wait_secs), IntRange::new(1, 3600)),
    },
    Spec {
        name: "market.taskTimeoutSecs",
        description: "Seconds a claimed task has to deliver before it is refunded",
        access: Access::U32(field!(market.task_timeout_secs), IntRange::new(5, 86_400)),
    },
    Spec {
        name: "market.replayWindowSecs",
        description: "Market messages stamped further than this from the server's time are dropped",
        access: Access::U32(field!(market.replay_window_secs), IntRange::new(10, 86_400)),
    },
    Spec {
        name: "market.issuerKeys",
        description: "Node ids whose RUV grants this node accepts (the same on every node of a market)",
        access: Access::List(field!(market.issuer_keys), ListRule::NodeIds),
    },
    Spec {
        name: "market.abortOnStop",
        description: "On SIGTERM, serve aborts running market jobs (refunded) instead of finishing them",
        access: Access::Bool(field!(market.abort_on_stop)),
    },
    Spec {
        name: "market.pullRegistries",
        description: "Registries (host[:port]) a provider pulls a task's image from, by digest, when it lacks it",
        access: Access::List(
            field!(market.pull_registries),
            ListRule::Names {
                what: "registry hosts",
                example: "registry.example.com,127.0.0.1:5000",
            },
        ),
    },
    Spec {
        name: "compliance.requireApproval",
        description: "Ask before running a job",
        access: Access::Bool(field!(compliance.require_approval)),
    },
    Spec {
        name: "compliance.allowAutoApprove",
        description: "Let the approval policy approve jobs without asking",
        access: Access::Bool(field!(compliance.allow_auto_approve)),
    },
    Spec {
        name: "compliance.allowedModels",
        description: "Models a job may use; the approval policy denies any other",
        access: Access::List(field!(compliance.allowed_models), ListRule::Models),
    },
    Spec {
        name: "compliance.allowedImages",
        description: "Image ids (sha256:…) or repositories market jobs may run in",
        access: Access::List(
            field!(compliance.allowed_images),
            ListRule::Names {
                what: "image ids or repositories",
                example: "claude-max-market-job,python-agent:3",
            },
        ),
    },
    Spec {
        name: "compliance.restrictLocalImages",
        description: "Hold local jobs to compliance.allowedImages too",
        access: Access::Bool(field!(compliance.restrict_local_images)),
    },
    Spec {
        name: "compliance.allowEgress",
        description: "Let jobs use server-side tools that reach the internet (web search and fetch, code execution, MCP)",
        access: Access::Bool(field!(compliance.allow_egress)),
    },
    Spec {
        name: "compliance.maxPromptBytes",
        description: "Largest prompt a job may carry, in bytes",
        access: Access::U64(field!(compliance.max_prompt_bytes), IntRange::at_least(1)),
    },
    Spec {
        name: "policy.fuel",
        description: "Fuel (roughly, WebAssembly instructions) one policy call may burn",
        access: Access::U64(field!(policy.fuel), IntRange::new(10_000, 10_000_000_000)),
    },
    Spec {
        name: "policy.timeoutMs",
        description: "Milliseconds of wall-clock time one policy call may take",
        access: Access::U32(field!(policy.timeout_ms), IntRange::new(1, 10_000)),
    },
    Spec {
        name: "policy.memoryMiB",
        description: "Memory cap of a policy plugin, in MiB",
        access: Access::U32(field!(policy.memory_mib), IntRange::new(1, 1024)),
    },
    Spec {
        name: "policy.maxAnswerBytes",
        description: "Largest answer a policy plugin may return, in bytes",
        access: Access::U32(
            field!(policy.max_answer_bytes),
            IntRange::new(256, 16_777_216),
        ),
    },
    Spec {
        name: "policy.isolation",
        description: "fresh: a new plugin instance per call; reuse: keep one between calls",
        access: Access::Isolation(field!(policy.isolation)),
    },
    Spec {
        name: "policy.minSignatures",
        description: "Valid signatures from trusted keys a policy bundle needs (once a key is trusted)",
        access: Access::U32(field!(policy.min_signatures), IntRange::new(1, 16)),
    },
];

static KEYS: LazyLock<Vec<KeyInfo>> = LazyLock::new(|| {
    let defaults = Settings::default();
    let mut keys: Vec<KeyInfo> = SPECS
        .iter()
        .map(|spec| KeyInfo {
            name: spec.name,
            // Derived from the rule so the two cannot drift apart; the table
            // lives as long as the process, so leaking the text is what gives
            // callers a `&'static str` to keep.
            kind: Box::leak(spec.access.kind().into_boxed_str()),
            default: spec.access.read(&defaults),
            description: spec.description,
            access: &spec.access,
        })
        .collect();
    keys.sort_unstable_by_key(|key| key.name);
    keys
});

/// Every setting, sorted by name.
pub fn keys() -> &'static [KeyInfo] {
    &KEYS
}

pub(super) fn find(name: &str) -> Result<&'static KeyInfo, ConfigError> {
    let keys = keys();
    keys.binary_search_by_key(&name, |key| key.name)
        .map(|at| &keys[at])
        .map_err(|_| ConfigError::UnknownKey {
            key: name.to_string(),
            suggestion: suggest::closest(name).map(String::from),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_the_file_keys() {
        let table = toml::Table::try_from(Settings::default()).unwrap();
        let mut file_keys: Vec<String> = table
            .iter()
            .flat_map(|(section, keys)| {
                let keys = keys.as_table().unwrap();
                keys.keys().map(move |key| format!("{section}.{key}"))
            })
            .collect();
        file_keys.sort();
        let names: Vec<&str> = keys().iter().map(|key| key.name).collect();
        assert_eq!(file_keys, names);
    }

    #[test]
    fn kinds_and_defaults_are_as_documented() {
        let shown = |name: &str| {
            let key = find(name).unwrap();
            (key.kind, key.default.as_str())
        };
        assert_eq!(shown("api.defaultModel"), ("string", "claude-sonnet-4-5"));
        assert_eq!(shown("docker.memory"), ("size", "1g"));
        assert_eq!(shown("docker.cpuShares"), ("integer 2..=262144", "512"));
        assert_eq!(shown("limits.dailyTokens"), ("integer", "2000000"));
        assert_eq!(shown("workspace.maxBytes"), ("size", "256m"));
        assert_eq!(
            shown("compliance.allowedImages"),
            ("list", "claude-max-market-job")
        );
        assert_eq!(
            shown("compliance.maxPromptBytes"),
            ("integer 1..", "200000")
        );
        assert_eq!(shown("compliance.requireApproval"), ("bool", "true"));
        assert_eq!(
            shown("compliance.allowedModels"),
            ("list", "claude-opus-4-1,claude-sonnet-4-5,claude-haiku-4-5")
        );
        assert_eq!(shown("market.url"), ("list", ""));
        assert_eq!(shown("policy.isolation"), ("fresh|reuse", "fresh"));
        assert!(keys().iter().all(|key| !key.description.is_empty()));
    }

    #[test]
    fn defaults_obey_their_own_rules() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn narrow_ranges_fit_their_fields() {
        for spec in &SPECS {
            if let Access::U32(_, range) = &spec.access {
                assert!(u32::try_from(range.max).is_ok(), "{}", spec.name);
            }
        }
    }
}
