//! The user's settings: `config.toml` in the data folder, typed.
//!
//! `Settings` is the whole file as nested section structs with defaults;
//! `keys()` is the registry that names, describes and checks every key, and
//! through which the command line gets and sets values and policy plugins
//! receive them flattened to `section.key` pairs.
//!
//! Layout:
//! - `sections` — the section structs and their defaults.
//! - `keys` — the key registry.
//! - `access` — reading and writing one field through its key.
//! - `rules` — what each kind of value may hold.
//! - `values` — `ByteSize` and the bool and list spellings.
//! - `suggest` — the closest key to a mistyped one.
//! - `file` — `load` and the atomic `save`.
//! - `error` — `ConfigError`.
//!
//! This module neither prints nor records: auditing a change and showing
//! `config --list` are the caller's job. It knows nothing of the engines
//! that read these values.

mod access;
mod error;
mod file;
mod keys;
mod rules;
mod sections;
mod suggest;
mod values;

use serde::{Deserialize, Serialize};

use keys::find;

pub use error::{ConfigError, InvalidSize};
pub use keys::{KeyInfo, keys};
pub use sections::{
    ApiSettings, ComplianceSettings, DEFAULT_BETAS, DockerSettings, GatewaySettings, Isolation,
    LimitsSettings, MarketSettings, PolicySettings, SecuritySettings, WorkspaceSettings,
};
pub use values::ByteSize;

/// All settings, typed. What each key means and allows: see `keys()`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub api: ApiSettings,
    pub docker: DockerSettings,
    pub security: SecuritySettings,
    pub limits: LimitsSettings,
    pub workspace: WorkspaceSettings,
    pub gateway: GatewaySettings,
    pub market: MarketSettings,
    pub compliance: ComplianceSettings,
    pub policy: PolicySettings,
}

impl Settings {
    /// The value of `key` as the user would type it back: lists
    /// comma-separated, sizes like `512m`.
    pub fn get(&self, key: &str) -> Result<String, ConfigError> {
        Ok(find(key)?.access.read(self))
    }

    /// Sets `key` from its typed form. A value the key does not accept is
    /// refused and the settings stay as they were.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let info = find(key)?;
        if crate::gateway::credentials_in(value.as_bytes()) > 0 {
            return Err(ConfigError::Credential {
                key: info.name.to_string(),
            });
        }
        if info.access.write(self, value) {
            return Ok(());
        }
        Err(ConfigError::InvalidValue {
            key: info.name.to_string(),
            value: value.to_string(),
            expected: info.access.expected(),
        })
    }

    /// Every key and its value, sorted by key, in the forms `get` gives.
    pub fn flatten(&self) -> Vec<(String, String)> {
        keys()
            .iter()
            .map(|key| (key.name.to_string(), key.access.read(self)))
            .collect()
    }

    /// Checks every value against its key's rule, e.g. after building
    /// `Settings` in code. The first offending key is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match keys().iter().find(|key| !key.access.holds_valid(self)) {
            None => Ok(()),
            Some(key) => Err(ConfigError::InvalidValue {
                key: key.name.to_string(),
                value: key.access.read(self),
                expected: key.access.expected(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings in which every key differs from its default.
    fn changed() -> Settings {
        let mut settings = Settings::default();
        for (key, value) in [
            ("api.defaultModel", "claude-opus-4-1"),
            ("api.baseUrl", "http://127.0.0.1:8080/"),
            ("api.maxRetries", "0"),
            ("docker.image", "job:2"),
            ("docker.memory", "2g"),
            ("docker.cpuMillis", "2000"),
            ("docker.cpuShares", "1024"),
            ("docker.pidsLimit", "128"),
            ("docker.tmpfsSize", "1536k"),
            ("security.keyRotationDays", "30"),
            ("security.keyPassphraseEnv", "NODE_KEY_PASS"),
            ("security.apiKeyFile", "/home/me/.anthropic key"),
            ("limits.dailyTasks", "0"),
            ("limits.dailyTokens", "9223372036854775807"),
            ("limits.maxTokensPerTask", "1000000"),
            ("limits.timeoutSecs", "86400"),
            ("limits.requestsPerJob", "1"),
            ("limits.concurrentJobs", "1"),
            ("workspace.maxBytes", "1g"),
            ("workspace.maxFiles", "10"),
            ("gateway.allowedBetas", ""),
            ("market.url", "nats://a:4222,tls://b:4443"),
            ("market.basePrice", "0"),
            ("market.pricePerKiloToken", "7"),
            ("market.maxBidPrice", "5"),
            ("market.user", "cmm"),
            ("market.passwordEnv", "NATS_PASS"),
            ("market.tokenEnv", ""),
            ("market.nkeySeedFile", "/etc/cmm/nkey.seed"),
            ("market.tlsCaFile", "/etc/cmm/ca.pem"),
            ("market.tlsCertFile", "/etc/cmm/client.pem"),
            ("market.tlsKeyFile", "/etc/cmm/client.key"),
            ("market.replicas", "3"),
            ("market.slots", "4"),
            ("market.offerTtlSecs", "10"),
            ("market.offerWaitSecs", "4"),
            ("market.claimWaitSecs", "5"),
            ("market.taskTimeoutSecs", "60"),
            ("market.replayWindowSecs", "60"),
            ("market.issuerKeys", &"ab".repeat(32)),
            ("market.abortOnStop", "true"),
            ("market.pullRegistries", "127.0.0.1:5000"),
            ("compliance.requireApproval", "off"),
            ("compliance.allowAutoApprove", "yes"),
            ("compliance.allowedModels", "claude-haiku-4-5"),
            ("compliance.maxPromptBytes", "1"),
            ("compliance.allowedImages", "sha256:abc,python-agent:3"),
            ("compliance.restrictLocalImages", "on"),
            ("compliance.allowEgress", "yes"),
            ("policy.fuel", "10000000000"),
            ("policy.timeoutMs", "10000"),
            ("policy.memoryMiB", "1024"),
            ("policy.maxAnswerBytes", "256"),
            ("policy.isolation", "REUSE"),
            ("policy.minSignatures", "2"),
        ] {
            settings.set(key, value).unwrap();
        }
        settings
    }

    #[test]
    fn every_key_can_be_changed() {
        let (defaults, changed) = (Settings::default(), changed());
        for key in keys() {
            assert_ne!(
                defaults.get(key.name).unwrap(),
                changed.get(key.name).unwrap(),
                "{}",
                key.name
            );
        }
    }

    #[test]
    fn setting_what_get_returns_changes_nothing() {
        for original in [Settings::default(), changed()] {
            let mut copy = original.clone();
            for key in keys() {
                copy.set(key.name, &original.get(key.name).unwrap())
                    .unwrap();
            }
            assert_eq!(copy, original);
        }
    }

    #[test]
    fn get_gives_typed_back_forms() {
        let settings = changed();
        assert_eq!(settings.get("docker.memory").unwrap(), "2g");
        assert_eq!(
            settings.get("market.url").unwrap(),
            "nats://a:4222,tls://b:4443"
        );
        assert_eq!(settings.get("compliance.requireApproval").unwrap(), "false");
        assert_eq!(settings.get("policy.isolation").unwrap(), "reuse");
        assert_eq!(settings.policy.isolation, Isolation::Reuse);
    }

    #[test]
    fn lists_take_spaces_and_empty_text() {
        let mut settings = Settings::default();
        settings
            .set("market.url", " nats://a:1 , nats://b:2")
            .unwrap();
        assert_eq!(settings.market.url, ["nats://a:1", "nats://b:2"]);
        settings.set("market.url", "").unwrap();
        assert!(settings.market.url.is_empty());
    }

    #[test]
    fn bad_values_are_refused_and_change_nothing() {
        let cases = [
            ("api.defaultModel", "claude sonnet"),
            ("api.defaultModel", ""),
            ("api.baseUrl", "api.anthropic.com"),
            ("api.baseUrl", "https://api.anthropic.com/v1"),
            ("api.baseUrl", "ftp://example.com"),
            ("api.maxRetries", "11"),
            ("limits.requestsPerJob", "0"),
            ("docker.image", ""),
            ("docker.memory", "5m"),
            ("docker.memory", "lots"),
            ("docker.cpuShares", "1"),
            ("docker.pidsLimit", "32769"),
            ("docker.tmpfsSize", "1023k"),
            ("security.keyRotationDays", "0"),
            ("security.keyPassphraseEnv", "lower_case"),
            ("security.apiKeyFile", "a\nb"),
            ("limits.dailyTasks", "-1"),
            ("limits.dailyTokens", "9223372036854775808"),
            ("limits.maxTokensPerTask", "0"),
            ("limits.timeoutSecs", "86401"),
            ("limits.concurrentJobs", "1025"),
            ("market.url", "http://example.com"),
            ("market.basePrice", "1.5"),
            ("compliance.requireApproval", "maybe"),
            ("compliance.allowedModels", ""),
            ("compliance.allowedModels", "a,,b"),
            ("compliance.maxPromptBytes", "0"),
            ("policy.fuel", "9999"),
            ("policy.timeoutMs", "10001"),
            ("policy.memoryMiB", "4294967296"),
            ("policy.maxAnswerBytes", "255"),
            ("policy.isolation", "shared"),
        ];
        let mut settings = changed();
        for (key, value) in cases {
            let err = settings.set(key, value).unwrap_err();
            assert!(
                matches!(&err, ConfigError::InvalidValue { key: k, value: v, .. } if k == key && v == value),
                "{key}={value:?}: {err}"
            );
            assert_eq!(settings, changed(), "{key}={value:?} changed the settings");
        }
    }

    #[test]
    fn bad_value_message_says_what_is_expected() {
        let err = Settings::default()
            .set("limits.dailyTasks", "abc")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value 'abc' for limits.dailyTasks: expected a whole number from 0 to 1000000"
        );
    }

    #[test]
    fn unknown_key_suggests_the_closest() {
        let mut settings = Settings::default();
        let err = settings.set("limits.daily", "5").unwrap_err();
        assert!(matches!(
            &err,
            ConfigError::UnknownKey { key, suggestion: Some(s) } if key == "limits.daily" && s == "limits.dailyTasks"
        ));
        assert!(err.to_string().starts_with(
            "unknown config key 'limits.daily'; did you mean 'limits.dailyTasks'? \
             valid keys in [limits]: concurrentJobs, dailyTasks,"
        ));
        assert!(matches!(
            settings.get("nothing.here"),
            Err(ConfigError::UnknownKey {
                suggestion: None,
                ..
            })
        ));
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn flatten_lists_every_key_sorted() {
        let flat = changed().flatten();
        let names: Vec<&str> = flat.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, keys().iter().map(|key| key.name).collect::<Vec<_>>());
        assert!(names.is_sorted());
        assert_eq!(names.len(), 55);
        assert!(flat.contains(&("docker.tmpfsSize".to_string(), "1536k".to_string())));
    }

    #[test]
    fn validate_reports_values_built_in_code() {
        let mut settings = Settings::default();
        settings.docker.memory = ByteSize(1024);
        let err = settings.validate().unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidValue { key, value, .. } if key == "docker.memory" && value == "1k")
        );
    }
}
