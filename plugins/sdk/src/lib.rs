//! What a claude-max-market policy plugin written in Rust needs besides its
//! rules:
//!
//! - [`bindings!`]: the bindings for the plugin's role world, generated from
//!   the contract in the crate's `wit/` folder, so a plugin depends on this
//!   crate alone;
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
#[macro_export]
macro_rules! bindings {
    ($world:literal) => {
        $crate::wit_bindgen::generate!({
            world: $world,
            path: "wit",
            runtime_path: "::cmm_policy_sdk::wit_bindgen::rt",
        });
    };
}
