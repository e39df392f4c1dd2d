//! What can go wrong reading, checking, changing or saving the settings.
//!
//! Every message names the file or key involved and says what to do about
//! it. This file only describes failures; it decides nothing and reads
//! nothing but the key registry (to list valid keys).

use std::io;
use std::path::{Path, PathBuf};

use super::suggest;

/// A failure of the configuration module.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("could not read config file {}; check that it is readable", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not TOML, or has a key or value of the wrong shape;
    /// the source names the line.
    #[error("config file {} is not valid; fix it, or remove it to go back to the defaults", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// The file parses, but a value breaks its key's rule.
    #[error("config file {} has invalid value '{value}' for {key}: expected {expected}; fix it, or remove it to go back to the defaults", path.display())]
    InvalidFile {
        path: PathBuf,
        key: String,
        value: String,
        expected: String,
    },
    /// No key has this name.
    #[error("unknown config key '{key}'{}", suggest::hint(.key, .suggestion))]
    UnknownKey {
        key: String,
        suggestion: Option<String>,
    },
    /// A value shaped like an Anthropic credential. Settings are copied into
    /// the audit log, which is append-only, so one must never hold a key;
    /// the value is not repeated here for the same reason.
    #[error(
        "the value for {key} looks like an Anthropic credential, and settings never hold \
         credentials (every change is on the audit log); put the key in a 0600 file and set \
         security.apiKeyFile, or in ANTHROPIC_API_KEY; market passwords and tokens go in the \
         variables market.passwordEnv and market.tokenEnv name"
    )]
    Credential { key: String },
    /// A value the key does not accept.
    #[error("invalid value '{value}' for {key}: expected {expected}")]
    InvalidValue {
        key: String,
        value: String,
        expected: String,
    },
    /// The settings could not be written as TOML.
    #[error("could not encode the settings for {}; this is a bug, please report it", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: toml::ser::Error,
    },
    /// The file could not be written or replaced.
    #[error("could not save config file {}; check that its folder exists and is writable", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ConfigError {
    /// Names `path` in an invalid-value error found while loading it.
    pub(super) fn in_file(self, path: &Path) -> ConfigError {
        match self {
            ConfigError::InvalidValue {
                key,
                value,
                expected,
            } => ConfigError::InvalidFile {
                path: path.to_path_buf(),
                key,
                value,
                expected,
            },
            other => other,
        }
    }
}

/// Text that is not a size such as `512m`.
#[derive(Debug, thiserror::Error)]
#[error(
    "'{text}' is not a size: write a whole number with an optional k, m or g suffix, e.g. 512m"
)]
pub struct InvalidSize {
    pub text: String,
}
