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
//!   - [`config`] — the typed settings file and its keys.
//!   - [`home`] — the data folder and its sub-folders as cap-std handles.
//! - `outcome` — the allow/deny/ask word the engines share.

pub mod cli;
pub mod config;
pub mod home;
pub mod ops;
mod outcome;
pub mod policy;
pub mod store;
