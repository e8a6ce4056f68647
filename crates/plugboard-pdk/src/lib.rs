//! # plugboard-pdk
//!
//! The guest side of Plugboard's WebAssembly plugins: implement [`Plugin`] for a struct
//! and export it with [`export_plugin!`]; build the crate as a `cdylib` for
//! `wasm32-wasip2`. The state arrives typed (reference events come from
//! [`plugboard_core::reference`]) and leaves as the reply.
//!
//! ```no_run
//! use plugboard_pdk::{Plugin, Reply, reference::OnUserAfterSaveFailure};
//!
//! struct Audit;
//!
//! impl Plugin for Audit {
//!     type State = OnUserAfterSaveFailure;
//!
//!     fn call(&self, _event: &str, mut s: Self::State) -> Result<Reply<Self::State>, String> {
//!         s.extra = plugboard_pdk::serde_json::json!({ "audited": true, "code": s.error.code });
//!         Ok(Reply::Continue(s))
//!     }
//! }
//!
//! plugboard_pdk::export_plugin!(Audit, Audit);
//! ```
//!
//! A plugin on a collecting event implements [`Collector`] instead (the input in, a
//! typed contribution out; [`export_collector!`]), and one that runs around the rest of a
//! chain implements [`Wrapper`] ([`export_wrapper!`], contract 0.4).
//!
//! States cross the sandbox as JSON, or, for states that have one (every reference event's,
//! and `event!` structs declared `binary`), in a binary layout that is several times
//! cheaper to decode; the host picks it only when this plugin was built against the same
//! layout (a fingerprint of the state's schema), so an old plugin keeps working on JSON.
//!
//! Two things make a step cheap without asking anything of the plugin: a state that
//! implements [`DecodeInPlace`](plugboard_core::wire::DecodeInPlace) (the reference events
//! do) is decoded into the state the previous call returned, so its strings keep their
//! buffers; and, with the default `fast-alloc` feature, the guest's global allocator keeps
//! free lists of small blocks (turn the feature off to bring your own allocator).
//!
//! The host grants nothing but what the package's `[capabilities]` ask for and the
//! operator allowed: [`log`], [`settings`], [`now_ms`] and the plugin's own key-value
//! data, [`kv`]. No files, environment or processes. Calls run under the host's limits (memory, deadline, reply
//! size); exceeding one ends the call with an error the host reports against the plugin.

// The bindings wit-bindgen generates for the WIT contract use `unsafe` for the canonical
// ABI, and so does the small-block allocator (`alloc.rs`); nothing else in this crate does.
#![allow(unsafe_code)]

/// The generated bindings of the `plugboard:plugin` contract.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        // Every PDK component exports `wrapper` too; a plugin's answers an error, and
        // the host calls it only for a hook whose role is `wrapper`.
        world: "plugin-wrapper",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_guest",
        default_bindings_module: "plugboard_pdk::bindings",
    });
}

use std::marker::PhantomData;

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(any(
    test,
    all(
        feature = "fast-alloc",
        target_family = "wasm",
        not(target_feature = "atomics")
    )
))]
mod alloc;

// Single-threaded wasm only: the free lists take no lock.
#[cfg(all(
    feature = "fast-alloc",
    target_family = "wasm",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: alloc::Bins = alloc::Bins::new();

use bindings::exports::plugboard::plugin::guest::{Reply as WitReply, Wire as WitWire};

use bindings::plugboard::plugin::host;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use plugboard_core::{Contribute, Event, PluginRecord, Reply, Wire, reference};
/// Re-exported so that a plugin derives its settings' struct without depending on serde
/// itself: `#[derive(plugboard_pdk::serde::Deserialize)] #[serde(crate = "plugboard_pdk::serde")]`.
pub use serde;
pub use serde_json;

/// A sandboxed plugin: implement [`call`](Plugin::call), or
/// [`call_lazy`](Plugin::call_lazy) to decode the state only when needed, and export it
/// with [`export_plugin!`].
///
/// ```no_run
/// use plugboard_pdk::serde_json::Value;
/// use plugboard_pdk::{Plugin, Reply};
///
/// /// Any event, its state as free JSON: halts a state that says `"stop": true`.
/// struct Stopper;
///
/// impl Plugin for Stopper {
///     type State = Value;
///
///     fn call(&self, _event: &str, state: Value) -> Result<Reply<Value>, String> {
///         Ok(if state["stop"] == true { Reply::Halt(state) } else { Reply::Continue(state) })
///     }
/// }
///
/// plugboard_pdk::export_plugin!(Stopper, Stopper);
/// ```
pub trait Plugin: Send + Sync + 'static {
    /// The event's state: a reference event's type, your own serde type, or
    /// `serde_json::Value` for any event.
    type State: Serialize + DeserializeOwned;

    /// Handles one call of `event`: the state in, the reply out
    /// ([`Reply::Continue`] or [`Reply::Halt`]); an `Err` fails this step (counted
    /// against the plugin).
    ///
    /// ```no_run
    /// # use plugboard_pdk::{Plugin, Reply, reference::OnUserBeforeLogin};
    /// struct LocalOnly;
    ///
    /// impl Plugin for LocalOnly {
    ///     type State = OnUserBeforeLogin;
    ///
    ///     fn call(&self, _event: &str, s: Self::State) -> Result<Reply<Self::State>, String> {
    ///         if s.ip.0.is_loopback() { Ok(Reply::Continue(s)) } else { Ok(Reply::Halt(s)) }
    ///     }
    /// }
    /// ```
    fn call(&self, event: &str, state: Self::State) -> Result<Reply<Self::State>, String> {
        let _ = (event, state);
        Err("the plugin implements neither `call` nor `call_lazy`".to_owned())
    }

    /// Handles one call of `event` with the state decoded only when the plugin asks for
    /// it. A plugin that never looks at the state (a counter, a rate limit on the event
    /// itself) skips decoding it; one that only reads it ([`Lazy::get`], e.g. to decide
    /// whether to halt) skips re-encoding it: the state goes on as the bytes it came in.
    /// The default decodes the state and hands it to [`call`](Plugin::call).
    ///
    /// ```no_run
    /// # use plugboard_pdk::{Flow, Lazy, Plugin, serde_json::Value};
    /// /// Counts calls without ever decoding a state.
    /// struct Counter;
    ///
    /// impl Plugin for Counter {
    ///     type State = Value;
    ///
    ///     fn call_lazy(&self, event: &str, _state: &mut Lazy<'_, Value>) -> Result<Flow, String> {
    ///         plugboard_pdk::kv::increment(event, 1, None).map_err(|e| format!("{e:?}"))?;
    ///         Ok(Flow::Continue)
    ///     }
    /// }
    /// ```
    fn call_lazy(&self, event: &str, state: &mut Lazy<'_, Self::State>) -> Result<Flow, String> {
        let reply = self.call(event, state.take()?)?;
        let flow = if reply.is_halt() {
            Flow::Halt
        } else {
            Flow::Continue
        };
        state.set(reply.into_state());
        Ok(flow)
    }

    /// Called when the plugin is registered; an error refuses the registration.
    ///
    /// ```no_run
    /// # use plugboard_pdk::{Plugin, PluginRecord, serde_json::Value};
    /// struct NeedsSettings;
    ///
    /// impl Plugin for NeedsSettings {
    ///     type State = Value;
    ///
    ///     fn initial(&self, record: &PluginRecord) -> Result<(), String> {
    ///         match plugboard_pdk::settings() {
    ///             Some(_) => Ok(()),
    ///             None => Err(format!("{}: set its settings first", record.name)),
    ///         }
    ///     }
    /// }
    /// ```
    fn initial(&self, record: &PluginRecord) -> Result<(), String> {
        let _ = record;
        Ok(())
    }

    /// A lifecycle callback (`start`, `stop`, `restart`, `delete`, `unregister`); an
    /// error refuses the operation (`stop`, `delete` and `unregister` go ahead anyway).
    ///
    /// ```no_run
    /// # use plugboard_pdk::{Plugin, PluginRecord, serde_json::Value};
    /// struct Tidy;
    ///
    /// impl Plugin for Tidy {
    ///     type State = Value;
    ///
    ///     fn lifecycle(&self, op: &str, _record: &PluginRecord) -> Result<(), String> {
    ///         if op == "delete" {
    ///             plugboard_pdk::kv::delete("cache").map_err(|e| format!("{e:?}"))?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    fn lifecycle(&self, op: &str, record: &PluginRecord) -> Result<(), String> {
        let _ = (op, record);
        Ok(())
    }

    /// Whether the plugin can do its job: asked at install (an error fails the install)
    /// and when an operator checks.
    ///
    /// ```no_run
    /// # use plugboard_pdk::{Plugin, serde_json::Value};
    /// struct Webhook;
    ///
    /// impl Plugin for Webhook {
    ///     type State = Value;
    ///
    ///     fn health(&self) -> Result<(), String> {
    ///         plugboard_pdk::settings().map(|_| ()).ok_or_else(|| "no `url` set".into())
    ///     }
    /// }
    /// ```
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// What the rest of the chain did, as a [`Wrapper`]'s `after` is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<S> {
    /// Every plugin continued; the state they ended with.
    Continued(S),
    /// A plugin halted the chain with this state.
    Halted(S),
    /// The rest of the chain failed: the host's message, naming the plugin.
    Failed(String),
}

/// A [`Wrapper`]'s last word on one call.
#[derive(Debug, Clone, PartialEq)]
pub enum After<S> {
    /// The outcome stands as it is (nothing crosses back to the host).
    Keep,
    /// The call ends with this state, as if every plugin continued (replaces a failure:
    /// a fallback).
    Continue(S),
    /// The call ends with this state, as a halt.
    Halt(S),
    /// Run the rest of the chain again from this state; `after` is called again with
    /// the new outcome and the token as this `after` left it (the host allows 16
    /// retries per call).
    Retry(S),
}

/// A sandboxed wrapper: runs around the rest of an event's chain (the plugins after it
/// and the wrappers inside it), the shape of a tower `Layer` or a pluggy hookwrapper,
/// in two calls. Export it with [`export_wrapper!`] and give its hook
/// `role = "wrapper"` in `plugboard.toml`.
///
/// ```no_run
/// use plugboard_pdk::serde_json::Value;
/// use plugboard_pdk::{After, Outcome, Reply, Wrapper};
///
/// /// Turns a failure of the rest of the chain into the input, marked.
/// struct Fallback;
///
/// impl Wrapper for Fallback {
///     type State = Value;
///     type Token = Value;
///
///     fn before(&self, _event: &str, state: Value) -> Result<(Reply<Value>, Value), String> {
///         Ok((Reply::Continue(state.clone()), state))
///     }
///
///     fn after(&self, _event: &str, outcome: Outcome<Value>, input: &mut Value) -> Result<After<Value>, String> {
///         Ok(match outcome {
///             Outcome::Failed(why) => {
///                 let mut state = input.clone();
///                 state["fallback"] = why.into();
///                 After::Continue(state)
///             }
///             _ => After::Keep,
///         })
///     }
/// }
///
/// plugboard_pdk::export_wrapper!(Fallback, Fallback);
/// ```
pub trait Wrapper: Send + Sync + 'static {
    /// The event's state, as for [`Plugin::State`] (crossing as JSON).
    type State: Serialize + DeserializeOwned;

    /// What `before` hands `after` in the same call (a start time, a cache key, the
    /// input); `()` when nothing. The host keeps it between the two calls, which may run
    /// on different instances: keep nothing for `after` anywhere else.
    type Token: Serialize + DeserializeOwned;

    /// Called before the rest of the chain: `Continue` runs it with the state given;
    /// `Halt` answers with that state without running it (`after` is still called, told
    /// `Halted`). An `Err` fails the call on this wrapper's account.
    fn before(
        &self,
        event: &str,
        state: Self::State,
    ) -> Result<(Reply<Self::State>, Self::Token), String>;

    /// Called with the rest of the chain's outcome and the token (as `before` made it,
    /// or as the `after` that asked for a retry left it). An `Err` fails the call on
    /// this wrapper's account (how a wrapper turns a result into a failure).
    fn after(
        &self,
        event: &str,
        outcome: Outcome<Self::State>,
        token: &mut Self::Token,
    ) -> Result<After<Self::State>, String>;

    /// As [`Plugin::initial`].
    fn initial(&self, record: &PluginRecord) -> Result<(), String> {
        let _ = record;
        Ok(())
    }

    /// As [`Plugin::lifecycle`].
    fn lifecycle(&self, op: &str, record: &PluginRecord) -> Result<(), String> {
        let _ = (op, record);
        Ok(())
    }

    /// As [`Plugin::health`].
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

use bindings::exports::plugboard::plugin::wrapper as wit_wrapper;

/// A sandboxed plugin on a collecting event (`plugboard events` says `collect`): given
/// the caller's input, it answers with its contribution, typed. Export it with
/// [`export_collector!`].
///
/// ```no_run
/// use plugboard_pdk::reference::{Payload, SearchHit};
/// use plugboard_pdk::{Collector, Contribute};
///
/// /// Answers any search for "upgrade" with one page.
/// struct Docs;
///
/// impl Collector for Docs {
///     type Input = Payload;
///     type Output = SearchHit;
///
///     fn collect(&self, _event: &str, input: Payload) -> Result<Contribute<SearchHit>, String> {
///         let words = input.data.get("text").and_then(|t| t.as_str()).unwrap_or_default();
///         Ok(if words.contains("upgrade") {
///             Contribute::Add(SearchHit::new("Upgrading", "/docs/upgrades").text("Install a newer version."))
///         } else {
///             Contribute::Pass
///         })
///     }
/// }
///
/// plugboard_pdk::export_collector!(Docs, Docs);
/// ```
pub trait Collector: Send + Sync + 'static {
    /// The event's input: its state type (a reference event's, your own serde type, or
    /// `serde_json::Value`).
    type Input: DeserializeOwned;

    /// One contribution: the event's output type (`SearchHit` for `on_content_search`).
    type Output: Serialize;

    /// Answers one call: [`Contribute::Add`] a contribution, [`Contribute::Pass`]
    /// (nothing), or end the collection with [`Contribute::Last`] or [`Contribute::Stop`]
    /// (no plugin after this one is asked). An `Err` fails this plugin's answer, as the
    /// event's failure policy says.
    fn collect(&self, event: &str, input: Self::Input) -> Result<Contribute<Self::Output>, String>;

    /// As [`Plugin::initial`].
    fn initial(&self, record: &PluginRecord) -> Result<(), String> {
        let _ = record;
        Ok(())
    }

    /// As [`Plugin::lifecycle`].
    fn lifecycle(&self, op: &str, record: &PluginRecord) -> Result<(), String> {
        let _ = (op, record);
        Ok(())
    }

    /// As [`Plugin::health`].
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A collector's answer as the contract carries it: the contribution as JSON (`null`
/// for none), halting to end the collection.
#[doc(hidden)]
pub fn __collect<C: Collector>(
    collector: &C,
    event: &str,
    wire: WitWire,
    input: &[u8],
) -> Result<WitReply, String> {
    if !matches!(wire, WitWire::Json) {
        return Err("a collecting event's input comes as JSON".into());
    }
    let input = serde_json::from_slice(input)
        .map_err(|e| format!("the input of `{event}` does not decode: {e}"))?;
    let answer = collector.collect(event, input)?;
    let ends = answer.ends();
    let out = match answer.into_output() {
        Some(o) => {
            serde_json::to_vec(&o).map_err(|e| format!("the contribution does not encode: {e}"))?
        }
        None => b"null".to_vec(),
    };
    Ok(if ends {
        WitReply::Halt(out)
    } else {
        WitReply::Continue(out)
    })
}

fn state_in<S: DeserializeOwned>(json: &str) -> Result<S, String> {
    serde_json::from_str(json).map_err(|e| format!("the state does not decode: {e}"))
}

fn state_out<S: Serialize>(state: &S) -> Result<String, String> {
    serde_json::to_string(state).map_err(|e| format!("the state does not encode: {e}"))
}

fn encode_token<T: Serialize>(token: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(token).map_err(|e| format!("the token does not encode: {e}"))
}

#[doc(hidden)]
pub fn __before<W: Wrapper>(
    wrapper: &W,
    event: &str,
    state: &str,
) -> Result<wit_wrapper::Opened, String> {
    let (reply, token) = wrapper.before(event, state_in(state)?)?;
    let token = encode_token(&token)?;
    let entry = match reply {
        Reply::Continue(s) => wit_wrapper::Entry::Continue(state_out(&s)?),
        Reply::Halt(s) => wit_wrapper::Entry::Halt(state_out(&s)?),
    };
    Ok(wit_wrapper::Opened { entry, token })
}

#[doc(hidden)]
pub fn __after<W: Wrapper>(
    wrapper: &W,
    event: &str,
    outcome: wit_wrapper::Outcome,
    token: &[u8],
) -> Result<wit_wrapper::Closing, String> {
    let mut token: W::Token =
        serde_json::from_slice(token).map_err(|e| format!("the token does not decode: {e}"))?;
    let outcome = match outcome {
        wit_wrapper::Outcome::Continued(s) => Outcome::Continued(state_in(&s)?),
        wit_wrapper::Outcome::Halted(s) => Outcome::Halted(state_in(&s)?),
        wit_wrapper::Outcome::Failed(why) => Outcome::Failed(why),
    };
    Ok(match wrapper.after(event, outcome, &mut token)? {
        After::Keep => wit_wrapper::Closing::Keep,
        After::Continue(s) => wit_wrapper::Closing::Continue(state_out(&s)?),
        After::Halt(s) => wit_wrapper::Closing::Halt(state_out(&s)?),
        After::Retry(s) => wit_wrapper::Closing::Retry(wit_wrapper::Again {
            state: state_out(&s)?,
            token: encode_token(&token)?,
        }),
    })
}

#[doc(hidden)]
pub fn __not_a_wrapper() -> String {
    "this plugin is not a wrapper: give its hook no `role` (it was built with export_plugin!)"
        .to_owned()
}

#[doc(hidden)]
pub fn __not_a_step() -> String {
    "this plugin is a wrapper: give its hook `role = \"wrapper\"` (it was built with export_wrapper!)".to_owned()
}

/// Writes a log line through the host (the `log` capability), attributed to the plugin.
/// Lines are cut to a bounded length, and past the plugin's budget per second dropped and
/// counted.
///
/// ```no_run
/// plugboard_pdk::log::info("started");
/// plugboard_pdk::log::warn(&format!("{} retries left", 2));
/// ```
pub mod log {
    use super::host::{Level, log};

    /// At info level.
    ///
    /// ```no_run
    /// plugboard_pdk::log::info("a plain fact");
    /// ```
    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    /// At warn level.
    ///
    /// ```no_run
    /// plugboard_pdk::log::warn("slow answer from the hook");
    /// ```
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    /// At error level.
    ///
    /// ```no_run
    /// plugboard_pdk::log::error("the hook refused the token");
    /// ```
    pub fn error(message: &str) {
        log(Level::Error, message);
    }

    /// At debug level.
    ///
    /// ```no_run
    /// plugboard_pdk::log::debug("state decoded");
    /// ```
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
}

/// The plugin's own settings (JSON), if the operator set any. They are read afresh on
/// each call: an operator's change reaches the plugin on its next call (there is no
/// separate "settings changed" callback; compare with what you kept if you need one).
/// Secret fields (write-only in the package's settings schema) are here in the clear:
/// only the plugin ever sees them.
///
/// ```no_run
/// let settings: plugboard_pdk::serde_json::Value = plugboard_pdk::settings()
///     .map(|text| plugboard_pdk::serde_json::from_str(&text))
///     .transpose()
///     .map_err(|e| e.to_string())?
///     .unwrap_or_default();
/// let threshold = settings["threshold"].as_u64().unwrap_or(3);
/// # let _ = threshold; Ok::<(), String>(())
/// ```
pub fn settings() -> Option<String> {
    host::settings()
}

/// The plugin's settings read into a struct of yours: `Ok(None)` when none are set, an
/// error naming the field when they do not fit (the host checks them against the
/// package's `settings.schema.json` before storing, so a struct that matches the schema
/// always fits).
///
/// ```no_run
/// #[derive(plugboard_pdk::serde::Deserialize)]
/// #[serde(crate = "plugboard_pdk::serde")]
/// struct Settings {
///     url: String,
///     #[serde(default)]
///     token: Option<String>,
/// }
///
/// # fn call() -> Result<(), String> {
/// let Some(s) = plugboard_pdk::settings_as::<Settings>()? else {
///     return Err("no `url` set: `plugboard settings set webhook '{\"url\": …}'`".into());
/// };
/// plugboard_pdk::log::info(&format!("posting to {}", s.url));
/// # let _ = s.token; Ok(()) }
/// ```
pub fn settings_as<T: serde::de::DeserializeOwned>() -> Result<Option<T>, String> {
    settings()
        .map(|text| serde_json::from_str(&text).map_err(|e| format!("settings: {e}")))
        .transpose()
}

/// Milliseconds since the Unix epoch, from the host (the `clock` capability; without it,
/// the epoch).
///
/// ```no_run
/// let started = plugboard_pdk::now_ms();
/// plugboard_pdk::log::debug(&format!("took {} ms", plugboard_pdk::now_ms() - started));
/// ```
pub fn now_ms() -> u64 {
    host::now_ms()
}

/// What [`Plugin::call_lazy`] decides: go on with the state as it now is, or end the
/// chain with it.
///
/// ```
/// # use plugboard_pdk::Flow;
/// let over_limit = true;
/// let flow = if over_limit { Flow::Halt } else { Flow::Continue };
/// assert_eq!(flow, Flow::Halt);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Hand the state to the next plugin.
    Continue,
    /// Stop the chain here; the state is the call's result.
    Halt,
}

/// One call's state, decoded the first time the plugin asks for it. If the plugin never
/// changes it ([`get_mut`](Lazy::get_mut), [`set`](Lazy::set)), the reply is the bytes
/// the state came in, not a re-encoding.
///
/// ```no_run
/// # use plugboard_pdk::{Flow, Lazy, Plugin, reference::OnUserAfterSaveFailure};
/// struct Tagger;
///
/// impl Plugin for Tagger {
///     type State = OnUserAfterSaveFailure;
///
///     fn call_lazy(&self, _event: &str, state: &mut Lazy<'_, Self::State>) -> Result<Flow, String> {
///         // Reading decodes; only a change re-encodes.
///         if state.get()?.error.code == "validation_failed" {
///             state.get_mut()?.extra = plugboard_pdk::serde_json::json!({ "tagged": true });
///         }
///         Ok(Flow::Continue)
///     }
/// }
/// ```
pub struct Lazy<'a, S> {
    event: &'a str,
    wire: Wire,
    bytes: Vec<u8>,
    state: Option<S>,
    changed: bool,
    /// Set for states that decode in place: resets what in-place decoding leaves.
    reuse: Option<fn(&mut S)>,
    /// The state the previous call returned, to decode into.
    spare: &'a mut Option<S>,
}

impl<S: Serialize + DeserializeOwned> Lazy<'_, S> {
    /// The wire the state came in.
    ///
    /// ```no_run
    /// # use plugboard_pdk::{Lazy, Wire, serde_json::Value};
    /// # fn f(state: &mut Lazy<'_, Value>) -> Result<(), String> {
    /// let binary = state.wire() == Wire::Binary;
    /// # let _ = binary;
    /// # Ok(()) }
    /// ```
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// The state's encoded bytes, as they came in.
    ///
    /// ```no_run
    /// # use plugboard_pdk::{Lazy, Wire, serde_json::Value};
    /// # fn f(state: &mut Lazy<'_, Value>) -> Result<(), String> {
    /// let size = state.bytes().len();
    /// # let _ = size;
    /// # Ok(()) }
    /// ```
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The state, decoded on first use.
    ///
    /// ```no_run
    /// # use plugboard_pdk::{Lazy, Wire, serde_json::Value};
    /// # fn f(state: &mut Lazy<'_, Value>) -> Result<(), String> {
    /// let title = state.get()?["title"].clone();
    /// # let _ = title;
    /// # Ok(()) }
    /// ```
    pub fn get(&mut self) -> Result<&S, String> {
        self.decode()?;
        self.state.as_ref().ok_or_else(|| taken(self.event))
    }

    /// The state, to change; the reply is encoded from it.
    ///
    /// ```no_run
    /// # use plugboard_pdk::{Lazy, Wire, serde_json::Value};
    /// # fn f(state: &mut Lazy<'_, Value>) -> Result<(), String> {
    /// state.get_mut()?["seen"] = true.into();
    /// # Ok(()) }
    /// ```
    pub fn get_mut(&mut self) -> Result<&mut S, String> {
        self.decode()?;
        self.changed = true;
        let event = self.event;
        self.state.as_mut().ok_or_else(|| taken(event))
    }

    /// Replaces the state; the reply is encoded from the new one.
    ///
    /// ```no_run
    /// # use plugboard_pdk::{Lazy, Wire, serde_json::Value};
    /// # fn f(state: &mut Lazy<'_, Value>) -> Result<(), String> {
    /// state.set(plugboard_pdk::serde_json::json!({ "title": "replaced" }));
    /// # Ok(()) }
    /// ```
    pub fn set(&mut self, state: S) {
        self.state = Some(state);
        self.changed = true;
    }

    /// Takes the state out (decoding it); [`set`](Lazy::set) one back before replying.
    ///
    /// ```no_run
    /// # use plugboard_pdk::{Lazy, Wire, serde_json::Value};
    /// # fn f(state: &mut Lazy<'_, Value>) -> Result<(), String> {
    /// let mut s = state.take()?;
    /// s["n"] = 1.into();
    /// state.set(s);
    /// # Ok(()) }
    /// ```
    pub fn take(&mut self) -> Result<S, String> {
        self.decode()?;
        self.changed = true;
        self.state.take().ok_or_else(|| taken(self.event))
    }

    fn decode(&mut self) -> Result<(), String> {
        if self.state.is_some() || self.changed {
            return Ok(());
        }
        let invalid =
            |e: plugboard_core::wire::WireError| format!("invalid state for `{}`: {e}", self.event);
        // A state that decodes in place goes into the one the previous call returned, so
        // its strings keep their buffers: most of a step's allocations are gone.
        let state = match (self.reuse, self.spare.take()) {
            (Some(reset), Some(mut s)) => {
                self.wire
                    .decode_into(&self.bytes, &mut s)
                    .map_err(invalid)?;
                reset(&mut s);
                s
            }
            _ => self.wire.decode(&self.bytes).map_err(invalid)?,
        };
        self.state = Some(state);
        Ok(())
    }

    /// The reply's bytes: the state re-encoded if it changed, else the bytes it came in.
    fn finish(self) -> Result<Vec<u8>, String> {
        let out = if self.changed {
            let Some(state) = &self.state else {
                return Err(taken(self.event));
            };
            self.wire
                .encode_sized(state, self.bytes.len() + 64)
                .map_err(|e| format!("cannot encode the reply: {e}"))?
        } else {
            self.bytes
        };
        if self.reuse.is_some()
            && let Some(state) = self.state
        {
            *self.spare = Some(state);
        }
        Ok(out)
    }
}

fn taken(event: &str) -> String {
    format!("the state of `{event}` was taken and not put back with `set`")
}

#[doc(hidden)]
pub fn __call<P: Plugin>(
    plugin: &P,
    event: &str,
    wire: WitWire,
    bytes: Vec<u8>,
    reuse: Option<fn(&mut P::State)>,
    last: &mut Option<P::State>,
) -> Result<WitReply, String> {
    let wire = match wire {
        WitWire::Json => Wire::Json,
        WitWire::Binary => Wire::Binary,
    };
    let mut state = Lazy {
        event,
        wire,
        bytes,
        state: None,
        changed: false,
        reuse,
        spare: last,
    };
    let flow = plugin.call_lazy(event, &mut state)?;
    let out = state.finish()?;
    Ok(match flow {
        Flow::Continue => WitReply::Continue(out),
        Flow::Halt => WitReply::Halt(out),
    })
}

/// Decides whether a state decodes in place: `(&Reuse::<State>::new()).reuse()` in
/// `export_plugin!` resolves to [`ViaInPlace`] for states that implement
/// [`DecodeInPlace`](plugboard_core::wire::DecodeInPlace) and to [`ViaFresh`] otherwise.
#[doc(hidden)]
pub struct Reuse<T>(PhantomData<T>);

impl<T> Reuse<T> {
    #[doc(hidden)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Reuse(PhantomData)
    }
}

#[doc(hidden)]
pub trait ViaInPlace<T> {
    fn reuse(&self) -> Option<fn(&mut T)>;
}

impl<T: plugboard_core::wire::DecodeInPlace> ViaInPlace<T> for Reuse<T> {
    fn reuse(&self) -> Option<fn(&mut T)> {
        Some(T::reset_skipped)
    }
}

#[doc(hidden)]
pub trait ViaFresh<T> {
    fn reuse(&self) -> Option<fn(&mut T)>;
}

impl<T> ViaFresh<T> for &Reuse<T> {
    fn reuse(&self) -> Option<fn(&mut T)> {
        None
    }
}

/// Finds a state type's binary layout where it has one: the `export_plugin!` macro asks
/// `(&Layout::<State>::new()).layout()`, which resolves to [`ViaEvent`] when the state is
/// an event's own state type (the reference events, `event!` structs) and to [`ViaAny`]
/// otherwise (`serde_json::Value`, other serde types: JSON only).
#[doc(hidden)]
pub struct Layout<T>(PhantomData<T>);

impl<T> Layout<T> {
    #[doc(hidden)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Layout(PhantomData)
    }
}

#[doc(hidden)]
pub trait ViaEvent {
    fn layout(&self) -> Option<u64>;
}

impl<T: Event<State = T>> ViaEvent for Layout<T> {
    fn layout(&self) -> Option<u64> {
        T::binary_layout()
    }
}

#[doc(hidden)]
pub trait ViaAny {
    fn layout(&self) -> Option<u64>;
}

impl<T> ViaAny for &Layout<T> {
    fn layout(&self) -> Option<u64> {
        None
    }
}

#[doc(hidden)]
pub fn __record(record: &str) -> Result<PluginRecord, String> {
    serde_json::from_str(record).map_err(|e| format!("invalid record: {e}"))
}

/// The guest type and its one instance, made on the first call (the export macros').
#[doc(hidden)]
#[macro_export]
macro_rules! __guest_instance {
    ($ty:ty, $init:expr) => {
        struct __PlugboardGuest;

        fn __plugboard_instance() -> &'static $ty {
            static INSTANCE: ::std::sync::OnceLock<$ty> = ::std::sync::OnceLock::new();
            INSTANCE.get_or_init(|| $init)
        }
    };
}

/// The `wrapper` export of a component that is not a wrapper: every PDK component has
/// the export (its world has it); this one answers that it is not one.
#[doc(hidden)]
#[macro_export]
macro_rules! __not_a_wrapper_export {
    () => {
        impl $crate::bindings::exports::plugboard::plugin::wrapper::Guest for __PlugboardGuest {
            fn before(
                _event: String,
                _state: String,
            ) -> Result<$crate::bindings::exports::plugboard::plugin::wrapper::Opened, String> {
                Err($crate::__not_a_wrapper())
            }

            fn after(
                _event: String,
                _outcome: $crate::bindings::exports::plugboard::plugin::wrapper::Outcome,
                _token: Vec<u8>,
            ) -> Result<$crate::bindings::exports::plugboard::plugin::wrapper::Closing, String>
            {
                Err($crate::__not_a_wrapper())
            }
        }
    };
}

/// Exports a plugin: `export_plugin!(Type, constructor expression)`. The expression runs
/// once, on the instance's first call; one per crate.
///
/// ```no_run
/// use plugboard_pdk::{Plugin, Reply, serde_json::Value};
///
/// struct Prefixer {
///     prefix: String,
/// }
///
/// impl Plugin for Prefixer {
///     type State = Value;
///
///     fn call(&self, _event: &str, mut s: Value) -> Result<Reply<Value>, String> {
///         if let Some(title) = s["title"].as_str() {
///             s["title"] = format!("{}{title}", self.prefix).into();
///         }
///         Ok(Reply::Continue(s))
///     }
/// }
///
/// plugboard_pdk::export_plugin!(Prefixer, Prefixer { prefix: "[draft] ".into() });
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty, $init:expr) => {
        $crate::__guest_instance!($ty, $init);

        impl $crate::bindings::exports::plugboard::plugin::guest::Guest for __PlugboardGuest {
            fn initial(record: String) -> Result<(), String> {
                let record = $crate::__record(&record)?;
                $crate::Plugin::initial(__plugboard_instance(), &record)
            }

            fn layout(_event: String) -> Option<u64> {
                #[allow(unused_imports)]
                use $crate::{ViaAny as _, ViaEvent as _};
                // Computed once: it hashes the state's JSON Schema.
                static LAYOUT: ::std::sync::OnceLock<Option<u64>> = ::std::sync::OnceLock::new();
                *LAYOUT.get_or_init(|| {
                    (&$crate::Layout::<<$ty as $crate::Plugin>::State>::new()).layout()
                })
            }

            fn call(
                event: String,
                wire: $crate::bindings::exports::plugboard::plugin::guest::Wire,
                state: Vec<u8>,
            ) -> Result<$crate::bindings::exports::plugboard::plugin::guest::Reply, String> {
                #[allow(unused_imports)]
                use $crate::{ViaFresh as _, ViaInPlace as _};
                type State = <$ty as $crate::Plugin>::State;
                // The state the previous call returned, kept for decoding in place.
                ::std::thread_local! {
                    static LAST: ::std::cell::RefCell<Option<State>> =
                        const { ::std::cell::RefCell::new(None) };
                }
                let reuse = (&$crate::Reuse::<State>::new()).reuse();
                let mut last = LAST.with(|l| l.borrow_mut().take());
                let reply =
                    $crate::__call(__plugboard_instance(), &event, wire, state, reuse, &mut last);
                LAST.with(|l| *l.borrow_mut() = last);
                reply
            }

            fn lifecycle(op: String, record: String) -> Result<(), String> {
                let record = $crate::__record(&record)?;
                $crate::Plugin::lifecycle(__plugboard_instance(), &op, &record)
            }

            fn health() -> Result<(), String> {
                $crate::Plugin::health(__plugboard_instance())
            }
        }

        $crate::__not_a_wrapper_export!();

        $crate::bindings::export_guest!(__PlugboardGuest with_types_in $crate::bindings);
    };
}

/// Exports a collector: `export_collector!(Type, constructor expression)`, like
/// [`export_plugin!`]; one per crate. See [`Collector`].
#[macro_export]
macro_rules! export_collector {
    ($ty:ty, $init:expr) => {
        $crate::__guest_instance!($ty, $init);

        impl $crate::bindings::exports::plugboard::plugin::guest::Guest for __PlugboardGuest {
            fn initial(record: String) -> Result<(), String> {
                let record = $crate::__record(&record)?;
                $crate::Collector::initial(__plugboard_instance(), &record)
            }

            fn layout(_event: String) -> Option<u64> {
                None
            }

            fn call(
                event: String,
                wire: $crate::bindings::exports::plugboard::plugin::guest::Wire,
                input: Vec<u8>,
            ) -> Result<$crate::bindings::exports::plugboard::plugin::guest::Reply, String> {
                $crate::__collect(__plugboard_instance(), &event, wire, &input)
            }

            fn lifecycle(op: String, record: String) -> Result<(), String> {
                let record = $crate::__record(&record)?;
                $crate::Collector::lifecycle(__plugboard_instance(), &op, &record)
            }

            fn health() -> Result<(), String> {
                $crate::Collector::health(__plugboard_instance())
            }
        }

        $crate::__not_a_wrapper_export!();

        $crate::bindings::export_guest!(__PlugboardGuest with_types_in $crate::bindings);
    };
}

/// Exports a wrapper: `export_wrapper!(Type, constructor expression)`, like
/// [`export_plugin!`]; one per crate. See [`Wrapper`].
#[macro_export]
macro_rules! export_wrapper {
    ($ty:ty, $init:expr) => {
        $crate::__guest_instance!($ty, $init);

        impl $crate::bindings::exports::plugboard::plugin::guest::Guest for __PlugboardGuest {
            fn initial(record: String) -> Result<(), String> {
                let record = $crate::__record(&record)?;
                $crate::Wrapper::initial(__plugboard_instance(), &record)
            }

            fn layout(_event: String) -> Option<u64> {
                None
            }

            fn call(
                _event: String,
                _wire: $crate::bindings::exports::plugboard::plugin::guest::Wire,
                _state: Vec<u8>,
            ) -> Result<$crate::bindings::exports::plugboard::plugin::guest::Reply, String> {
                Err($crate::__not_a_step())
            }

            fn lifecycle(op: String, record: String) -> Result<(), String> {
                let record = $crate::__record(&record)?;
                $crate::Wrapper::lifecycle(__plugboard_instance(), &op, &record)
            }

            fn health() -> Result<(), String> {
                $crate::Wrapper::health(__plugboard_instance())
            }
        }

        impl $crate::bindings::exports::plugboard::plugin::wrapper::Guest for __PlugboardGuest {
            fn before(
                event: String,
                state: String,
            ) -> Result<$crate::bindings::exports::plugboard::plugin::wrapper::Opened, String> {
                $crate::__before(__plugboard_instance(), &event, &state)
            }

            fn after(
                event: String,
                outcome: $crate::bindings::exports::plugboard::plugin::wrapper::Outcome,
                token: Vec<u8>,
            ) -> Result<$crate::bindings::exports::plugboard::plugin::wrapper::Closing, String> {
                $crate::__after(__plugboard_instance(), &event, outcome, &token)
            }
        }

        $crate::bindings::export_guest!(__PlugboardGuest with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn lazy<'a>(bytes: &[u8], spare: &'a mut Option<Value>) -> Lazy<'a, Value> {
        Lazy {
            event: "ev",
            wire: Wire::Json,
            bytes: bytes.to_vec(),
            state: None,
            changed: false,
            reuse: Some(|_| {}),
            spare,
        }
    }

    // Deliberately not in serde_json's own spelling: a re-encoding would show.
    const IN: &[u8] = br#"{ "n" : 1 }"#;

    #[test]
    fn a_state_not_changed_goes_on_as_the_bytes_it_came_in() {
        let mut spare = None;
        assert_eq!(lazy(IN, &mut spare).finish().unwrap(), IN);
        // Read, not changed: still the same bytes; the decoded state is kept to reuse.
        let mut l = lazy(IN, &mut spare);
        assert_eq!(l.get().unwrap()["n"], 1);
        assert_eq!(l.finish().unwrap(), IN);
        assert_eq!(spare, Some(json!({"n": 1})));
    }

    #[test]
    fn a_changed_state_is_encoded() {
        let mut spare = None;
        let mut l = lazy(IN, &mut spare);
        l.get_mut().unwrap()["n"] = json!(2);
        assert_eq!(l.finish().unwrap(), br#"{"n":2}"#);
        let mut l = lazy(IN, &mut spare);
        l.set(json!("other"));
        assert_eq!(l.finish().unwrap(), br#""other""#);
    }

    #[test]
    fn a_taken_state_must_be_put_back_and_bad_bytes_are_named() {
        let mut spare = None;
        let mut l = lazy(IN, &mut spare);
        l.take().unwrap();
        assert!(l.get().unwrap_err().contains("taken"));
        assert!(l.finish().unwrap_err().contains("taken and not put back"));
        let mut l = lazy(b"{", &mut spare);
        assert!(l.get().unwrap_err().starts_with("invalid state for `ev`"));
    }

    struct Halts;
    impl Plugin for Halts {
        type State = Value;
        fn call(&self, _: &str, mut s: Value) -> Result<Reply<Value>, String> {
            s["halted"] = json!(true);
            Ok(Reply::Halt(s))
        }
    }

    struct Neither;
    impl Plugin for Neither {
        type State = Value;
    }

    #[test]
    fn call_lazy_defaults_to_call() {
        let mut spare = None;
        let reply = __call(&Halts, "ev", WitWire::Json, IN.to_vec(), None, &mut spare).unwrap();
        let WitReply::Halt(out) = reply else {
            panic!("expected a halt")
        };
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap(),
            json!({"n": 1, "halted": true})
        );
        let err = __call(&Neither, "ev", WitWire::Json, IN.to_vec(), None, &mut spare);
        assert!(err.unwrap_err().contains("neither `call` nor `call_lazy`"));
    }
}

/// The plugin's own key-value data (the `kv` capability; the package asks for it under
/// `[capabilities]`, the operator grants it and sets its quota). Kept in the host's
/// database: it survives restarts and upgrades, is shared by every host on that database,
/// and no other plugin can read it.
///
/// ```no_run
/// # fn main() -> Result<(), plugboard_pdk::kv::Error> {
/// use std::time::Duration;
/// // Failures per address, in a one-hour window that starts with the first.
/// let n = plugboard_pdk::kv::increment("fail:10.0.0.1", 1, Some(Duration::from_secs(3600)))?;
/// if n > 10 {
///     plugboard_pdk::log::warn(&format!("10.0.0.1 failed {n} times this hour"));
/// }
/// # Ok(()) }
/// ```
pub mod kv {
    use std::time::Duration;

    use super::bindings::plugboard::plugin::kv as imp;
    pub use super::bindings::plugboard::plugin::types::Error;

    fn ms(ttl: Option<Duration>) -> Option<u64> {
        ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
    }

    /// A key's value; `None` when absent or expired.
    ///
    /// ```no_run
    /// let seen = plugboard_pdk::kv::get("last-seen")?.is_some();
    /// # Ok::<(), plugboard_pdk::kv::Error>(())
    /// ```
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        imp::get(key)
    }

    /// Sets a key's value, expiring after `ttl` if given.
    ///
    /// ```no_run
    /// plugboard_pdk::kv::set("session:42", b"ann", Some(std::time::Duration::from_secs(900)))?;
    /// # Ok::<(), plugboard_pdk::kv::Error>(())
    /// ```
    pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), Error> {
        imp::set(key, value, ms(ttl))
    }

    /// Deletes a key; whether it was there.
    ///
    /// ```no_run
    /// let was_there = plugboard_pdk::kv::delete("session:42")?;
    /// # Ok::<(), plugboard_pdk::kv::Error>(())
    /// ```
    pub fn delete(key: &str) -> Result<bool, Error> {
        imp::delete(key)
    }

    /// Keys starting with `prefix`, in byte order, after `after` if given, at most
    /// `limit` (the host caps it at 1000).
    ///
    /// ```no_run
    /// // Every key under `session:`, a page of 100 at a time.
    /// let mut after: Option<String> = None;
    /// loop {
    ///     let page = plugboard_pdk::kv::list_keys("session:", after.as_deref(), 100)?;
    ///     let Some(last) = page.last().cloned() else { break };
    ///     after = Some(last);
    /// }
    /// # Ok::<(), plugboard_pdk::kv::Error>(())
    /// ```
    pub fn list_keys(prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<String>, Error> {
        imp::list_keys(prefix, after, limit)
    }

    /// Adds `delta` to a counter (absent: 0), atomically across every host; the new
    /// value. A counter that starts now expires after `ttl` if given.
    ///
    /// ```no_run
    /// let n = plugboard_pdk::kv::increment("calls", 1, None)?;
    /// # Ok::<(), plugboard_pdk::kv::Error>(())
    /// ```
    pub fn increment(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, Error> {
        imp::increment(key, delta, ms(ttl))
    }

    /// Replaces the value with `new` (`None`: deletes it) only if it is `expected` now
    /// (`None`: absent); whether it did.
    ///
    /// ```no_run
    /// // Takes a lease only if nobody holds it.
    /// let mine = plugboard_pdk::kv::compare_and_swap("lease", None, Some(b"host-a"), None)?;
    /// # Ok::<(), plugboard_pdk::kv::Error>(())
    /// ```
    pub fn compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, Error> {
        imp::compare_and_swap(key, expected, new, ms(ttl))
    }
}

/// Outbound HTTP (the `http` capability, contract 0.3): requests to the origins the
/// operator granted the package, through the standard `wasi:http/outgoing-handler` (so a
/// WASI HTTP client of your choice works too). The host checks the origin and the address,
/// caps the bodies and ends the exchange at the call's deadline; redirects are returned,
/// not followed. Plugins that call out belong on events fired in the background
/// (`spawn`), which do not hold up the caller.
///
/// ```no_run
/// # fn main() -> Result<(), plugboard_pdk::http::Error> {
/// let body = br#"{"text": "a save failed"}"#;
/// let r = plugboard_pdk::http::post("https://hooks.example.com/notify", "application/json", body)?;
/// if r.status >= 400 {
///     plugboard_pdk::log::warn(&format!("the hook answered {}", r.status));
/// }
/// # Ok(()) }
/// ```
pub mod http {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use wasip2::io::streams::StreamError;

    /// A response, its body read whole.
    ///
    /// ```no_run
    /// let r = plugboard_pdk::http::get("https://api.example.com/status")?;
    /// let json = r.headers.iter().any(|(k, v)| k == "content-type" && v.starts_with(b"application/json"));
    /// # let _ = json; Ok::<(), plugboard_pdk::http::Error>(())
    /// ```
    #[derive(Clone, Debug)]
    pub struct Response {
        /// The status code.
        pub status: u16,
        /// The headers, as sent.
        pub headers: Vec<(String, Vec<u8>)>,
        /// The body.
        pub body: Vec<u8>,
    }

    /// Why a request failed.
    ///
    /// ```no_run
    /// match plugboard_pdk::http::get("https://api.example.com/status") {
    ///     Ok(r) => plugboard_pdk::log::info(&format!("status {}", r.status)),
    ///     Err(plugboard_pdk::http::Error::Http(code)) if code.contains("HttpRequestDenied") => {
    ///         plugboard_pdk::log::warn("this origin is not granted")
    ///     }
    ///     Err(e) => plugboard_pdk::log::error(&e.to_string()),
    /// }
    /// ```
    #[derive(Clone, Debug, PartialEq)]
    pub enum Error {
        /// The URL is not `http(s)://host[:port]/path`.
        Url(String),
        /// The host refused or failed it: `HttpRequestDenied` (not granted, or an address
        /// the operator did not name), `DestinationIpProhibited`, `ConnectionTimeout`,
        /// `HttpResponseBodySize`… (the `wasi:http` error code).
        Http(String),
    }

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Error::Url(m) => write!(f, "bad URL: {m}"),
                Error::Http(m) => write!(f, "HTTP request failed: {m}"),
            }
        }
    }

    impl std::error::Error for Error {}

    fn http(e: impl std::fmt::Debug) -> Error {
        Error::Http(format!("{e:?}"))
    }

    /// Sends a request and reads the whole response.
    ///
    /// ```no_run
    /// let r = plugboard_pdk::http::request(
    ///     "PUT",
    ///     "https://api.example.com/items/7",
    ///     &[("content-type", "application/json"), ("authorization", "Bearer t")],
    ///     br#"{"done": true}"#,
    /// )?;
    /// let ok = r.status < 300;
    /// # Ok::<(), plugboard_pdk::http::Error>(())
    /// ```
    pub fn request(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Error> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::Url(format!("`{url}` has no scheme")))?;
        let scheme = match scheme {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => return Err(Error::Url(format!("scheme `{other}`"))),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let mut fields: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect();
        // A body of known length is sent with it (not chunked): every server reads that.
        if !body.is_empty()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            fields.push(("content-length".into(), body.len().to_string().into_bytes()));
        }
        let fields = Fields::from_list(&fields).map_err(http)?;
        let req = OutgoingRequest::new(fields);
        let method = match method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_owned()),
        };
        req.set_method(&method)
            .map_err(|()| Error::Url(format!("method `{method:?}`")))?;
        req.set_scheme(Some(&scheme))
            .map_err(|()| Error::Url("scheme".into()))?;
        req.set_authority(Some(authority))
            .map_err(|()| Error::Url(format!("authority `{authority}`")))?;
        req.set_path_with_query(Some(&path))
            .map_err(|()| Error::Url(format!("path `{path}`")))?;
        let out = req
            .body()
            .map_err(|()| Error::Http("no request body".into()))?;
        let future = outgoing_handler::handle(req, None).map_err(http)?;
        // A request the host refuses closes the body stream at once: the response's error
        // says why, so a failed write is reported only if the response has none.
        let written = (|| {
            let stream = out
                .write()
                .map_err(|()| Error::Http("no body stream".into()))?;
            for chunk in body.chunks(4096) {
                stream.blocking_write_and_flush(chunk).map_err(http)?;
            }
            drop(stream);
            OutgoingBody::finish(out, None).map_err(http)
        })();
        future.subscribe().block();
        let response = match future.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(code))) => return Err(http(code)),
            Some(Err(())) | None => return Err(Error::Http("no response".into())),
        };
        written?;
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response
            .consume()
            .map_err(|()| Error::Http("no response body".into()))?;
        let mut data = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| Error::Http("no response body stream".into()))?;
            loop {
                match stream.blocking_read(64 << 10) {
                    Ok(chunk) => data.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(Error::Http(e.to_debug_string()));
                    }
                }
            }
        }
        if let Some(Err(code)) = IncomingBody::finish(incoming).get().and_then(|r| r.ok()) {
            return Err(http(code));
        }
        Ok(Response {
            status,
            headers,
            body: data,
        })
    }

    /// `GET url`.
    ///
    /// ```no_run
    /// let r = plugboard_pdk::http::get("https://api.example.com/status")?;
    /// let text = String::from_utf8_lossy(&r.body);
    /// # Ok::<(), plugboard_pdk::http::Error>(())
    /// ```
    pub fn get(url: &str) -> Result<Response, Error> {
        request("GET", url, &[], &[])
    }

    /// `POST url` with a body of the given content type.
    ///
    /// ```no_run
    /// let r = plugboard_pdk::http::post("https://api.example.com/events", "text/plain", b"saved")?;
    /// # Ok::<(), plugboard_pdk::http::Error>(())
    /// ```
    pub fn post(url: &str, content_type: &str, body: &[u8]) -> Result<Response, Error> {
        request("POST", url, &[("content-type", content_type)], body)
    }
}

/// Firing events (the `emit` capability, contract 0.3): fire-and-forget calls of the
/// events the operator granted the package, run in the background after this call. A
/// chain of emits deeper than the host's limit (a loop) is refused with `denied`.
///
/// ```no_run
/// # fn main() -> Result<(), plugboard_pdk::emit::Error> {
/// plugboard_pdk::emit::emit(
///     "on_user_login_failure",
///     &plugboard_pdk::serde_json::json!({ "ip": "10.0.0.1" }),
/// )?;
/// # Ok(()) }
/// ```
pub mod emit {
    pub use super::bindings::plugboard::plugin::types::Error;

    /// Queues a call of `event` with `state`.
    ///
    /// ```no_run
    /// plugboard_pdk::emit::emit("on_cache_clear", &plugboard_pdk::serde_json::json!({ "key": "home" }))?;
    /// # Ok::<(), plugboard_pdk::emit::Error>(())
    /// ```
    pub fn emit(event: &str, state: &impl serde::Serialize) -> Result<(), Error> {
        let state = serde_json::to_string(state).map_err(|e| Error::Invalid(e.to_string()))?;
        super::bindings::plugboard::plugin::events::emit(event, &state)
    }
}
