//! Plugins: what they receive, what they reply, and the callbacks they may implement.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use crate::event::Event;

/// A plugin's answer to a call: go on with this state, or stop the chain with it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a reply carries the state the chain goes on with"]
pub enum Reply<S> {
    /// Hand this state to the next plugin in the chain.
    Continue(S),
    /// Stop the chain here; this state is the call's result.
    Halt(S),
}

impl<S> Reply<S> {
    /// The state carried, whichever the reply.
    pub fn into_state(self) -> S {
        match self {
            Reply::Continue(s) | Reply::Halt(s) => s,
        }
    }

    /// Whether the reply halts the chain.
    pub fn is_halt(&self) -> bool {
        matches!(self, Reply::Halt(_))
    }

    /// Maps the carried state, keeping the kind of reply.
    pub fn map<T>(self, f: impl FnOnce(S) -> T) -> Reply<T> {
        match self {
            Reply::Continue(s) => Reply::Continue(f(s)),
            Reply::Halt(s) => Reply::Halt(f(s)),
        }
    }
}

/// Why a plugin refused an operation (registration, a lifecycle change, a health check).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Reason(pub String);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Reason {
    fn from(s: &str) -> Self {
        Reason(bounded(s.to_owned()))
    }
}

impl From<String> for Reason {
    fn from(s: String) -> Self {
        Reason(bounded(s))
    }
}

/// The most bytes of a plugin's message (an error, a refusal, a log line) the host keeps.
pub const MAX_MESSAGE: usize = 4096;

/// `text` cut to [`MAX_MESSAGE`] bytes (on a character boundary) with a marker saying how
/// much was cut: a plugin's message reaches logs, HTTP answers and the database, and a
/// plugin may not fill them.
pub fn bounded(mut text: String) -> String {
    if text.len() <= MAX_MESSAGE {
        return text;
    }
    let total = text.len();
    let mut cut = MAX_MESSAGE;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!("… ({} more bytes cut)", total - cut));
    text
}

/// Read-only data a caller hands to every plugin of one call, never merged into the result.
///
/// Typical contents: a request id, the acting user, feature flags. The host may also attach
/// one native object (its own request, a database handle) that native plugins can borrow
/// with [`Meta::host`]; it never leaves the process.
#[derive(Clone, Default)]
pub struct Meta {
    values: Vec<(String, Value)>,
    host: Option<Arc<dyn Any + Send + Sync>>,
}

/// The empty meta, used by calls that pass none. A `static` so that such calls allocate nothing.
pub static EMPTY_META: Meta = Meta::new();

impl Meta {
    /// An empty meta.
    pub const fn new() -> Self {
        Meta {
            values: Vec::new(),
            host: None,
        }
    }

    /// Adds or replaces a value.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// Adds or replaces a value in place.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.values.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.values.push((key, value)),
        }
    }

    /// Attaches the host's own object (for example its request type) for native plugins.
    pub fn with_host<T: Any + Send + Sync>(mut self, host: Arc<T>) -> Self {
        self.host = Some(host);
        self
    }

    /// A value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// All values, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The host object, if one of type `T` was attached.
    pub fn host<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.host.as_deref().and_then(|h| h.downcast_ref::<T>())
    }

    /// The values as a JSON object, for plugins that cross a serialisation boundary.
    pub fn to_json(&self) -> Value {
        Value::Object(self.values.iter().cloned().collect())
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Meta")
            .field("values", &self.values)
            .field("host", &self.host.as_ref().map(|_| ".."))
            .finish()
    }
}

/// What a plugin is told about the call it serves.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    event: &'a str,
    plugin: &'a str,
    meta: &'a Meta,
}

impl<'a> Context<'a> {
    /// Builds a context; the engine does this for every step.
    pub fn new(event: &'a str, plugin: &'a str, meta: &'a Meta) -> Self {
        Context {
            event,
            plugin,
            meta,
        }
    }

    /// The event being called.
    pub fn event(&self) -> &'a str {
        self.event
    }

    /// The name under which the running plugin is registered.
    pub fn plugin(&self) -> &'a str {
        self.plugin
    }

    /// The caller's read-only meta.
    pub fn meta(&self) -> &'a Meta {
        self.meta
    }
}

/// The optional callbacks every plugin trait shares (`initial`, `start`, `stop`, `restart`,
/// `delete`, `unregister`, `health_check`), for the plugin traits of this crate and of
/// the engine. Not an API of its own.
#[doc(hidden)]
#[macro_export]
macro_rules! __lifecycle_callbacks {
    () => {
        /// Called when the plugin is registered (or re-registered with new code), with the
        /// record it will have. Refusing aborts the registration; nothing changes.
        fn initial(&self, record: &$crate::PluginRecord) -> Result<(), $crate::Reason> {
            let _ = record;
            Ok(())
        }

        /// Called before the plugin is started (or enabled). Refusing leaves it as it was.
        fn start(&self, record: &$crate::PluginRecord) -> Result<(), $crate::Reason> {
            let _ = record;
            Ok(())
        }

        /// Called before the plugin is stopped. Refusing leaves it as it was.
        fn stop(&self, record: &$crate::PluginRecord) -> Result<(), $crate::Reason> {
            let _ = record;
            Ok(())
        }

        /// Called before the plugin is restarted. Refusing leaves it as it was.
        fn restart(&self, record: &$crate::PluginRecord) -> Result<(), $crate::Reason> {
            let _ = record;
            Ok(())
        }

        /// Called before the plugin's code is unloaded (its record is kept).
        fn delete(&self, record: &$crate::PluginRecord) -> Result<(), $crate::Reason> {
            let _ = record;
            Ok(())
        }

        /// Called before the plugin's record is removed.
        fn unregister(&self, record: &$crate::PluginRecord) -> Result<(), $crate::Reason> {
            let _ = record;
            Ok(())
        }

        /// Reports whether the plugin can do its job (e.g. reach its backend).
        fn health_check(&self) -> Result<(), $crate::Reason> {
            Ok(())
        }
    };
}

/// A plugin on event `E`: the one trait a native plugin author implements.
///
/// `call` takes the state from the previous plugin (or the caller) and replies with the
/// state to go on with, or halts the chain. Every other method is optional.
///
/// ```
/// use plugboard_core::{Context, Plugin, Reply, reference::OnUserAfterSaveFailure};
///
/// struct Audit;
///
/// impl Plugin<OnUserAfterSaveFailure> for Audit {
///     fn call(&self, mut state: OnUserAfterSaveFailure, _cx: &Context<'_>) -> Reply<OnUserAfterSaveFailure> {
///         state.extra["audited"] = true.into();
///         Reply::Continue(state)
///     }
/// }
/// ```
pub trait Plugin<E: Event>: Send + Sync + 'static {
    /// Handles one call of the event.
    fn call(&self, state: E::State, cx: &Context<'_>) -> Reply<E::State>;

    crate::__lifecycle_callbacks!();
}

/// A plugin on event `E` whose `call` does I/O and is awaited.
///
/// Implement `call` with `async fn`. Chains that contain an async plugin are called with
/// the engine's async call; the callbacks stay synchronous because they run on the
/// control path, not the call path.
pub trait AsyncPlugin<E: Event>: Send + Sync + 'static {
    /// Handles one call of the event.
    fn call(
        &self,
        state: E::State,
        cx: &Context<'_>,
    ) -> impl Future<Output = Reply<E::State>> + Send;

    crate::__lifecycle_callbacks!();
}

/// A plugin made from a closure; see [`from_fn`].
pub struct FnPlugin<F>(F);

/// Makes a plugin from a closure, for plugins that need no callbacks.
///
/// ```
/// use plugboard_core::{Reply, from_fn, reference::OnContentPrepare, Plugin};
/// let upper = from_fn(|mut s: plugboard_core::reference::Payload, _cx: &plugboard_core::Context<'_>| {
///     s.data.insert("seen".into(), true.into());
///     Reply::Continue(s)
/// });
/// fn is_plugin<P: Plugin<OnContentPrepare>>(_: &P) {}
/// is_plugin(&upper);
/// ```
pub fn from_fn<F>(f: F) -> FnPlugin<F> {
    FnPlugin(f)
}

impl<E, F> Plugin<E> for FnPlugin<F>
where
    E: Event,
    F: Fn(E::State, &Context<'_>) -> Reply<E::State> + Send + Sync + 'static,
{
    fn call(&self, state: E::State, cx: &Context<'_>) -> Reply<E::State> {
        (self.0)(state, cx)
    }
}
