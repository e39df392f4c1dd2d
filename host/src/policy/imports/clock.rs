//! `clock.now`: the only time a plugin sees, in whole seconds, so a plugin
//! has no fine-grained timer to measure the host with. During a decision it
//! is the decision's own time, recorded with it, so a replay sees the same.

use std::time::{SystemTime, UNIX_EPOCH};

use super::super::bindings::claude_max_market::policy::clock::Host;
use super::super::sandbox::PluginState;

impl Host for PluginState {
    fn now(&mut self) -> u64 {
        if let Some(at) = self.clock {
            return at;
        }
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}
