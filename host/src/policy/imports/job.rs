//! The `job` resource's getters: each copies one field of the job the
//! host lent for the call into the guest, and nothing else.
//!
//! The guest only ever borrows a job, so a handle it passes back is one the
//! host lent for this call; a lookup that fails anyway traps the call
//! rather than answering with a made-up value.

use wasmtime::component::Resource;

use super::super::bindings::claude_max_market::policy::types::{
    Budget, CredentialKind, HostJob, Image, JobSource, Workspace,
};
use super::super::job::{Job, LentJob};
use super::super::sandbox::PluginState;

type Handle = Resource<LentJob>;

impl PluginState {
    fn lent(&self, handle: &Handle) -> wasmtime::Result<&Job> {
        Ok(&self.table().get(handle)?.0)
    }
}

impl HostJob for PluginState {
    fn id(&mut self, job: Handle) -> wasmtime::Result<String> {
        Ok(self.lent(&job)?.id.clone())
    }

    fn requester(&mut self, job: Handle) -> wasmtime::Result<String> {
        Ok(self.lent(&job)?.requester.clone())
    }

    fn model(&mut self, job: Handle) -> wasmtime::Result<String> {
        Ok(self.lent(&job)?.model.clone())
    }

    fn budget(&mut self, job: Handle) -> wasmtime::Result<Budget> {
        Ok(self.lent(&job)?.budget)
    }

    fn prompt_bytes(&mut self, job: Handle) -> wasmtime::Result<u64> {
        Ok(self.lent(&job)?.prompt_bytes)
    }

    fn prompt_sha256(&mut self, job: Handle) -> wasmtime::Result<String> {
        Ok(self.lent(&job)?.prompt_sha256.clone())
    }

    fn image(&mut self, job: Handle) -> wasmtime::Result<Image> {
        Ok(self.lent(&job)?.image.clone())
    }

    fn command(&mut self, job: Handle) -> wasmtime::Result<Vec<String>> {
        Ok(self.lent(&job)?.command.clone())
    }

    fn agent(&mut self, job: Handle) -> wasmtime::Result<String> {
        Ok(self.lent(&job)?.agent.clone())
    }

    fn workspace(&mut self, job: Handle) -> wasmtime::Result<Option<Workspace>> {
        Ok(self.lent(&job)?.workspace)
    }

    fn egress(&mut self, job: Handle) -> wasmtime::Result<bool> {
        Ok(self.lent(&job)?.egress)
    }

    fn source(&mut self, job: Handle) -> wasmtime::Result<JobSource> {
        Ok(self.lent(&job)?.source)
    }

    fn credential(&mut self, job: Handle) -> wasmtime::Result<CredentialKind> {
        Ok(self.lent(&job)?.credential)
    }

    fn pre_approved(&mut self, job: Handle) -> wasmtime::Result<bool> {
        Ok(self.lent(&job)?.pre_approved)
    }

    fn labels(&mut self, job: Handle) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.lent(&job)?.labels.clone())
    }

    fn drop(&mut self, job: Handle) -> wasmtime::Result<()> {
        self.table_mut().delete(job)?;
        Ok(())
    }
}
