//! Talking to a registry through oci-client: pushing a bundle artifact,
//! resolving a tag to the manifest it names now, and pulling the bundle
//! layer with its size and sha256 checked against the manifest before the
//! bytes are handed on. Anonymous access only.

use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::header::HeaderValue;

use super::artifact::{self, BundleLabel, EMPTY_CONFIG, MANIFEST_TYPE, sha256_digest};
use super::error::During;
use super::{OciError, OciReference};

/// A bundle layer pulled and checked.
#[derive(Debug)]
pub struct Pulled {
    /// The bundle file's bytes, whose sha256 is the layer digest.
    pub bytes: Vec<u8>,
    /// The digest of the manifest they came from.
    pub manifest_digest: String,
}

/// Pushes `bundle` (a bundle file's bytes) to `reference`'s tag as a
/// bundle artifact labelled `label`; returns the manifest's digest.
#[tracing::instrument(skip_all, fields(reference = %reference))]
pub async fn push(
    reference: &OciReference,
    bundle: &[u8],
    label: &BundleLabel,
) -> Result<String, OciError> {
    let (client, target) = connect(reference).await;
    let during = during(reference, "manifest");
    let manifest = artifact::manifest_for(bundle, label);
    client
        .push_blob(&target, EMPTY_CONFIG, &manifest.config.digest)
        .await
        .map_err(|e| during.classify(e))?;
    client
        .push_blob(&target, bundle, &manifest.layers[0].digest)
        .await
        .map_err(|e| during.classify(e))?;
    let body = serde_json::to_vec(&manifest).expect("a manifest always serializes");
    let digest = sha256_digest(&body);
    client
        .push_manifest_raw(&target, body, HeaderValue::from_static(MANIFEST_TYPE))
        .await
        .map_err(|e| during.classify(e))?;
    tracing::info!(%digest, "pushed");
    Ok(digest)
}

/// The digest of the manifest `reference` names now (for a tag, what the
/// tag points at; for a digest, that digest once the registry confirms it).
#[tracing::instrument(skip_all, fields(reference = %reference))]
pub async fn resolve(reference: &OciReference) -> Result<String, OciError> {
    let (client, target) = connect(reference).await;
    let during = during(reference, "manifest");
    let digest = client
        .fetch_manifest_digest(&target, &RegistryAuth::Anonymous)
        .await
        .map_err(|e| during.classify(e))?;
    if !super::reference::is_sha256_digest(&digest) {
        return Err(OciError::NotABundle {
            reference: reference.to_string(),
            reason: format!("the registry names its manifest {digest}, not a sha256 digest"),
        });
    }
    Ok(digest)
}

/// Pulls the manifest `reference` names, checks it is a bundle artifact
/// whose layer is at most `max_bytes`, and pulls that layer, reporting
/// `progress(bytes so far, layer size)`. The bytes are returned only if
/// their length and sha256 are what the manifest says.
#[tracing::instrument(skip_all, fields(reference = %reference))]
pub async fn pull(
    reference: &OciReference,
    max_bytes: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Pulled, OciError> {
    let (client, target) = connect(reference).await;
    let (raw, manifest_digest) = client
        .pull_manifest_raw(&target, &RegistryAuth::Anonymous, &[MANIFEST_TYPE])
        .await
        .map_err(|e| during(reference, "manifest").classify(e))?;
    let not_a_bundle = |reason: String| OciError::NotABundle {
        reference: reference.to_string(),
        reason,
    };
    let manifest: OciImageManifest = serde_json::from_slice(&raw)
        .map_err(|e| not_a_bundle(format!("its manifest does not parse ({e})")))?;
    let layer = artifact::bundle_layer(&manifest, max_bytes).map_err(not_a_bundle)?;
    let size = layer.size as u64;
    let during = during(reference, "bundle layer");
    let mut stream = client
        .pull_blob_stream(&target, layer)
        .await
        .map_err(|e| during.classify(e))?;
    let mut bytes = Vec::with_capacity(size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| during.io(e))?;
        if (bytes.len() + chunk.len()) as u64 > size {
            return Err(OciError::LayerSize {
                reference: reference.to_string(),
                expected: size,
                actual: format!("more than {size}"),
            });
        }
        bytes.extend_from_slice(&chunk);
        progress(bytes.len() as u64, size);
    }
    if bytes.len() as u64 != size {
        return Err(OciError::LayerSize {
            reference: reference.to_string(),
            expected: size,
            actual: bytes.len().to_string(),
        });
    }
    // oci-client checks the digest as the stream ends; this keeps the
    // guarantee here whatever a later version of it does.
    let actual = sha256_digest(&bytes);
    if actual != layer.digest {
        return Err(OciError::Digest {
            what: "bundle layer",
            reference: reference.to_string(),
            expected: layer.digest.clone(),
            actual,
        });
    }
    tracing::info!(%manifest_digest, size, "pulled");
    Ok(Pulled {
        bytes,
        manifest_digest,
    })
}

/// A client for `reference`'s registry, its anonymous access stored, and
/// the reference in the client's terms.
async fn connect(reference: &OciReference) -> (Client, Reference) {
    let protocol = if reference.plain_http() {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        // A bundle is one manifest, never an index to choose from.
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        user_agent: concat!("claude-max-market/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    });
    let target = reference.to_client();
    client
        .store_auth_if_needed(target.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    (client, target)
}

fn during(reference: &OciReference, what: &'static str) -> During {
    During {
        reference: reference.to_string(),
        registry: reference.registry(),
        https: !reference.plain_http(),
        what,
    }
}
