//! Why a plugin produced no usable answer. Every failure is a deny: the
//! pipeline never reads a failure as "allowed".

use std::fmt;

use serde::Serialize;
use wasmtime::Trap;

use super::engine::SandboxLimits;
use super::role::Role;
use super::sandbox::PluginState;

/// The class of a plugin failure, as recorded in decisions and the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClass {
    /// The guest trapped (panic, unreachable, bad memory access, …).
    Trap,
    /// The guest used up its fuel.
    OutOfFuel,
    /// The guest ran past its wall-clock deadline.
    Timeout,
    /// The guest tried to grow memory past its cap.
    Memory,
    /// The guest answered, but with something the host will not accept.
    InvalidOutput,
    /// The guest refused its configuration.
    InvalidConfig,
    /// There is no loadable plugin for the role.
    Missing,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Trap => "trap",
            FailureClass::OutOfFuel => "out-of-fuel",
            FailureClass::Timeout => "timeout",
            FailureClass::Memory => "memory",
            FailureClass::InvalidOutput => "invalid-output",
            FailureClass::InvalidConfig => "invalid-config",
            FailureClass::Missing => "missing",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed plugin call: its class and a message naming the role, the plugin
/// and what to do.
#[derive(Clone, Debug, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub class: FailureClass,
    pub message: String,
}

impl Failure {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Failure {
            class,
            message: message.into(),
        }
    }

    /// Classifies an error from instantiating or calling a guest. `limits`
    /// are what the call ran under, `node` the node's own caps: where a
    /// bundle asked for less, the bundle's value is the one to raise.
    pub(crate) fn from_call(
        err: &wasmtime::Error,
        state: &PluginState,
        role: Role,
        plugin: &str,
        limits: &SandboxLimits,
        node: &SandboxLimits,
    ) -> Failure {
        let who = format!("{role} plugin '{plugin}'");
        if state.memory_exceeded() {
            let mib = limits.memory_bytes >> 20;
            let raise = raise(
                limits.memory_bytes < node.memory_bytes,
                "memory_mib",
                "policy.memoryMiB",
                &format!("{} MiB", node.memory_bytes >> 20),
            );
            return Failure::new(
                FailureClass::Memory,
                format!("{who} tried to use more than its {mib} MiB of memory; {raise}"),
            );
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => {
                let raise = raise(
                    limits.fuel < node.fuel,
                    "fuel",
                    "policy.fuel",
                    &format!("{} units", node.fuel),
                );
                Failure::new(
                    FailureClass::OutOfFuel,
                    format!("{who} ran out of fuel ({} units); {raise}", limits.fuel),
                )
            }
            Some(Trap::Interrupt) => {
                let raise = raise(
                    limits.timeout < node.timeout,
                    "timeout_ms",
                    "policy.timeoutMs",
                    &format!("{} ms", node.timeout.as_millis()),
                );
                Failure::new(
                    FailureClass::Timeout,
                    format!(
                        "{who} ran past its {} ms deadline; {raise}",
                        limits.timeout.as_millis()
                    ),
                )
            }
            _ => {
                let wrote = state
                    .stderr
                    .last_lines()
                    .map_or(String::new(), |lines| format!(" after writing: {lines}"));
                Failure::new(
                    FailureClass::Trap,
                    format!(
                        "{who} trapped: {}{wrote}; fix the plugin or run `policy reset {role}`",
                        root_cause(err)
                    ),
                )
            }
        }
    }

    pub(crate) fn invalid_output(role: Role, plugin: &str, what: &str) -> Failure {
        Failure::new(
            FailureClass::InvalidOutput,
            format!(
                "{role} plugin '{plugin}' gave an answer the host refuses: {what}; fix the plugin"
            ),
        )
    }
}

/// What to raise for a limit that was hit: the bundle's own value when it
/// asked for less than the node allows, else the node's setting.
fn raise(bundle_set_it: bool, bundle_key: &str, setting: &str, node_value: &str) -> String {
    if bundle_set_it {
        format!(
            "that is the `{bundle_key}` its bundle asks for (this node allows {node_value}): fix \
             the plugin, or raise `{bundle_key}` in the bundle's bundle.toml and rebuild it"
        )
    } else {
        format!("fix the plugin or raise {setting} (`claude-max-market config --set {setting}=…`)")
    }
}

fn root_cause(err: &wasmtime::Error) -> String {
    match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    }
}
