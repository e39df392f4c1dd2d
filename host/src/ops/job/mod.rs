//! A job from what was asked to its end, the one path every job takes
//! (local `execute`, and a provider's market task):
//!
//! - `request` — what a job asks for, and the one place the records the
//!   policies judge and the store keeps are built from it;
//! - `folder` — the job's folder, mounted into its container;
//! - `admit` — the decision inside the admission transaction, and the
//!   [`AdmittedJob`] only it can make;
//! - `run` — running an admitted job to its end and settling it;
//! - `meter` — the gateway's reports into the store, off the request path;
//! - `log` — the job's log file;
//! - `results` — what a command job's workspace became, kept for `result`.

pub(crate) mod admit;
pub(crate) mod folder;
pub(crate) mod log;
mod meter;
pub(crate) mod request;
pub(crate) mod results;
pub(crate) mod run;

pub use admit::{AdmittedJob, AskDetails, Confirm};
pub use request::{CommandWork, JobRequest, Requester, ResolvedImage, Work};
pub use results::WorkspaceSummary;
pub use run::{JobEvent, JobReport};
