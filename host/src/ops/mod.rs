//! Operations: one file per user-visible operation. Each takes an options
//! struct, wires the engines (`policy`, `store`, `config`) and returns data.
//! Nothing here parses arguments or prints; `cli` does both.

pub mod audit;
pub mod config;
mod context;
mod error;
pub mod execute;
mod facts;
pub mod limits;
pub mod opt_in;
pub mod opt_out;
pub mod policy;
mod process;
pub mod status;
pub mod terms;

pub use context::Context;
pub use error::OpsError;
