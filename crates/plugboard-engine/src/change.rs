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
