//! The sections of `config.toml` as typed structs, with their defaults.
//!
//! Serde names follow the file (camelCase keys); a missing key takes its
//! default and an unknown one is refused, so a typo never silently leaves a
//! default in force. What each key means and allows lives in `keys`, not
//! here: these structs hold values and nothing else.

use serde::{Deserialize, Serialize};

use super::values::ByteSize;

/// `[api]`: talking to the Anthropic API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiSettings {
    pub default_model: String,
    pub base_url: String,
    pub max_retries: u32,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            default_model: "claude-sonnet-4-5".to_string(),
            base_url: "https://api.anthropic.com".to_string(),
            max_retries: 3,
        }
    }
}

/// `[docker]`: the job container's image and resource caps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DockerSettings {
    pub image: String,
    pub memory: ByteSize,
    pub cpu_shares: u32,
    /// A hard cap in thousandths of a CPU; 0 for none beyond the weight.
    pub cpu_millis: u32,
    pub pids_limit: u32,
    pub tmpfs_size: ByteSize,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            image: "claude-max-market-job:0.2.0".to_string(),
            // An agent such as Claude Code needs a few hundred MiB, and the
            // workspace and /tmp tmpfs count against this cap too.
            memory: ByteSize::mib(1024),
            cpu_shares: 512,
            cpu_millis: 0,
            pids_limit: 256,
            tmpfs_size: ByteSize::mib(128),
        }
    }
}

/// `[security]`: node keys and where the API key comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SecuritySettings {
    pub key_rotation_days: u32,
    /// Empty means none.
    pub key_passphrase_env: String,
    /// Empty means none.
    pub api_key_file: String,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            key_rotation_days: 90,
            key_passphrase_env: String::new(),
            api_key_file: String::new(),
        }
    }
}

/// `[limits]`: how much work this host takes on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsSettings {
    pub daily_tasks: u32,
    pub daily_tokens: u64,
    /// The largest token budget one job may be granted.
    pub max_tokens_per_task: u64,
    pub timeout_secs: u32,
    pub requests_per_job: u32,
    pub concurrent_jobs: u32,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        // An agent's requests each carry its whole conversation, so one
        // working job spends tens of thousands of tokens per request.
        LimitsSettings {
            daily_tasks: 20,
            daily_tokens: 2_000_000,
            max_tokens_per_task: 200_000,
            timeout_secs: 600,
            requests_per_job: 200,
            concurrent_jobs: 2,
        }
    }
}

/// `[workspace]`: the folder a job works on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkspaceSettings {
    /// Also the size of the container's `/workspace` tmpfs.
    pub max_bytes: ByteSize,
    pub max_files: u32,
}

impl Default for WorkspaceSettings {
    fn default() -> Self {
        WorkspaceSettings {
            max_bytes: ByteSize::mib(256),
            max_files: 20_000,
        }
    }
}

/// `[gateway]`: what a job's requests may carry to the upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewaySettings {
    /// `anthropic-beta` values passed upstream; others are dropped.
    pub allowed_betas: Vec<String>,
}

/// Beta flags real clients (Claude Code, the SDKs) send that change how the
/// model answers but fetch nothing from the internet. Betas for server-side
/// tools that do (web fetch, code execution, MCP, files, skills) pass only
/// when a job's decision allowed egress.
pub const DEFAULT_BETAS: [&str; 17] = [
    "claude-code-20250219",
    "interleaved-thinking-2025-05-14",
    "fine-grained-tool-streaming-2025-05-14",
    "context-management-2025-06-27",
    "context-1m-2025-08-07",
    "prompt-caching-2024-07-31",
    "extended-cache-ttl-2025-04-11",
    "token-efficient-tools-2025-02-19",
    "token-counting-2024-11-01",
    "output-128k-2025-02-19",
    "thinking-token-count-2026-05-13",
    "advanced-tool-use-2025-11-20",
    "effort-2025-11-24",
    "structured-outputs-2025-11-13",
    "tool-search-tool-2025-10-19",
    "redact-thinking-2026-02-12",
    "thinking-display-updates-2026-08-18",
];

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            allowed_betas: DEFAULT_BETAS.map(String::from).to_vec(),
        }
    }
}

/// `[market]`: where the market is and what this host charges and bids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MarketSettings {
    /// NATS server URLs; empty keeps the market off.
    pub url: Vec<String>,
    pub base_price: u64,
    pub price_per_kilo_token: u64,
    pub max_bid_price: u64,
    /// Empty means no user/password authentication.
    pub user: String,
    pub password_env: String,
    pub token_env: String,
    /// Empty means none.
    pub nkey_seed_file: String,
    /// Empty means none.
    pub tls_ca_file: String,
    /// Empty means none.
    pub tls_cert_file: String,
    /// Empty means none.
    pub tls_key_file: String,
    pub replicas: u32,
    pub slots: u32,
    pub offer_ttl_secs: u32,
    /// How long `execute --market` waits for a fitting offer: a provider
    /// started a moment ago has not advertised yet.
    pub offer_wait_secs: u32,
    pub claim_wait_secs: u32,
    pub task_timeout_secs: u32,
    pub replay_window_secs: u32,
    pub issuer_keys: Vec<String>,
    pub abort_on_stop: bool,
    /// Registries (`host[:port]`) a provider pulls a task's image from, by
    /// digest, when it does not have it; empty pulls nothing.
    pub pull_registries: Vec<String>,
}

impl Default for MarketSettings {
    fn default() -> Self {
        MarketSettings {
            url: Vec::new(),
            base_price: 10,
            price_per_kilo_token: 2,
            max_bid_price: 100,
            user: String::new(),
            password_env: "CMM_NATS_PASSWORD".to_string(),
            token_env: "CMM_NATS_TOKEN".to_string(),
            nkey_seed_file: String::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            replicas: 1,
            slots: 1,
            offer_ttl_secs: 30,
            offer_wait_secs: 10,
            claim_wait_secs: 30,
            task_timeout_secs: 300,
            replay_window_secs: 300,
            issuer_keys: Vec::new(),
            abort_on_stop: false,
            pull_registries: Vec::new(),
        }
    }
}

/// `[compliance]`: what jobs may do at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ComplianceSettings {
    pub require_approval: bool,
    pub allow_auto_approve: bool,
    pub allowed_models: Vec<String>,
    pub max_prompt_bytes: u64,
    /// Image ids or repositories market jobs may run in.
    pub allowed_images: Vec<String>,
    /// Hold local jobs to `allowed_images` too.
    pub restrict_local_images: bool,
    /// Let jobs use server-side tools that reach the internet.
    pub allow_egress: bool,
}

impl Default for ComplianceSettings {
    fn default() -> Self {
        ComplianceSettings {
            require_approval: true,
            allow_auto_approve: false,
            allowed_models: ["claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"]
                .map(String::from)
                .to_vec(),
            max_prompt_bytes: 200_000,
            allowed_images: vec!["claude-max-market-job".to_string()],
            restrict_local_images: false,
            allow_egress: false,
        }
    }
}

/// `[policy]`: the sandbox each policy plugin call runs in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySettings {
    pub fuel: u64,
    pub timeout_ms: u32,
    // camelCase would give `memoryMib`; the unit is spelled MiB everywhere.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u32,
    pub max_answer_bytes: u32,
    pub isolation: Isolation,
    /// Valid signatures from trusted keys a bundle needs, once any key is trusted.
    pub min_signatures: u32,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            fuel: 20_000_000,
            timeout_ms: 50,
            memory_mib: 16,
            max_answer_bytes: 65536,
            isolation: Isolation::Fresh,
            min_signatures: 1,
        }
    }
}

/// Whether each policy call gets a fresh plugin instance or reuses one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A new instance per call: no state survives between decisions.
    #[default]
    Fresh,
    /// One warm instance per plugin, kept between calls.
    Reuse,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Fresh => "fresh",
            Isolation::Reuse => "reuse",
        }
    }

    /// Reads `fresh` or `reuse`, in any case.
    pub fn from_name(text: &str) -> Option<Isolation> {
        [Isolation::Fresh, Isolation::Reuse]
            .into_iter()
            .find(|mode| mode.as_str().eq_ignore_ascii_case(text.trim()))
    }
}
