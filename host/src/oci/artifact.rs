//! The shape of a policy bundle stored as an OCI artifact (docs/plugins.md
//! §8): one image manifest whose `artifactType` names a bundle, the empty
//! config, and one layer holding the bundle file byte for byte, signatures
//! included (they sign the bundle's own manifest, so they travel inside
//! it). Building that manifest for a push, and refusing any pulled
//! manifest that is not exactly that shape before a byte of its layer is
//! fetched.
//!
//! The annotations are for people browsing a registry. Install never reads
//! them: what it trusts is the signed manifest inside the layer.

use std::collections::BTreeMap;

use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use sha2::{Digest, Sha256};

use super::reference::is_sha256_digest;

/// The artifact's type, in the manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.claude-max-market.policy.bundle.v1";
/// The one layer: a bundle file (a ustar archive) as `policy build` and
/// `policy sign` left it.
pub const BUNDLE_LAYER_TYPE: &str = "application/vnd.claude-max-market.policy.bundle.v1.tar";
/// The manifest's own media type.
pub const MANIFEST_TYPE: &str = OCI_IMAGE_MEDIA_TYPE;
/// The OCI empty descriptor's type: an artifact with no config of its own.
pub const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty config's content, as the image spec fixes it.
pub(super) const EMPTY_CONFIG: &[u8] = b"{}";

/// Annotation keys of our own, next to the `org.opencontainers.image.*` ones.
const ANNOTATION_NAME: &str = "vnd.claude-max-market.bundle.name";
const ANNOTATION_REVISION: &str = "vnd.claude-max-market.bundle.revision";
const TITLE: &str = "org.opencontainers.image.title";
const VERSION: &str = "org.opencontainers.image.version";
const CREATED: &str = "org.opencontainers.image.created";

/// What a pushed artifact says about its bundle.
#[derive(Clone, Debug)]
pub struct BundleLabel {
    pub name: String,
    pub revision: u64,
    /// The bundle manifest's `created` (RFC 3339).
    pub created: String,
}

/// `sha256:` and the hex digest of `data`.
pub(super) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The manifest for `bundle` (the file's bytes), labelled with `label`.
pub(super) fn manifest_for(bundle: &[u8], label: &BundleLabel) -> OciImageManifest {
    let revision = label.revision.to_string();
    let layer = OciDescriptor {
        media_type: BUNDLE_LAYER_TYPE.into(),
        digest: sha256_digest(bundle),
        size: bundle.len() as i64,
        urls: None,
        annotations: Some(BTreeMap::from([(
            TITLE.to_string(),
            format!("{}-{revision}.cmmpol", label.name),
        )])),
    };
    OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_TYPE.into()),
        config: OciDescriptor {
            media_type: EMPTY_CONFIG_TYPE.into(),
            digest: sha256_digest(EMPTY_CONFIG),
            size: EMPTY_CONFIG.len() as i64,
            urls: None,
            annotations: None,
        },
        layers: vec![layer],
        subject: None,
        artifact_type: Some(ARTIFACT_TYPE.into()),
        annotations: Some(BTreeMap::from([
            (TITLE.to_string(), label.name.clone()),
            (VERSION.to_string(), revision.clone()),
            (CREATED.to_string(), label.created.clone()),
            (ANNOTATION_NAME.to_string(), label.name.clone()),
            (ANNOTATION_REVISION.to_string(), revision),
        ])),
    }
}

/// The bundle layer of a pulled manifest, after checking the manifest is a
/// bundle artifact and the layer is one this node will fetch: a sha256
/// digest, a size within `max_bytes`, and no foreign URLs (which the client
/// would otherwise try when the registry fails, sending a node to any host
/// a manifest names). Errors are the reason, for the caller to wrap.
pub(super) fn bundle_layer(
    manifest: &OciImageManifest,
    max_bytes: u64,
) -> Result<&OciDescriptor, String> {
    if manifest.schema_version != 2 {
        return Err(format!(
            "its schemaVersion is {}, not 2",
            manifest.schema_version
        ));
    }
    if manifest
        .media_type
        .as_deref()
        .is_some_and(|t| t != MANIFEST_TYPE)
    {
        return Err(format!(
            "its mediaType is {}, not {MANIFEST_TYPE}",
            manifest.media_type.as_deref().unwrap_or_default()
        ));
    }
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(format!(
            "its artifactType is {}, not {ARTIFACT_TYPE}; it is not a policy bundle",
            manifest.artifact_type.as_deref().unwrap_or("absent")
        ));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(format!(
            "it has {} layers; a bundle artifact has exactly one",
            manifest.layers.len()
        ));
    };
    if layer.media_type != BUNDLE_LAYER_TYPE {
        return Err(format!(
            "its layer is {}, not {BUNDLE_LAYER_TYPE}",
            layer.media_type
        ));
    }
    if !is_sha256_digest(&layer.digest) {
        return Err(format!(
            "its layer digest '{}' is not sha256:<64 hex digits>",
            layer.digest
        ));
    }
    if layer.size <= 0 || layer.size as u64 > max_bytes {
        return Err(format!(
            "its layer claims {} bytes; a bundle is 1 byte to {} MiB",
            layer.size,
            max_bytes >> 20
        ));
    }
    if layer.urls.as_ref().is_some_and(|u| !u.is_empty()) {
        return Err("its layer names download URLs elsewhere; a bundle layer lives in the registry it is pulled from".into());
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1 << 20;

    fn label() -> BundleLabel {
        BundleLabel {
            name: "acme".into(),
            revision: 3,
            created: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_built_manifest_is_a_bundle_artifact() {
        let manifest = manifest_for(b"bundle bytes", &label());
        let layer = bundle_layer(&manifest, MAX).unwrap();
        assert_eq!(layer.digest, sha256_digest(b"bundle bytes"));
        assert_eq!(layer.size, 12);
        let json = serde_json::to_value(&manifest).unwrap();
        assert_eq!(json["artifactType"], ARTIFACT_TYPE);
        assert_eq!(json["config"]["mediaType"], EMPTY_CONFIG_TYPE);
        assert_eq!(
            json["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(json["annotations"][ANNOTATION_REVISION], "3");
        assert_eq!(
            json["annotations"]["org.opencontainers.image.title"],
            "acme"
        );
    }

    #[test]
    fn anything_else_is_refused_before_its_layer_is_fetched() {
        let base = manifest_for(b"bundle bytes", &label());
        let refused = |change: &dyn Fn(&mut OciImageManifest), needle: &str| {
            let mut m = base.clone();
            change(&mut m);
            let reason = bundle_layer(&m, MAX).unwrap_err();
            assert!(reason.contains(needle), "{needle:?} not in {reason:?}");
        };
        refused(&|m| m.artifact_type = None, "artifactType is absent");
        refused(
            &|m| m.media_type = Some("application/vnd.oci.image.index.v1+json".into()),
            "mediaType",
        );
        refused(&|m| m.layers.push(m.layers[0].clone()), "2 layers");
        refused(&|m| m.layers.clear(), "0 layers");
        refused(
            &|m| m.layers[0].media_type = "application/vnd.oci.image.layer.v1.tar".into(),
            "its layer is",
        );
        refused(&|m| m.layers[0].digest = "sha512:ab".into(), "sha256");
        refused(&|m| m.layers[0].size = MAX as i64 + 1, "1 MiB");
        refused(&|m| m.layers[0].size = 0, "0 bytes");
        refused(
            &|m| m.layers[0].urls = Some(vec!["https://elsewhere.example/b".into()]),
            "URLs",
        );
    }
}
