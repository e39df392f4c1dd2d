//! Policy bundles in OCI registries: `policy push FILE oci://…` stores a
//! bundle file as an OCI artifact, `policy install oci://…` fetches it, and
//! `policy update` follows a tag.
//!
//! - `reference` — `oci://HOST[:PORT]/REPOSITORY(:TAG|@sha256:…)`, parsed
//!   strictly, and which registries are reached over plain HTTP (loopback
//!   only).
//! - `artifact` — the artifact's manifest, media types and annotations
//!   (docs/plugins.md §8), and the checks a pulled manifest must pass
//!   before its layer is fetched.
//! - `registry` — push, resolve and pull through oci-client, anonymously.
//! - `error` — what went wrong, sorted into what a user can act on.
//!
//! This module moves bytes and proves only that they are the bytes the
//! manifest names. It knows nothing of a bundle's contents, signatures,
//! trust or the store: `ops` hands what it pulls to the same checks a
//! bundle file gets, and nothing is activated before they pass.

mod artifact;
mod error;
mod reference;
mod registry;

pub use artifact::{
    ARTIFACT_TYPE, BUNDLE_LAYER_TYPE, BundleLabel, EMPTY_CONFIG_TYPE, MANIFEST_TYPE,
};
pub use error::OciError;
pub use reference::{OciReference, SCHEME};
pub use registry::{Pulled, pull, push, resolve};
