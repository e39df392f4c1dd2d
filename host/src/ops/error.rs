//! The error every operation returns: the engines' typed errors plus the
//! refusals that only make sense at the operation level.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::crypto::{EnvelopeError, KeyError};
use crate::gateway::{CredentialError, GatewayError};
use crate::home::HomeError;
use crate::policy::{Failure, LoadError};
use crate::runner::RunnerError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("could not start the policy engine: {detail}")]
    Engine { detail: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    InvalidInput { what: String },
    #[error(
        "the current terms (version {current}) have not been accepted; read them with `claude-max-market terms` and accept with `terms --accept` or `opt-in --accept-terms`"
    )]
    TermsNotAccepted { current: String },
    #[error("not opted in to running Claude jobs; run `claude-max-market opt-in --claude-jobs`")]
    NotOptedIn,
    #[error("{what} needs confirmation: pass --yes to confirm without a prompt")]
    NeedsConfirmation { what: &'static str },
    #[error(
        "this node trades on the market as {node}: its balance, reputation and tasks stay with that id, and after rotating the market sees a new node with none of them; pass --yes to rotate anyway"
    )]
    RotationAbandonsMarketIdentity { node: String },
    #[error("denied by policy: {reason}")]
    Denied { reason: String },
    #[error("{0}")]
    PluginRefused(Failure),
    #[error(
        "the audit chain is broken at row {seq}: {reason}; `audit --recover` starts a new chain that records the break and its evidence"
    )]
    ChainBroken { seq: i64, reason: String },
    #[error(transparent)]
    Anchor(#[from] crate::crypto::AnchorError),
    #[error("the audit log no longer holds the anchored head: {reason}")]
    AnchorMismatch { reason: String },
    #[error(
        "the anchored head was signed by node {node}, which is neither a key of this node nor named on its log; make anchors with `audit head` on this node"
    )]
    ForeignAnchor { node: String },
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Key(KeyError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Workspace(#[from] crate::workspace::WorkspaceError),
    #[error(transparent)]
    Wheel(#[from] crate::agent::wheel::WheelError),
    #[error(transparent)]
    Rootfs(#[from] crate::agent::rootfs::RootfsError),
    #[error("could not start the async runtime: {source}")]
    Runtime {
        #[source]
        source: std::io::Error,
    },
    #[error(
        "approval asks before job {job_id} runs ({reason}), and there is no terminal to ask on; \
         run it from a terminal to answer, or pass --approve-all with \
         `config --set compliance.allowAutoApprove=true`"
    )]
    NoOneToAsk { job_id: String, reason: String },
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    #[error(
        "policy bundle {bundle} refused at the {check} check: {reason}; the active policy is unchanged"
    )]
    BundleRefused {
        bundle: String,
        check: &'static str,
        reason: String,
    },
    #[error(
        "this node trusts policy signing keys, so a loose component cannot be activated for {role}; put it in a bundle (`policy build`, `policy sign`) and `policy install` that"
    )]
    LooseRefused { role: String },
    #[error("could not fetch {url}: {detail}")]
    Fetch { url: String, detail: String },
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
    #[error("{file} was not pushed: {reason}")]
    PushRefused { file: PathBuf, reason: String },
    #[error(transparent)]
    Market(#[from] crate::market::MarketError),
    #[error(transparent)]
    Transfer(#[from] crate::market::workspace::TransferError),
    #[error("no offer on the market fits this task: {reasons}")]
    NoOffer { reasons: String },
    #[error(
        "this node has {available} RUV available and the task needs up to {needed}; ask the market's issuer for a grant (`market grant`) or lower --max-price"
    )]
    InsufficientBalance { available: u64, needed: u64 },
    #[error("no task {task} on the market{hint}")]
    UnknownTask { task: String, hint: String },
}

impl OpsError {
    /// True when the operation was refused by policy or consent, which the
    /// binary reports with its own exit code. An approval that asks with no
    /// one to answer is a refusal too: the job did not get its approval.
    pub fn is_denial(&self) -> bool {
        matches!(
            self,
            OpsError::Denied { .. }
                | OpsError::NotOptedIn
                | OpsError::TermsNotAccepted { .. }
                | OpsError::NoOneToAsk { .. }
        )
    }
}
