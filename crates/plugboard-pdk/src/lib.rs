//! # plugboard-pdk
//!
//! The guest side of Plugboard's WebAssembly plugins: implement [`Plugin`] for a struct
//! and export it with [`export_plugin!`]; build the crate as a `cdylib` for
//! `wasm32-wasip2`. The state arrives typed (reference events come from
//! [`plugboard_core::reference`]) and leaves as the reply.
//!
//! ```ignore
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
//! The host grants nothing but [`log`], [`settings`] and [`now_ms`]: no files, network,
//! environment or processes. Calls run under the host's limits (memory, deadline, reply
//! size); exceeding one ends the call with an error the host reports against the plugin.

// The bindings wit-bindgen generates for the WIT contract use `unsafe` for the canonical
// ABI, and so does the small-block allocator (`alloc.rs`); nothing else in this crate does.
#![allow(unsafe_code)]

/// The generated bindings of the `plugboard:plugin` contract.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_guest",
        default_bindings_module: "plugboard_pdk::bindings",
    });
}

use std::marker::PhantomData;

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

pub use plugboard_core::{Event, PluginRecord, Reply, Wire, reference};
pub use serde_json;

/// A sandboxed plugin. Only `call` is required.
pub trait Plugin: Send + Sync + 'static {
    /// The event's state: a reference event's type, your own serde type, or
    /// `serde_json::Value` for any event.
    type State: Serialize + DeserializeOwned;

    /// Handles one call of `event`.
    fn call(&self, event: &str, state: Self::State) -> Result<Reply<Self::State>, String>;

    /// Called when the plugin is registered; an error refuses the registration.
    fn initial(&self, record: &PluginRecord) -> Result<(), String> {
        let _ = record;
        Ok(())
    }

    /// A lifecycle callback (`start`, `stop`, `restart`, `delete`, `unregister`); an
    /// error refuses the operation.
    fn lifecycle(&self, op: &str, record: &PluginRecord) -> Result<(), String> {
        let _ = (op, record);
        Ok(())
    }

    /// Whether the plugin can do its job.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Writes a log line through the host.
pub mod log {
    use super::host::{Level, log};

    /// At info level.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    /// At warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    /// At error level.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }

    /// At debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
}

/// The plugin's own settings (JSON), if the operator set any.
pub fn settings() -> Option<String> {
    host::settings()
}

/// Milliseconds since the Unix epoch, from the host.
pub fn now_ms() -> u64 {
    host::now_ms()
}

#[doc(hidden)]
pub fn __call<P: Plugin>(
    plugin: &P,
    event: &str,
    wire: WitWire,
    bytes: &[u8],
    reuse: Option<fn(&mut P::State)>,
    last: &mut Option<P::State>,
) -> Result<WitReply, String> {
    let wire = match wire {
        WitWire::Json => Wire::Json,
        WitWire::Binary => Wire::Binary,
    };
    let invalid = |e: plugboard_core::wire::WireError| format!("invalid state for `{event}`: {e}");
    // A state that decodes in place goes into the one the previous call returned, so its
    // strings keep their buffers: most of a step's allocations are gone.
    let state = match (reuse, last.take()) {
        (Some(reset), Some(mut s)) => {
            wire.decode_into(bytes, &mut s).map_err(invalid)?;
            reset(&mut s);
            s
        }
        _ => wire.decode(bytes).map_err(invalid)?,
    };
    let (halt, state) = match plugin.call(event, state)? {
        Reply::Continue(s) => (false, s),
        Reply::Halt(s) => (true, s),
    };
    let out = wire
        .encode_sized(&state, bytes.len() + 64)
        .map_err(|e| format!("cannot encode the reply: {e}"))?;
    if reuse.is_some() {
        *last = Some(state);
    }
    Ok(if halt {
        WitReply::Halt(out)
    } else {
        WitReply::Continue(out)
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

/// Exports a plugin: `export_plugin!(Type, constructor expression)`.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty, $init:expr) => {
        struct __PlugboardGuest;

        fn __plugboard_instance() -> &'static $ty {
            static INSTANCE: ::std::sync::OnceLock<$ty> = ::std::sync::OnceLock::new();
            INSTANCE.get_or_init(|| $init)
        }

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
                    $crate::__call(__plugboard_instance(), &event, wire, &state, reuse, &mut last);
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

        $crate::bindings::export_guest!(__PlugboardGuest with_types_in $crate::bindings);
    };
}
