//! Why a bundle file is not a bundle this node accepts. Each variant says
//! what was wrong and on what; `check` names the step of the install order
//! it belongs to, which is what users and the audit log see.

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a policy bundle: {detail}")]
    Corrupt { detail: String },
    #[error("the bundle file is truncated ({detail}); download or copy it again")]
    Truncated { detail: String },
    #[error(
        "the bundle holds an unknown file '{name}'; a bundle holds manifest.json, signatures.json and exactly the components its manifest names"
    )]
    UnknownFile { name: String },
    #[error("the bundle holds '{name}' twice")]
    DuplicateFile { name: String },
    #[error("the manifest names '{name}' for the {role} role, but the bundle does not hold it")]
    MissingFile { role: String, name: String },
    #[error(
        "the manifest lists the {role} role twice; a bundle has at most one component per role"
    )]
    DuplicateRole { role: String },
    #[error("the manifest is invalid: {detail}")]
    Manifest { detail: String },
    #[error(
        "the bundle is unsigned, and this node trusts {trusted} signing key(s); sign it with `policy sign FILE --key KEY`"
    )]
    Unsigned { trusted: usize },
    #[error(
        "{valid} valid signature(s) from trusted keys, {required} required (policy.minSignatures){}",
        describe_others(.untrusted, .invalid)
    )]
    TooFewSignatures {
        valid: usize,
        required: usize,
        untrusted: Vec<String>,
        invalid: Vec<String>,
    },
    #[error(
        "{role} component '{file}' does not match the manifest: sha256 {actual}, the manifest says {expected}"
    )]
    Digest {
        role: String,
        file: String,
        expected: String,
        actual: String,
    },
    #[error("the manifest expired at {expires}; ask its publisher for a fresh revision")]
    Expired { expires: String },
    #[error(
        "revision {revision} of '{name}' is not newer than revision {highest}, the highest this node has accepted; bundles only move forward (to go back to an installed revision use `policy activate {name}@REVISION --allow-downgrade`)"
    )]
    NotNewer {
        name: String,
        revision: u64,
        highest: u64,
    },
    #[error(
        "the manifest targets {found}, but this host implements {expected}; rebuild the components against the host's WIT"
    )]
    WitVersion { found: String, expected: String },
}

impl BundleError {
    /// The install-order check this error belongs to.
    pub fn check(&self) -> &'static str {
        match self {
            BundleError::Read { .. } => "read",
            BundleError::Corrupt { .. }
            | BundleError::Truncated { .. }
            | BundleError::UnknownFile { .. }
            | BundleError::DuplicateFile { .. }
            | BundleError::MissingFile { .. }
            | BundleError::DuplicateRole { .. }
            | BundleError::Manifest { .. } => "structure",
            BundleError::Unsigned { .. } | BundleError::TooFewSignatures { .. } => "signatures",
            BundleError::Digest { .. } => "digests",
            BundleError::Expired { .. } => "expiry",
            BundleError::NotNewer { .. } => "revision",
            BundleError::WitVersion { .. } => "wit-version",
        }
    }
}

fn describe_others(untrusted: &[String], invalid: &[String]) -> String {
    let mut text = String::new();
    if !untrusted.is_empty() {
        text.push_str(&format!(
            "; signed by untrusted key(s) {} (add one with `policy trust add KEY.pub` if you trust it)",
            untrusted.join(", ")
        ));
    }
    if !invalid.is_empty() {
        text.push_str(&format!(
            "; invalid signature(s) claiming key(s) {}",
            invalid.join(", ")
        ));
    }
    text
}
