//! Operations: one file per user-visible operation. Each takes an options
//! struct, wires the engines (`policy`, `store`, `config`, `runner`,
//! `gateway`, `workspace`, `agent`, `bundle`, `oci`) and returns data.
//! Nothing here parses arguments or prints; `cli` does both. The few files
//! that are not operations serve them: `job/` is the one path every job
//! takes from request to end, `reconcile` cleans up after dead host
//! processes, `labels`, `process` and `facts` feed those and the pipeline,
//! and `bundle_fetch` gets a bundle's bytes for install and update.

pub mod agent_image;
pub mod audit;
pub mod bundle_fetch;
pub mod clean;
pub mod compliance;
pub mod config;
mod context;
pub mod crypt;
pub mod docker_image;
mod error;
pub mod execute;
mod facts;
pub mod health;
pub mod job;
pub mod job_list;
pub mod keys;
mod labels;
pub mod limits;
pub mod logs;
pub mod market;
pub mod opt_in;
pub mod opt_out;
pub mod policy;
pub mod policy_author;
pub mod policy_bundle;
pub mod policy_push;
pub mod policy_replay;
pub mod policy_test;
pub mod policy_trust;
mod process;
mod reconcile;
pub mod result;
pub mod scaffold;
pub mod status;
pub mod terms;
pub mod usage;
pub mod usage_stats;

pub use job::{JobEvent, JobReport};
pub use reconcile::Reconciled;

pub use context::Context;
pub use error::OpsError;

/// Now, as the RFC 3339 UTC text the store and reports use.
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC time always formats as RFC 3339")
}
