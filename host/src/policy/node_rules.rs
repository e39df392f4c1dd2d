//! The owner's own rules, which hold whatever plugins are active.
//!
//! The default approval and compliance plugins read `compliance.*` settings
//! and refuse what they forbid, but a plugin can be swapped for one that
//! does not: an allow-all approval would let any model run and honour
//! `--approve-all` that the owner switched off. So the host checks these
//! settings itself, around every decision: `--approve-all` is hidden from
//! the plugins unless `compliance.allowAutoApprove` lets it count, and after
//! the plugins have answered, a job that breaks a rule is denied by the role
//! the rule belongs to, with a reason that says it is the node's rule.

use std::borrow::Cow;

use super::bindings::{CredentialKind, Image, JobSource};
use super::job::Job;
use super::outcome::{Outcome, RoleDecision};
use super::role::Role;

/// Marks a reason as the node's, not the plugin's.
const PREFIX: &str = "node rule: ";

/// The `compliance.*` settings the host enforces itself.
#[derive(Clone, Debug, Default)]
pub struct NodeRules {
    /// Every model a job may name; empty means any (used where no node's
    /// settings apply, as in `policy test`).
    pub allowed_models: Vec<String>,
    pub max_prompt_bytes: Option<u64>,
    pub allow_auto_approve: bool,
    pub allow_egress: bool,
    /// Image ids (`sha256:…`), repositories or `repository:tag`s market
    /// jobs (and local ones, with `restrict_local_images`) may run in.
    pub allowed_images: Vec<String>,
    pub restrict_local_images: bool,
}

impl NodeRules {
    /// The job as the plugins see it: `--approve-all` only where it counts.
    pub(super) fn shown<'a>(&self, job: &'a Job) -> Cow<'a, Job> {
        if job.pre_approved && !self.allow_auto_approve {
            Cow::Owned(Job {
                pre_approved: false,
                ..job.clone()
            })
        } else {
            Cow::Borrowed(job)
        }
    }

    /// Overrides the plugins' answers where `job` breaks a rule, and says
    /// why an ask stands although `--approve-all` was given.
    pub(super) fn enforce(&self, job: &Job, roles: &mut [RoleDecision]) {
        for (role, reason) in self.broken(job) {
            if let Some(decision) = roles.iter_mut().find(|r| r.role == role) {
                decision.outcome = Outcome::Deny;
                decision.reason = Some(format!("{PREFIX}{reason}"));
            }
        }
        if job.pre_approved && !self.allow_auto_approve {
            let approval = roles.iter_mut().find(|r| r.role == Role::Approval);
            if let Some(decision) = approval.filter(|d| d.outcome == Outcome::Ask) {
                let asked = decision.reason.take().unwrap_or_default();
                decision.reason = Some(format!(
                    "{asked} (--approve-all does not count here: compliance.allowAutoApprove \
                     is false; run `claude-max-market config --set \
                     compliance.allowAutoApprove=true` to let it)"
                ));
            }
        }
    }

    /// Every rule `job` breaks, with the role it belongs to.
    fn broken(&self, job: &Job) -> Vec<(Role, String)> {
        let mut broken = Vec::new();
        if !self.allowed_models.is_empty() && !self.allowed_models.contains(&job.model) {
            let allowed = self.allowed_models.join(",");
            broken.push((
                Role::Approval,
                format!(
                    "model '{}' is not in compliance.allowedModels ({allowed}); to allow it, run \
                     `claude-max-market config --set compliance.allowedModels={allowed},{}`",
                    job.model, job.model
                ),
            ));
        }
        if let Some(max) = self.max_prompt_bytes.filter(|max| job.prompt_bytes > *max) {
            broken.push((
                Role::Approval,
                format!(
                    "the prompt is {} bytes, over compliance.maxPromptBytes ({max})",
                    job.prompt_bytes
                ),
            ));
        }
        let market = job.source == JobSource::Market;
        if market && job.credential == CredentialKind::Subscription {
            broken.push((
                Role::Compliance,
                "subscription credentials are for the owner's own use; market jobs must be \
                 paid with an API key"
                    .into(),
            ));
        }
        if job.egress && !self.allow_egress {
            broken.push((
                Role::Compliance,
                "the job asks for server-side tools that reach the internet and \
                 compliance.allowEgress is off"
                    .into(),
            ));
        }
        let checks_image = market || self.restrict_local_images;
        if checks_image && !image_listed(&self.allowed_images, &job.image) {
            broken.push((
                Role::Compliance,
                format!(
                    "image {} is not on compliance.allowedImages ({})",
                    job.image.reference,
                    self.allowed_images.join(",")
                ),
            ));
        }
        broken
    }
}

/// Whether `image` is on `list` (image ids, repositories or
/// `repository:tag`s): by id, by repository, or by repository and tag. An
/// empty list names no restriction.
pub fn image_listed(list: &[String], image: &Image) -> bool {
    let (repository, tag) = split_reference(&image.reference);
    list.is_empty()
        || list.iter().any(|entry| {
            if entry.starts_with("sha256:") {
                return !image.digest.is_empty() && *entry == image.digest;
            }
            match split_reference(entry) {
                (name, None) => name == repository,
                (name, Some(want)) => name == repository && tag == Some(want),
            }
        })
}

/// A reference's repository and tag; a pinned digest is not a tag.
fn split_reference(reference: &str) -> (&str, Option<&str>) {
    let name_tag = reference.split('@').next().unwrap_or(reference);
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(reference: &str, digest: &str) -> Image {
        Image {
            reference: reference.into(),
            digest: digest.into(),
        }
    }

    #[test]
    fn images_match_by_id_repository_or_tag() {
        let list: Vec<String> = vec![
            "sha256:abc".into(),
            "registry.local:5000/agents/python".into(),
            "tools:2".into(),
        ];
        let listed = |reference, digest| image_listed(&list, &image(reference, digest));
        assert!(listed("anything:1", "sha256:abc"));
        assert!(!listed("anything:1", ""));
        assert!(listed("registry.local:5000/agents/python:3", ""));
        assert!(listed("registry.local:5000/agents/python@sha256:9", ""));
        assert!(listed("tools:2", ""));
        assert!(!listed("tools:3", ""));
        assert!(!listed("registry.local:5000/agents/node:3", ""));
        assert!(
            image_listed(&[], &image("anything:1", "")),
            "empty is no restriction"
        );
    }
}
