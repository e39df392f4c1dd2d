//! Policy bundles: one signed file that carries an operator's policy for one
//! or more roles to many nodes.
//!
//! - `manifest` — what a bundle claims: name, revision, validity, and per
//!   role the component, its digest, limits and configuration; its canonical
//!   bytes are what gets signed.
//! - `archive` — the container: a strict ustar file (`manifest.json`, the
//!   components, `signatures.json`), read so that nothing unexpected in it
//!   is ever skipped over.
//! - `signatures` — RSA-PSS signatures over the manifest and the trust
//!   rules that decide whether enough of them come from trusted keys.
//! - `source` — the author's `bundle.toml`, turned into a bundle by `build`.
//! - `verify` — every check in the contract's order; only it makes a
//!   `Verified` bundle, the only kind activation takes.
//!
//! The format is specified in `docs/plugins.md`. Nothing here touches SQLite,
//! wasmtime or the network: `ops` checks a bundle here, supplying the
//! compile step (in `policy`) and the node's highest revision (in `store`)
//! as a `Loader` and a lookup, and records it in `store`.

mod archive;
mod error;
mod manifest;
mod signatures;
mod source;
mod verify;

pub use archive::{Bundle, MAX_BUNDLE_BYTES};
pub use error::BundleError;
pub use manifest::{Manifest, RoleEntry, RoleLimits, WIT_PACKAGE, valid_name};
pub use signatures::{SignatureCheck, SignatureEntry, SignatureStatus, TrustPolicy, TrustedKey};
pub use source::{SOURCE_FILE, SourceManifest, build};
pub use verify::{Checked, Loader, Refusal, Revision, Rules, Step, Verified, verify};
