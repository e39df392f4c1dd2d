//! The one word every decision ends in. Shared by the policy engine, which
//! produces it, and the store, which records it, so neither depends on the
//! other.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A decision, from one role or from the whole pipeline. Only `Allow`
/// admits a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Deny,
    Ask,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Ask => "ask",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
