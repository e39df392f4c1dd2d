//! Host implementations of the interfaces a plugin imports, one file each.
//! Each bounds what the guest can make the host allocate or do.

mod clock;
mod job;
mod logging;
mod settings;

use super::bindings::claude_max_market::policy::types;
use super::sandbox::PluginState;

impl types::Host for PluginState {}
