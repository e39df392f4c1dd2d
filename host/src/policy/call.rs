//! Running one guest call under the sandbox, on a fresh instance or a warm
//! one, and turning whatever goes wrong into a `Failure`.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::Instance;

use super::engine::PolicyEngine;
use super::failure::Failure;
use super::plugin::PluginPre;
use super::sandbox::{self, PluginSettings, PluginState};

/// A live instance kept between calls when isolation is `reuse`.
pub struct Live {
    store: Store<PluginState>,
    instance: Instance,
}

impl PluginPre {
    fn instantiate(
        &self,
        engine: &PolicyEngine,
        settings: &Arc<PluginSettings>,
    ) -> Result<Live, Failure> {
        let mut store =
            sandbox::new_store(engine, settings.clone(), self.label.clone()).map_err(|e| {
                Failure::new(
                    super::FailureClass::Trap,
                    format!(
                        "{} plugin '{}' could not get a sandbox: {e:#}",
                        self.role, self.meta.name
                    ),
                )
            })?;
        match self.pre.instantiate(&mut store) {
            Ok(instance) => Ok(Live { store, instance }),
            Err(e) => Err(self.failure(engine, &e, store.data())),
        }
    }

    fn failure(
        &self,
        engine: &PolicyEngine,
        err: &wasmtime::Error,
        state: &PluginState,
    ) -> Failure {
        Failure::from_call(err, state, self.role, &self.meta.name, engine.limits())
    }

    /// Runs `f` on an instance of this plugin. With `warm`, the instance in it
    /// is reused (created on first use) and dropped after any failure, since
    /// a trapped component instance may not be entered again.
    pub(crate) fn run<R>(
        &self,
        engine: &PolicyEngine,
        settings: &Arc<PluginSettings>,
        warm: Option<&mut Option<Live>>,
        f: impl FnOnce(&mut Store<PluginState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let Some(slot) = warm else {
            let mut live = self.instantiate(engine, settings)?;
            return self.call(engine, &mut live, f);
        };
        let live = match slot {
            Some(live) => {
                sandbox::arm(&mut live.store, engine.limits())
                    .map_err(|e| self.failure(engine, &e, live.store.data()))?;
                live
            }
            None => slot.insert(self.instantiate(engine, settings)?),
        };
        let result = self.call(engine, live, f);
        if result.is_err() {
            *slot = None;
        }
        result
    }

    fn call<R>(
        &self,
        engine: &PolicyEngine,
        live: &mut Live,
        f: impl FnOnce(&mut Store<PluginState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        f(&mut live.store, &live.instance).map_err(|e| self.failure(engine, &e, live.store.data()))
    }
}
