//! Lifecycle events: what subscribers are told about every change.

use plugboard_core::{PluginRecord, Status};
use serde::Serialize;

use crate::error::{Failure, Op};

/// Why a plugin's status changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Cause {
    /// An operator (or the host's code) asked for it.
    Operator {
        /// The operation.
        op: Op,
    },
    /// A hard dependency stopped being active, so the plugin is held.
    DependencyDown {
        /// The first inactive dependency.
        dependency: String,
    },
    /// Every hard dependency is active again, so the plugin is released.
    DependenciesUp,
    /// Another process sharing the storage changed it.
    External,
    /// The plugin failed too many times in a row.
    FailureThreshold {
        /// Consecutive failures counted.
        failures: u32,
    },
}

/// A change in the engine, broadcast to subscribers and traced.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LifecycleEvent {
    /// A plugin was registered, or re-registered with new code and fields.
    Registered {
        /// The record as registered.
        record: PluginRecord,
        /// Whether a record with this name existed.
        replaced: bool,
    },
    /// A plugin's status changed.
    StatusChanged {
        /// The plugin.
        plugin: String,
        /// Its event.
        event: String,
        /// The old status.
        from: Status,
        /// The new status.
        to: Status,
        /// Why.
        cause: Cause,
    },
    /// A plugin's code was unloaded; its record is kept.
    Deleted {
        /// The plugin.
        plugin: String,
        /// Its event.
        event: String,
    },
    /// A deleted plugin's code was brought back (`start`, `enable` or `restart`).
    Undeleted {
        /// The plugin.
        plugin: String,
        /// Its event.
        event: String,
    },
    /// A plugin's record was removed.
    Unregistered {
        /// The plugin.
        plugin: String,
        /// Its event.
        event: String,
    },
    /// An event's chain was rebuilt and swapped in.
    ChainRebuilt {
        /// The event.
        event: String,
        /// The plugins in the new chain, in order.
        plugins: Vec<String>,
    },
    /// A plugin failed during a call.
    PluginFailed {
        /// The plugin.
        plugin: String,
        /// The event called.
        event: String,
        /// What happened.
        failure: Failure,
        /// Failures in a row, this one included.
        consecutive: u32,
    },
    /// A lifecycle operation failed (and changed nothing).
    OperationFailed {
        /// The operation.
        op: Op,
        /// The plugin named, if the operation named one.
        plugin: Option<String>,
        /// Why it failed.
        error: String,
    },
    /// A plugin's callback failed on an operation it may not refuse (`stop`, `delete`,
    /// `unregister`, or a stop at the failure threshold): the operation went ahead.
    CallbackOverridden {
        /// The plugin.
        plugin: String,
        /// Its event.
        event: String,
        /// The operation that went ahead.
        op: Op,
        /// What the callback said.
        reason: String,
    },
    /// A record is known but no code for it was registered: it is never called.
    MissingCode {
        /// The plugin.
        plugin: String,
        /// Its event.
        event: String,
    },
    /// A fire-and-forget call was dropped because the background queue was full.
    BackgroundDropped {
        /// The event.
        event: String,
        /// Calls dropped since the engine started.
        total: u64,
    },
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Operator { op } => write!(f, "by {op}"),
            Cause::DependencyDown { dependency } => write!(f, "{dependency} is not running"),
            Cause::DependenciesUp => f.write_str("its dependencies are running"),
            Cause::External => f.write_str("by another process"),
            Cause::FailureThreshold { failures } => write!(f, "after {failures} failures in a row"),
        }
    }
}

/// One line an operator reads: what happened, to what, and why.
impl std::fmt::Display for LifecycleEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LifecycleEvent::Registered { record, replaced } => write!(
                f,
                "plugin {} {} on {} (priority {})",
                record.name,
                if *replaced {
                    "registered again"
                } else {
                    "registered"
                },
                record.event,
                record.priority
            ),
            LifecycleEvent::StatusChanged {
                plugin,
                event,
                from,
                to,
                cause,
            } => write!(f, "plugin {plugin} {to} on {event} (was {from}; {cause})"),
            LifecycleEvent::Deleted { plugin, event } => {
                write!(
                    f,
                    "plugin {plugin} deleted on {event}: its code is unloaded, its record kept"
                )
            }
            LifecycleEvent::Undeleted { plugin, event } => {
                write!(f, "plugin {plugin}'s code is loaded again on {event}")
            }
            LifecycleEvent::Unregistered { plugin, event } => {
                write!(f, "plugin {plugin} unregistered from {event}")
            }
            LifecycleEvent::ChainRebuilt { event, plugins } if plugins.is_empty() => {
                write!(f, "{event} has no plugin running")
            }
            LifecycleEvent::ChainRebuilt { event, plugins } => {
                write!(f, "{event} runs {}", plugins.join(" → "))
            }
            LifecycleEvent::PluginFailed {
                plugin,
                event,
                failure,
                consecutive,
            } => write!(
                f,
                "plugin {plugin} failed on {event} ({consecutive} in a row): {}: {}",
                failure.kind, failure.message
            ),
            LifecycleEvent::OperationFailed { op, plugin, error } => match plugin {
                Some(p) => write!(f, "{op} {p} failed: {error}"),
                None => write!(f, "{op} failed: {error}"),
            },
            LifecycleEvent::CallbackOverridden {
                plugin, op, reason, ..
            } => write!(
                f,
                "plugin {plugin}'s {op} callback failed ({reason}); done anyway"
            ),
            LifecycleEvent::MissingCode { plugin, event } => write!(
                f,
                "plugin {plugin} has a record on {event} but no code: it will not be called"
            ),
            LifecycleEvent::BackgroundDropped { event, total } => write!(
                f,
                "a background call of {event} was dropped: the queue is full ({total} dropped so far)"
            ),
        }
    }
}

impl LifecycleEvent {
    /// Logs the event as one readable line with its fields (`plugboard::lifecycle`):
    /// changes an operator cares about at `info`, failures at `warn`, chain rebuilds (which
    /// every change causes, and which say again what the lines before said) at `debug`.
    pub(crate) fn log(&self) {
        const T: &str = "plugboard::lifecycle";
        match self {
            LifecycleEvent::Registered { record, .. } => tracing::info!(
                target: T, plugin = %record.name, event = %record.event,
                priority = u8::from(record.priority), status = %record.status, "{self}"
            ),
            LifecycleEvent::StatusChanged {
                plugin,
                event,
                from,
                to,
                cause,
            } => tracing::info!(
                target: T, %plugin, %event, %from, %to, %cause, "{self}"
            ),
            LifecycleEvent::Deleted { plugin, event }
            | LifecycleEvent::Undeleted { plugin, event }
            | LifecycleEvent::Unregistered { plugin, event } => {
                tracing::info!(target: T, %plugin, %event, "{self}")
            }
            LifecycleEvent::ChainRebuilt { event, plugins } => tracing::debug!(
                target: T, %event, plugins = %plugins.join(","), "{self}"
            ),
            LifecycleEvent::PluginFailed {
                plugin,
                event,
                failure,
                consecutive,
            } => tracing::warn!(
                target: T, %plugin, %event, kind = %failure.kind, consecutive, "{self}"
            ),
            LifecycleEvent::OperationFailed { op, plugin, .. } => tracing::warn!(
                target: T, %op, plugin = plugin.as_deref().unwrap_or(""), "{self}"
            ),
            LifecycleEvent::CallbackOverridden {
                plugin, event, op, ..
            } => tracing::warn!(target: T, %plugin, %event, %op, "{self}"),
            LifecycleEvent::MissingCode { plugin, event } => {
                tracing::warn!(target: T, %plugin, %event, "{self}")
            }
            LifecycleEvent::BackgroundDropped { event, total } => {
                tracing::warn!(target: T, %event, total, "{self}")
            }
        }
    }
}
