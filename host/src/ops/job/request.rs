//! What a job asks for, and the one place its description is built: the
//! record the policies judge and the record the store and audit log keep
//! both come from a [`JobRequest`], so they cannot tell different stories.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::gateway::INPUT_OVERHEAD_TOKENS;
use crate::policy::{self, CredentialKind, JobSource};
use crate::runner::{Docker, RunnerError};
use crate::store::{Budget, NewJob, WorkspaceRecord};
use crate::workspace::Snapshot;

use super::super::{Context, OpsError, process};

/// The worker's request body around its prompt: model, `max_tokens`, the
/// message framing.
const WORKER_BODY_BYTES: u64 = 256;

/// Who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// This machine's owner.
    Local,
    /// A peer on the market, by node id.
    Market(String),
}

/// An image as asked for and as resolved on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedImage {
    pub reference: String,
    /// `sha256:…`: what the container is created from. Empty only for a
    /// dry run made without Docker.
    pub id: String,
}

/// What runs in the container.
#[derive(Debug, Clone)]
pub enum Work {
    /// The built-in worker answers one prompt with one request.
    Prompt { text: String, max_tokens: u32 },
    /// A command in an image, on an optional workspace.
    Command(CommandWork),
}

/// A command job.
#[derive(Debug, Clone)]
pub struct CommandWork {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// What the command reads on stdin (an agent's prompt), if anything.
    pub stdin: Option<String>,
    /// The agent the command was set up for, e.g. `claude-code`; empty for
    /// any other command.
    pub agent: String,
    /// The checked copy of the owner's folder, in the job folder.
    pub workspace: Option<Snapshot>,
}

/// A job as asked for, before any decision.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub id: String,
    pub requester: Requester,
    pub model: String,
    pub image: ResolvedImage,
    /// What it asks to spend.
    pub budget: Budget,
    pub work: Work,
    /// It asks to use server-side tools that reach the internet.
    pub egress: bool,
    /// The owner asked to skip the approval prompt.
    pub pre_approved: bool,
}

impl JobRequest {
    /// The prompt the policies see the size and digest of: the one-prompt
    /// job's, or an agent's.
    fn prompt(&self) -> Option<&str> {
        match &self.work {
            Work::Prompt { text, .. } => Some(text),
            Work::Command(command) => command.stdin.as_deref(),
        }
    }

    fn prompt_facts(&self) -> (u64, String) {
        self.prompt().map_or((0, String::new()), |p| {
            (p.len() as u64, hex::encode(Sha256::digest(p.as_bytes())))
        })
    }

    fn command(&self) -> (&[String], &str, Option<&Snapshot>) {
        match &self.work {
            Work::Prompt { .. } => (&[], "", None),
            Work::Command(c) => (&c.argv, &c.agent, c.workspace.as_ref()),
        }
    }

    /// The job as the policy plugins see it.
    pub fn policy_job(&self) -> policy::Job {
        let (prompt_bytes, prompt_sha256) = self.prompt_facts();
        let (argv, agent, workspace) = self.command();
        policy::Job {
            id: self.id.clone(),
            requester: match &self.requester {
                Requester::Local => "local".into(),
                Requester::Market(node) => node.clone(),
            },
            model: self.model.clone(),
            budget: policy::Budget {
                tokens: self.budget.tokens,
                requests: self.budget.requests,
                timeout_secs: self.budget.timeout_secs,
            },
            prompt_bytes,
            prompt_sha256,
            image: policy::Image {
                reference: self.image.reference.clone(),
                digest: self.image.id.clone(),
            },
            command: argv.to_vec(),
            agent: agent.to_owned(),
            workspace: workspace.map(|w| policy::Workspace {
                bytes: w.bytes(),
                files: w.files(),
            }),
            egress: self.egress,
            source: match self.requester {
                Requester::Local => JobSource::Local,
                Requester::Market(_) => JobSource::Market,
            },
            credential: CredentialKind::ApiKey,
            pre_approved: self.pre_approved,
            labels: Vec::new(),
        }
    }

    /// The job as the store keeps it and the audit log records it, run by
    /// this process.
    pub fn record(&self) -> NewJob {
        let (prompt_bytes, prompt_sha256) = self.prompt_facts();
        let (argv, agent, workspace) = self.command();
        NewJob {
            id: self.id.clone(),
            model: self.model.clone(),
            budget: self.budget,
            prompt_bytes,
            prompt_sha256,
            image: self.image.reference.clone(),
            image_id: self.image.id.clone(),
            command: argv.to_vec(),
            agent: agent.to_owned(),
            workspace: workspace.map(|w| WorkspaceRecord {
                folder: w.source.display().to_string(),
                bytes: w.bytes(),
                files: w.files(),
            }),
            egress: self.egress,
            source: match self.requester {
                Requester::Local => "local",
                Requester::Market(_) => "market",
            }
            .into(),
            requester: self.policy_job().requester,
            host: Some(process::current()),
        }
    }
}

/// What a one-prompt job asks to spend when the owner names no budget: its
/// `max_tokens` plus the bound the gateway puts on its one request's input
/// from the request's size (so no token count is needed), one request, and
/// the node's wall-time cap. What it does not use is given back at its end.
pub fn prompt_budget(ctx: &Context, prompt: &str, max_tokens: u32) -> Budget {
    let body = serde_json::to_string(prompt).map_or(0, |p| p.len() as u64) + WORKER_BODY_BYTES;
    Budget {
        tokens: u64::from(max_tokens) + body + INPUT_OVERHEAD_TOKENS,
        requests: 1,
        timeout_secs: ctx.settings.limits.timeout_secs,
    }
}

/// Resolves `reference` to the image id it names on this node, so the
/// decision and the container see the same image even if the tag moves.
/// A missing image is an error that says how to get it: jobs never pull.
pub async fn resolve_image(docker: &Docker, reference: &str) -> Result<ResolvedImage, OpsError> {
    match docker.image(reference).await? {
        Some(info) => Ok(ResolvedImage {
            reference: reference.to_owned(),
            id: info.id,
        }),
        None => Err(RunnerError::ImageMissing {
            image: reference.to_owned(),
        }
        .into()),
    }
}

/// A new job id: 24 hex characters, unguessable.
pub fn new_job_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
