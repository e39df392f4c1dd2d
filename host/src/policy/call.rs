//! Running one guest call under the sandbox, on a fresh instance or a warm
//! one, and turning whatever goes wrong into a `Failure`.

use std::sync::Arc;

use wasmtime::Store;

use super::bindings::{approval, compliance, config_check, limits, pricing};
use super::engine::PolicyEngine;
use super::failure::{Failure, FailureClass};
use super::plugin::{PluginPre, RoleExports};
use super::sandbox::{self, PluginSettings, PluginState};

/// A plugin's exported functions, resolved and type-checked once per
/// instance rather than once per call.
pub(crate) struct Guests {
    pub(crate) config: config_check::Guest,
    pub(crate) role: RoleGuest,
}

pub(crate) enum RoleGuest {
    Approval(approval::Guest),
    Limits(limits::Guest),
    Pricing(pricing::Guest),
    Compliance(compliance::Guest),
}

/// A live instance: kept between calls when isolation is `reuse`.
pub struct Live {
    store: Store<PluginState>,
    guests: Guests,
}

impl PluginPre {
    fn instantiate(
        &self,
        engine: &PolicyEngine,
        settings: &Arc<PluginSettings>,
    ) -> Result<Live, Failure> {
        let mut store = sandbox::new_store(
            engine,
            &self.limits,
            settings.clone(),
            self.label.clone(),
            &self.entropy,
        )
        .map_err(|e| {
            let message = format!(
                "{} plugin '{}' could not get a sandbox: {e:#}",
                self.role, self.meta.name
            );
            Failure::new(FailureClass::Trap, message)
        })?;
        match self.resolve(&mut store) {
            Ok(guests) => Ok(Live { store, guests }),
            Err(e) => Err(self.failure(&e, store.data())),
        }
    }

    fn resolve(&self, store: &mut Store<PluginState>) -> wasmtime::Result<Guests> {
        let instance = self.pre.instantiate(&mut *store)?;
        let role = match &self.exports {
            RoleExports::Approval(ix) => RoleGuest::Approval(ix.load(&mut *store, &instance)?),
            RoleExports::Limits(ix) => RoleGuest::Limits(ix.load(&mut *store, &instance)?),
            RoleExports::Pricing(ix) => RoleGuest::Pricing(ix.load(&mut *store, &instance)?),
            RoleExports::Compliance(ix) => RoleGuest::Compliance(ix.load(&mut *store, &instance)?),
        };
        let config = self.config_check.load(&mut *store, &instance)?;
        Ok(Guests { config, role })
    }

    fn failure(&self, err: &wasmtime::Error, state: &PluginState) -> Failure {
        Failure::from_call(
            err,
            state,
            self.role,
            &self.meta.name,
            &self.limits,
            &self.node_limits,
        )
    }

    /// Runs `f` on an instance of this plugin. With `warm`, the instance in it
    /// is reused (created on first use) and dropped after any failure, since
    /// a trapped component instance may not be entered again.
    pub(crate) fn run<R>(
        &self,
        engine: &PolicyEngine,
        settings: &Arc<PluginSettings>,
        warm: Option<&mut Option<Live>>,
        f: impl FnOnce(&mut Store<PluginState>, &Guests) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let Some(slot) = warm else {
            let mut live = self.instantiate(engine, settings)?;
            return self.call(&mut live, f);
        };
        let live = match slot {
            Some(live) => {
                sandbox::arm(&mut live.store, &self.limits)
                    .map_err(|e| self.failure(&e, live.store.data()))?;
                live
            }
            None => slot.insert(self.instantiate(engine, settings)?),
        };
        let result = self.call(live, f);
        if result.is_err() {
            *slot = None;
        }
        result
    }

    fn call<R>(
        &self,
        live: &mut Live,
        f: impl FnOnce(&mut Store<PluginState>, &Guests) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        f(&mut live.store, &live.guests).map_err(|e| self.failure(&e, live.store.data()))
    }
}
