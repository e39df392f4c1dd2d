//! What a claude-max-market policy plugin written in Rust needs besides its
//! rules:
//!
//! - [`bindings!`]: the bindings for the plugin's role world, generated from
//!   the contract in the crate's `wit/` folder, so a plugin depends on this
//!   crate alone, and `JobFacts`, which lets the same rules read the host's
//!   job handle in a decision and a plain record in a test;
//! - [`Settings`] and [`Reader`]: one way to read the node's settings and
//!   the plugin's own values, shared by `validate-config` (which gets them
//!   as a list) and the decisions (which ask the host one key at a time), so
//!   the two cannot disagree about what is valid;
//! - [`testing`]: a job, usage and market to start a test from, and settings
//!   given as pairs, so a policy's own `cargo test` runs its decisions
//!   natively, without the host.
//!
//! ```ignore
//! cmm_policy_sdk::bindings!("approval-policy");
//!
//! use cmm_policy_sdk::{Reader, Settings};
//!
//! struct Rules { max_prompt_bytes: u64 }
//!
//! impl Settings for Rules {
//!     fn read(r: &mut Reader<'_>) -> Rules {
//!         Rules { max_prompt_bytes: r.count("compliance.maxPromptBytes", 200_000) }
//!     }
//! }
//! ```

mod settings;
pub mod testing;

pub use settings::{Cached, Reader, Settings};

#[doc(hidden)]
pub use wit_bindgen;

/// Generates the bindings for one role world (`"approval-policy"`,
/// `"limits-policy"`, `"pricing-policy"` or `"compliance-policy"`) from the
/// WIT package in the plugin crate's `wit/` folder, with the runtime this
/// crate carries. The plugin then implements the generated `Guest` traits
/// and calls the generated `export!`.
///
/// It also defines, at the plugin's crate root, the trait `JobFacts`: what
/// a policy reads of a job, one method per field. The host's `job` handle
/// implements it in a decision (each call fetches that one field), and in
/// the plugin's own tests so does `JobRecord`, a plain record that
/// [`job!`] builds. Rules written against `&impl JobFacts` run unchanged in
/// both.
#[macro_export]
macro_rules! bindings {
    ($world:literal) => {
        $crate::wit_bindgen::generate!({
            world: $world,
            path: "wit",
            runtime_path: "::cmm_policy_sdk::wit_bindgen::rt",
        });
        $crate::job_facts!();
    };
}

/// The `JobFacts` trait and, in tests, `JobRecord`; see [`bindings!`].
#[doc(hidden)]
#[macro_export]
macro_rules! job_facts {
    () => {
        $crate::job_facts! {
            id: String,
            requester: String,
            model: String,
            budget: claude_max_market::policy::types::Budget,
            prompt_bytes: u64,
            prompt_sha256: String,
            image: claude_max_market::policy::types::Image,
            command: Vec<String>,
            agent: String,
            workspace: Option<claude_max_market::policy::types::Workspace>,
            egress: bool,
            source: claude_max_market::policy::types::JobSource,
            credential: claude_max_market::policy::types::CredentialKind,
            pre_approved: bool,
            labels: Vec<(String, String)>,
        }
    };
    ($($field:ident: $type:ty,)*) => {
        /// What a policy reads of a job, one field per call: the host's
        /// `job` handle in a decision, a `JobRecord` in the plugin's tests.
        pub trait JobFacts {
            $(fn $field(&self) -> $type;)*
        }

        impl JobFacts for claude_max_market::policy::types::Job {
            $(fn $field(&self) -> $type {
                claude_max_market::policy::types::Job::$field(self)
            })*
        }

        /// A job as plain data, for the plugin's own tests.
        #[cfg(test)]
        #[derive(Clone, Debug)]
        pub struct JobRecord {
            $(pub $field: $type,)*
        }

        #[cfg(test)]
        impl JobFacts for JobRecord {
            $(fn $field(&self) -> $type {
                self.$field.clone()
            })*
        }
    };
}
