//! The bodies of market messages: what providers offer, what requesters
//! post and bid, claims, progress, results, and the ledger's entries. Every
//! one travels inside a signed message (`message`), whose signer is the
//! node the body speaks for.

use serde::{Deserialize, Serialize};

/// One market message's body, tagged with its kind on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "kebab-case")]
pub enum Body {
    Offer(Offer),
    Task(Task),
    Bid(Bid),
    Claim(Claim),
    Status(Status),
    Part(Part),
    Result(TaskResult),
    Grant(Grant),
    Lock(Lock),
    Release(Release),
    Refund(Refund),
    Receipt(Receipt),
    Checkpoint(Checkpoint),
}

impl Body {
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Offer(_) => "offer",
            Body::Task(_) => "task",
            Body::Bid(_) => "bid",
            Body::Claim(_) => "claim",
            Body::Status(_) => "status",
            Body::Part(_) => "part",
            Body::Result(_) => "result",
            Body::Grant(_) => "grant",
            Body::Lock(_) => "lock",
            Body::Release(_) => "release",
            Body::Refund(_) => "refund",
            Body::Receipt(_) => "receipt",
            Body::Checkpoint(_) => "checkpoint",
        }
    }
}

/// A provider's standing offer, kept alive in the offers bucket while it
/// serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// Jobs it runs at once for the market.
    pub slots: u32,
    /// Of those, how many are busy now.
    pub busy: u32,
    /// What it asks for a job of up to `max_tokens`, in RUV.
    pub price: u64,
    pub models: Vec<String>,
    /// The largest `max_tokens` it grants one job, and the largest token
    /// budget it sells a command task.
    pub max_tokens: u32,
    /// The images it runs for the market (its `compliance.allowedImages`:
    /// ids, repositories or `repository:tag`s); empty when it names none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// RUV per 1,000 tokens used (input, cache and output), when it charges
    /// by use: `price` is then the most a task costs, and its receipt says
    /// what it cost. Zero for a price per task.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub token_price: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A requester's task. The prompt (or, for a command task, the
/// [`CommandPayload`]) is in `payload`, encrypted to every candidate
/// provider; the rest is what providers decide on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub task: String,
    pub model: String,
    pub max_tokens: u32,
    /// The size of the payload's plaintext.
    pub prompt_bytes: u64,
    /// Hex SHA-256 of the payload's plaintext; the provider checks it after
    /// decrypting.
    pub prompt_sha256: String,
    /// The most the requester pays, in RUV (a later `Bid` may change it).
    pub bid: u64,
    /// Node ids the payload is encrypted to, most preferred first.
    pub candidates: Vec<String>,
    /// Seconds the requester waits for a result once the task is locked.
    pub timeout_secs: u32,
    /// The prompt, as a base64 CMMENC envelope.
    pub payload: String,
    /// Set for a command task: the image, budget and workspace a provider
    /// decides on. Absent for a one-prompt task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandTask>,
}

/// What a command task runs on and may spend. The command line and its
/// environment are in the task's encrypted payload; the workspace is an
/// object of its own, encrypted to the same candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandTask {
    /// The image by digest: an image id (`sha256:…`) or a reference pinned
    /// by digest (`repo@sha256:…`). A provider never resolves a tag.
    pub image: String,
    /// The requester's name for the image, for people to read.
    pub reference: String,
    /// The agent the command was set up for (`claude-code`), or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent: String,
    /// Tokens, input and output over all requests, the job may use.
    pub budget_tokens: u64,
    pub max_requests: u32,
    /// It asks to use server-side tools that reach the internet.
    pub egress: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceObject>,
}

/// A workspace travelling as an object of the market's object store: a tar
/// of the folder, sealed (CMMENC) to its readers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceObject {
    /// Its name in the object store.
    pub object: String,
    /// The sealed object's size, which a reader checks before fetching it.
    pub stored_bytes: u64,
    /// Hex SHA-256 of the tar inside.
    pub sha256: String,
    /// The bytes of the folder's regular files, and its files, folders and
    /// symlinks, as the policies judge them.
    pub bytes: u64,
    pub files: u32,
}

/// The plaintext of a command task's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandPayload {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// What the command reads on stdin (an agent's prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

/// A changed bid on an open task, from the task's requester.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bid {
    pub task: String,
    pub bid: u64,
}

/// A provider's claim on a task, at a price no higher than the bid. Stored
/// with compare-and-set, so exactly one claim per task exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub task: String,
    /// The task's requester, so a claim cannot be moved to another task.
    pub requester: String,
    pub price: u64,
}

/// Progress on a claimed task, from its provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub task: String,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Where a task stands, as its provider reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    Running,
    Failed,
}

/// A piece of a running task's output, encrypted to the requester, so it
/// can watch the job as it runs. Parts are numbered from 0 and published
/// before the result on the same subject; only the result is checked and
/// paid for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub task: String,
    pub seq: u32,
    /// The piece, as a base64 CMMENC envelope to the requester.
    pub payload: String,
}

/// A finished task's result, encrypted to the requester.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: String,
    /// How the job ended on the provider (finished, failed, timed_out, ...).
    pub state: String,
    /// Hex SHA-256 of the plaintext in `payload`.
    pub sha256: String,
    /// The result, as a base64 CMMENC envelope to the requester.
    pub payload: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// A command task's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// A command task's workspace as the job left it, sealed to the
    /// requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceObject>,
}

/// An issuer's word on the ledger's state after the entry at `seq`: the
/// digest of the [`LedgerState`](super::checkpoint::LedgerState) every node
/// replaying the stream up to there must reach. The state itself is not in
/// the message, so a checkpoint stays small however many accounts there
/// are; a node resuming from it gets the state elsewhere and checks it
/// against this digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last stream sequence the state includes. A checkpoint is only
    /// checked when it is stored right after that entry.
    pub seq: u64,
    /// Hex SHA-256 of the state's canonical JSON.
    pub digest: String,
}

/// RUV created by an issuer the nodes trust (`market.issuerKeys`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// Unique per grant: a grant is applied once, however often it is sent.
    pub grant: String,
    /// The node id credited.
    pub to: String,
    pub amount: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub memo: String,
}

/// The requester's escrow for a matched task: `amount` leaves its balance
/// until the task is released to the provider or refunded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lock {
    pub task: String,
    pub provider: String,
    pub amount: u64,
    /// Seconds the provider has to deliver; reputation measures against it.
    pub timeout_secs: u32,
}

/// The requester's signed receipt of a result that decrypted and verified:
/// `amount` of the lock (all of it when absent) goes to the provider, the
/// rest back to the requester.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub task: String,
    /// Milliseconds from the lock to the verified result.
    pub elapsed_ms: u64,
    /// What the provider's receipt asks, never above the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
}

/// The provider's signed account of what a task used upstream, as its
/// gateway metered it, and what that costs: published on the ledger with
/// the result, before the requester releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub task: String,
    /// Requests forwarded upstream.
    pub requests: u32,
    /// Usage by model, sorted by model.
    pub models: Vec<ModelUsage>,
    /// Hex SHA-256 of each upstream reply's `request-id`, in order: the
    /// provider can show its upstream account matches, without the ids.
    pub replies: Vec<String>,
    /// What the provider asks: the claimed price for a price per task, the
    /// tokens at its `token_price` otherwise; never above the lock.
    pub amount: u64,
}

impl Receipt {
    pub fn input_tokens(&self) -> u64 {
        self.models.iter().map(ModelUsage::input_total).sum()
    }

    pub fn output_tokens(&self) -> u64 {
        self.models.iter().map(|m| m.output_tokens).sum()
    }
}

/// One model's share of a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUsage {
    pub model: String,
    pub requests: u32,
    /// Uncached input tokens.
    pub input_tokens: u64,
    pub cache_creation_tokens: u64,
    pub cache_read_tokens: u64,
    pub output_tokens: u64,
}

impl ModelUsage {
    /// Input the upstream processed: uncached, cache writes and reads.
    pub fn input_total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_tokens)
            .saturating_add(self.cache_read_tokens)
    }
}

/// The lock goes back to the requester.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    pub task: String,
    pub reason: RefundReason,
}

/// Why a lock was refunded; reputation counts each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefundReason {
    /// The provider reported that the job failed (or gave the task up).
    Failed,
    /// No result came before the lock's timeout.
    TimedOut,
    /// A result came but did not decrypt or verify.
    Disputed,
}

impl RefundReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundReason::Failed => "failed",
            RefundReason::TimedOut => "timed-out",
            RefundReason::Disputed => "disputed",
        }
    }
}
