//! What every operation starts from: the data folder, its settings and its
//! database, opened once per invocation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Isolation as ConfigIsolation, Settings};
use crate::gateway::{self, ApiKey, CredentialError, KeySource};
use crate::home::Home;
use crate::policy::{CompileCache, Isolation, PolicyEngine, SandboxLimits};
use crate::store::Store;

use super::OpsError;

pub struct Context {
    pub home: Home,
    pub settings: Settings,
    pub store: Store,
}

impl Context {
    /// Opens the data folder (`--home`/`CMM_HOME` when given), loading its
    /// settings and migrating its database.
    pub fn open(home: Option<PathBuf>) -> Result<Context, OpsError> {
        let root = Home::locate(home)?;
        let home = Home::open(&root)?;
        let settings = Settings::load(&home.config_path())?;
        let store = Store::open(&home.database_path())?;
        Ok(Context {
            home,
            settings,
            store,
        })
    }

    /// The sandbox limits configured under `policy.*`.
    pub fn sandbox_limits(&self) -> SandboxLimits {
        let p = &self.settings.policy;
        SandboxLimits {
            fuel: p.fuel,
            timeout: Duration::from_millis(u64::from(p.timeout_ms)),
            memory_bytes: (p.memory_mib as usize) << 20,
            max_answer_bytes: p.max_answer_bytes as usize,
        }
    }

    /// The most of a workspace a job takes in or brings back, under
    /// `workspace.*`.
    pub fn workspace_limits(&self) -> crate::workspace::Limits {
        crate::workspace::Limits {
            max_bytes: self.settings.workspace.max_bytes.0,
            max_files: self.settings.workspace.max_files,
        }
    }

    /// A policy engine with the configured limits and isolation.
    pub fn engine(&self) -> Result<Arc<PolicyEngine>, OpsError> {
        self.engine_with(match self.settings.policy.isolation {
            ConfigIsolation::Fresh => Isolation::Fresh,
            ConfigIsolation::Reuse => Isolation::Reuse,
        })
    }

    /// A policy engine with the configured limits and the given isolation
    /// (`policy bench` times both).
    pub fn engine_with(&self, isolation: Isolation) -> Result<Arc<PolicyEngine>, OpsError> {
        PolicyEngine::new(self.sandbox_limits(), isolation).map_err(|e| OpsError::Engine {
            detail: format!("{e:#}"),
        })
    }

    /// The owner's API key for the gateway: `ANTHROPIC_API_KEY`, else the
    /// 0600 file named by `security.apiKeyFile`.
    pub fn api_key(&self) -> Result<(ApiKey, KeySource), CredentialError> {
        let file = &self.settings.security.api_key_file;
        let file = (!file.is_empty()).then(|| Path::new(file.as_str()));
        gateway::load_api_key(std::env::var(gateway::API_KEY_ENV).ok(), file)
    }

    /// The compile cache in the data folder. A cache that cannot be opened
    /// only costs compile time, so callers treat `None` as "compile".
    pub fn compile_cache(&self) -> Option<CompileCache> {
        let dir = self.home.subdir("cache").ok()?;
        CompileCache::open(dir)
            .inspect_err(|e| tracing::warn!(error = %e, "compile cache unavailable"))
            .ok()
    }
}

/// The async runtime for the Docker and gateway work of one invocation. Two
/// workers: the gateway's streaming and the container's output must both
/// make progress while SQLite writes block one of them.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, OpsError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| OpsError::Runtime { source })
}
