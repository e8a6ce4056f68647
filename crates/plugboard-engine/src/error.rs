//! The engine's typed errors.

use std::fmt;

use plugboard_core::Reason;
use serde::Serialize;

/// A lifecycle operation, as named in errors, events and the activity log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Register (or re-register) a plugin.
    Register,
    /// Start a registered or held plugin.
    Start,
    /// Stop a plugin; sticky.
    Stop,
    /// Restart a plugin.
    Restart,
    /// Leave `stopped`.
    Enable,
    /// Unload a plugin's code, keeping its record.
    Delete,
    /// Remove a plugin's record.
    Unregister,
}

impl Op {
    /// The operation's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Register => "register",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Restart => "restart",
            Op::Enable => "enable",
            Op::Delete => "delete",
            Op::Unregister => "unregister",
        }
    }

    /// Whether the operation takes a plugin out (`stop`, `delete`, `unregister`): the
    /// plugin's callback is told, but cannot refuse it.
    pub fn takes_out(self) -> bool {
        matches!(self, Op::Stop | Op::Delete | Op::Unregister)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a control operation (declare, register, a lifecycle change) failed. A failed
/// operation changes nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No plugin has this name.
    #[error("no plugin named `{0}` is registered")]
    UnknownPlugin(String),
    /// No event has this name.
    #[error("no event named `{0}` is declared")]
    UnknownEvent(String),
    /// The event name is taken by an event of another type.
    #[error("event `{event}` is already declared with state type `{existing}`, not `{requested}`")]
    EventConflict {
        /// The event.
        event: String,
        /// The state type it has.
        existing: String,
        /// The state type asked for.
        requested: String,
    },
    /// The event is declared in the other mode (waterfall or collecting) than asked for.
    #[error("{}", mode_mismatch(.event, *.declared))]
    ModeMismatch {
        /// The event.
        event: String,
        /// How it was declared.
        declared: plugboard_core::Mode,
    },
    /// A wrapper was registered on a collecting event: wrappers run around waterfalls.
    #[error(
        "plugin `{plugin}` is a wrapper, and event `{event}` collects: wrappers run around waterfall chains only"
    )]
    WrapperOnCollecting {
        /// The plugin.
        plugin: String,
        /// The event.
        event: String,
    },
    /// The plugin's state type does not match the event's.
    #[error("plugin `{plugin}` handles `{found}`, but event `{event}` carries `{expected}`")]
    StateMismatch {
        /// The plugin.
        plugin: String,
        /// The event.
        event: String,
        /// The event's state type.
        expected: String,
        /// The plugin's state type.
        found: String,
    },
    /// `start` or `restart` on a stopped plugin.
    #[error("plugin `{0}` is stopped; only `enable` can start it again")]
    Stopped(String),
    /// The dependencies would form a cycle.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A name is not acceptable.
    #[error("invalid {what} name {name:?}: {why}")]
    InvalidName {
        /// `plugin` or `event`.
        what: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The plugin's callback refused the operation.
    #[error("plugin `{plugin}` refused to {op}: {reason}")]
    Refused {
        /// The plugin.
        plugin: String,
        /// The operation refused.
        op: Op,
        /// The plugin's reason.
        reason: Reason,
    },
    /// Storage refused the change; nothing changed.
    #[error("the change could not be stored, so nothing changed: {0}")]
    Persist(crate::persist::PersistError),
    /// A plugin callback tried to change the engine while the engine was calling it.
    #[error("`{0}` was called from inside a plugin callback; callbacks must not change the engine")]
    Reentrant(Op),
}

/// The kind of a plugin failure during a call.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// A native plugin panicked.
    Panic,
    /// A plugin replied with something that is not a valid state for the event.
    InvalidReply,
    /// A sandboxed plugin trapped.
    Trap,
    /// A plugin overran its deadline.
    Timeout,
    /// A plugin overran a resource limit (memory, fuel, reply size).
    ResourceLimit,
    /// A plugin returned an error instead of a reply.
    PluginError,
}

impl FailureKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Panic => "panic",
            FailureKind::InvalidReply => "invalid_reply",
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::ResourceLimit => "resource_limit",
            FailureKind::PluginError => "plugin_error",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plugin failure: its kind and a message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened.
    pub message: String,
}

impl Failure {
    /// A failure of `kind`; the message is cut to [`plugboard_core::MAX_MESSAGE`] bytes
    /// (with a marker), since a plugin writes it.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: plugboard_core::bounded(message.into()),
        }
    }

    /// The failure of a panic, with the panic's message.
    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked with a non-string payload".to_owned());
        Failure::new(FailureKind::Panic, message)
    }
}

/// Why a call did not produce a state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No event has this name (calls by name only; a typed event with no plugins returns its input).
    #[error("no event named `{0}` is declared")]
    UnknownEvent(String),
    /// The JSON state is not valid for the event.
    #[error("invalid state for event `{event}`: {error}")]
    InvalidState {
        /// The event.
        event: String,
        /// What serde said (in the message: not repeated as a source).
        error: serde_json::Error,
    },
    /// A synchronous call met an async plugin.
    #[error(
        "event `{event}` has the async plugin `{plugin}` in its chain; call it with `call_async`"
    )]
    NeedsAsync {
        /// The event.
        event: String,
        /// The first async plugin in the chain.
        plugin: String,
    },
    /// A plugin failed and the event's policy is [`OnFailure::Error`](crate::OnFailure::Error).
    #[error("plugin `{plugin}` failed on event `{event}` ({}): {}", .failure.kind, .failure.message)]
    PluginFailed {
        /// The event.
        event: String,
        /// The plugin.
        plugin: String,
        /// What happened.
        failure: Failure,
    },
}

// By hand rather than `#[from]`: the cause is in the message, so it is not also a source
// (a chain printed with `{:#}` would say it twice).
impl From<crate::persist::PersistError> for EngineError {
    fn from(e: crate::persist::PersistError) -> Self {
        EngineError::Persist(e)
    }
}

fn mode_mismatch(event: &str, declared: plugboard_core::Mode) -> String {
    match declared {
        plugboard_core::Mode::Collect => format!(
            "event `{event}` collects: its plugins are collectors (`Collector`, `Engine::register_collector`) and it is called with `Engine::collector`"
        ),
        plugboard_core::Mode::Waterfall => format!(
            "event `{event}` is a waterfall: its plugins are `Plugin`s and it is called with `Engine::hook`"
        ),
    }
}
