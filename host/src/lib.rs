//! claude-max-market: run Claude jobs in locked-down containers, with every
//! decision about them (approval, limits, pricing, compliance) made by
//! sandboxed WebAssembly policy plugins behind the typed WIT contract in
//! `wit/`.
//!
//! # Layout
//!
//! Data flows one way: `cli` → `ops` → the engines.
//!
//! - [`cli`] — one file per command: parse flags, call one operation, print
//!   text or `--json`. The only place that prints.
//! - [`ops`] — one file per user-visible operation; wires the engines. Never
//!   parses arguments or prints.
//! - Engines, which never reach into each other:
//!   - [`policy`] — the wasmtime plugin host: sandbox limits, compile cache,
//!     the default plugins, and the four-role decision pipeline.
//!   - [`store`] — SQLite: migrations, consent, usage and admission, decisions,
//!     the hash-chained audit log, active plugins.
//!   - [`runner`] — the Docker Engine through bollard: the job image (built
//!     from what this binary carries), the hardened container spec, running
//!     a job container to its end, and finding this tool's containers.
//!   - [`gateway`] — a job container's only way out: the per-job Messages
//!     API endpoint on a Unix socket that enforces the job's grant, adds
//!     the owner's key and meters the tokens.
//!   - [`bundle`] — signed policy bundles: the canonical manifest, the
//!     container, RSA-PSS signatures and the trust rules.
//!   - [`oci`] — policy bundles as OCI artifacts in a registry: the
//!     `oci://` reference, the artifact's media types, push and a checked
//!     pull through oci-client.
//!   - [`crypto`] — the node's RSA key pairs with rotation, and the
//!     streaming hybrid envelope (`encrypt`/`decrypt`; docs/encryption.md).
//!   - [`market`] — offers, tasks, claims, results, the RUV ledger and
//!     reputation over NATS JetStream, every message signed.
//!   - [`agent`] — agents run as jobs (Claude Code): their command line,
//!     their progress output, and the image that holds them.
//!   - [`workspace`] — a job's folder in and out: the checked copy that goes
//!     into the container, the folder that comes back, what changed, and
//!     applying the changes to the owner's folder on request.
//!   - [`config`] — the typed settings file and its keys.
//!   - [`metrics`] — what long-running commands count (decisions, jobs,
//!     gateway requests and tokens, market tasks) and the endpoint that
//!     serves it to Prometheus.
//!   - [`home`] — the data folder and its sub-folders as cap-std handles.
//! - `outcome` — the allow/deny/ask word the engines share.
//! - [`wit`] — the WIT package name and version this build speaks.

pub mod agent;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod gateway;
pub mod home;
pub mod market;
pub mod metrics;
pub mod oci;
pub mod ops;
mod outcome;
pub mod policy;
pub mod runner;
pub mod store;
pub mod wit;
pub mod workspace;
