//! The job a decision is about: the host's record of it, and what a
//! plugin's store holds behind the `job` handle it is lent.
//!
//! A plugin gets a handle, not a copy: it asks for the fields its rules
//! read and only those cross into its memory, so the four roles of one
//! decision share one record and none of them pays for the command line
//! or the labels unless it looks at them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasmtime::Store;
use wasmtime::component::Resource;

use super::bindings::{Budget, CredentialKind, Image, JobSource, Workspace};
use super::sandbox::PluginState;

/// A job the host has been asked to run, as the `job` resource's getters
/// answer about it and as the audit log records it. A prompt itself is
/// never here: only its size and digest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// Unique id the host gave the job.
    pub id: String,
    /// The requesting node's id (hex sha256 of its public key), or "local".
    pub requester: String,
    /// The Claude model the job's requests must name.
    pub model: String,
    /// What the job asks to spend.
    pub budget: Budget,
    /// Size of the prompt in bytes; 0 when the command carries its own.
    pub prompt_bytes: u64,
    /// Hex sha256 of the prompt; empty when there is none.
    pub prompt_sha256: String,
    /// The container image the job runs in.
    pub image: Image,
    /// The command line run inside the container; empty for the built-in
    /// one-prompt worker.
    pub command: Vec<String>,
    /// The agent the host set the command up for, e.g. "claude-code".
    pub agent: String,
    /// The folder copied in as `/workspace`, if the job has one.
    pub workspace: Option<Workspace>,
    /// The job asks for server-side tools that reach the internet.
    pub egress: bool,
    /// Where the job came from.
    pub source: JobSource,
    /// Which credential would pay for it.
    pub credential: CredentialKind,
    /// The owner asked to skip the approval prompt (`--approve-all`).
    pub pre_approved: bool,
    /// Free-form labels attached by the requester.
    pub labels: Vec<(String, String)>,
}

/// The entry behind a `job` handle in a plugin's store: one decision's
/// job, shared by every role asked about it.
pub struct LentJob(pub(crate) Arc<Job>);

impl LentJob {
    /// Lends `job` to the plugin for one call: `call` gets the handle to
    /// pass, and the entry is taken back whatever the call did, so a reused
    /// instance holds nothing of an earlier decision.
    pub(crate) fn during<R>(
        store: &mut Store<PluginState>,
        job: &Arc<Job>,
        call: impl FnOnce(&mut Store<PluginState>, Resource<LentJob>) -> wasmtime::Result<R>,
    ) -> wasmtime::Result<R> {
        let lent = store.data_mut().table_mut().push(LentJob(job.clone()))?;
        let answer = call(store, Resource::new_borrow(lent.rep()));
        store.data_mut().table_mut().delete(lent)?;
        answer
    }
}
