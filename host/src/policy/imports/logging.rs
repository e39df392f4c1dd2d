//! `logging.log`: a plugin's messages go to the host's tracing output,
//! tagged with the plugin, truncated and budgeted so a plugin cannot flood it.

use super::super::bindings::claude_max_market::policy::logging::{Host, Level};
use super::super::sandbox::PluginState;

/// Longest message kept, in bytes; the rest is cut at a char boundary.
const MAX_MESSAGE: usize = 1024;

impl Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        if self.logs_left == 0 {
            return;
        }
        self.logs_left -= 1;
        let message = truncate(&message, MAX_MESSAGE);
        let plugin = &*self.label;
        match level {
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
