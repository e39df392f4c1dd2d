//! `policy push FILE oci://HOST[:PORT]/REPOSITORY:TAG`: a signed bundle file
//! into a registry as an OCI artifact (docs/plugins.md §8). It is checked
//! as `policy verify` checks it first, and must carry a signature, so a
//! registry only ever holds bundles that the nodes pulling them could
//! accept; those nodes check it all again regardless.

use std::path::Path;

use serde::Serialize;

use crate::oci::{self, BundleLabel, OciReference};

use super::bundle_fetch::read_bundle_file;
use super::policy_bundle::verify_bytes;
use super::{Context, OpsError};

/// What `push` stored.
#[derive(Debug, Serialize)]
pub struct Pushed {
    /// The tag pushed to.
    pub reference: String,
    /// The same, pinned to the pushed manifest: `policy install` of this
    /// gets exactly this bundle, wherever the tag moves.
    pub pinned: String,
    /// The manifest's digest.
    pub digest: String,
    pub name: String,
    pub revision: u64,
    /// sha256 of the bundle file (the layer's digest without `sha256:`).
    pub sha256: String,
    pub bytes: usize,
    /// Key ids its signatures name (verified here only for keys this
    /// node trusts; every node that installs it verifies its own).
    pub signers: Vec<String>,
}

/// Checks the bundle at `file` and pushes it to `reference`, which must
/// name a tag and no digest.
pub fn push(ctx: &Context, file: &Path, reference: &OciReference) -> Result<Pushed, OpsError> {
    if reference.tag().is_none() || reference.digest().is_some() {
        return Err(OpsError::InvalidInput {
            what: format!(
                "push to a tag (oci://HOST/REPOSITORY:TAG), not to {reference}: a digest is what \
                 the registry gives the pushed bundle"
            ),
        });
    }
    let refused = |reason: String| OpsError::PushRefused {
        file: file.to_path_buf(),
        reason,
    };
    let bytes = read_bundle_file(file)?;
    let evaluation = verify_bytes(ctx, &bytes, &file.display().to_string())?;
    if let Some(r) = &evaluation.refused {
        return Err(refused(format!(
            "it fails the {} check: {}",
            r.check, r.reason
        )));
    }
    if evaluation.signatures.is_empty() {
        return Err(refused(
            "it is unsigned, and nodes that trust signing keys refuse unsigned bundles; sign it \
             with `policy sign FILE --key KEY` first"
                .into(),
        ));
    }
    let manifest = evaluation
        .manifest
        .as_ref()
        .expect("an accepted bundle has a manifest");
    let label = BundleLabel {
        name: manifest.name.clone(),
        revision: manifest.revision,
        created: manifest.created.clone(),
    };
    let runtime = super::context::runtime()?;
    let digest = runtime.block_on(oci::push(reference, &bytes, &label))?;
    Ok(Pushed {
        reference: reference.to_string(),
        pinned: reference.pinned(&digest).to_string(),
        digest,
        name: label.name,
        revision: label.revision,
        sha256: evaluation.sha256.clone(),
        bytes: bytes.len(),
        signers: evaluation
            .signatures
            .iter()
            .map(|s| s.key_id.clone())
            .collect(),
    })
}
