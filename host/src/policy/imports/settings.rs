//! `settings.get`: read-only lookup in the configuration the plugin was
//! validated with. Keys longer than any real key are refused without a
//! lookup, since the guest controls their size.

use super::super::bindings::claude_max_market::policy::settings::Host;
use super::super::sandbox::PluginState;

const MAX_KEY: usize = 256;

impl Host for PluginState {
    fn get(&mut self, key: String) -> Option<String> {
        if key.len() > MAX_KEY {
            return None;
        }
        self.settings.get(&key).map(str::to_owned)
    }
}
