//! # plugboard-core
//!
//! The traits and types that Plugboard plugin authors and host applications share, and
//! nothing else: no IO, no async runtime, no engine. An [`Event`] is a contract (a name,
//! a section, docs and a typed, serialisable state); a [`Plugin`] takes that state and
//! replies [`Reply::Continue`] or [`Reply::Halt`]; a [`PluginRecord`] is what the runtime
//! keeps about a registered plugin. The [`reference`](mod@reference) module holds the 32 reference events
//! of Mishka Installer 0.0.3.
//!
//! ```
//! use plugboard_core::{Context, Plugin, Reply};
//!
//! plugboard_core::event! {
//!     /// Fires when a comment is posted.
//!     pub struct OnComment("on_comment", section = "content") {
//!         /// The comment's text.
//!         pub text: String,
//!     }
//! }
//!
//! /// Refuses comments that shout.
//! struct NoShouting;
//!
//! impl Plugin<OnComment> for NoShouting {
//!     fn call(&self, state: OnComment, _cx: &Context<'_>) -> Reply<OnComment> {
//!         if state.text.chars().any(char::is_lowercase) {
//!             Reply::Continue(state)
//!         } else {
//!             Reply::Halt(state)
//!         }
//!     }
//! }
//! ```
//!
//! The engine that runs plugins lives in `plugboard-engine`; most users depend on the
//! `plugboard` facade, which re-exports both.

mod collect;
mod event;
mod plugin;
mod record;
pub mod reference;
pub mod wire;

pub use collect::{AsyncCollector, Collect, Collector, Contribute};
pub use event::{Event, EventInfo, Json, Mode, schema_of};
pub use plugin::{
    AsyncPlugin, Context, EMPTY_META, FnPlugin, MAX_MESSAGE, Meta, Plugin, Reason, Reply, bounded,
    from_fn,
};
pub use record::{
    DependType, PACKAGE_KEY, PluginRecord, Priority, PriorityError, Registration, Status,
    invalid_name,
};
pub use wire::Wire;

/// The newest version of the WIT contract, `plugboard:plugin@0.4.0`, between the host and a
/// WebAssembly plugin: what a package's `contract` requirement is checked against and
/// what a component's `plugboard:plugin/guest` export must be compatible with. The one
/// place it is written (a test checks that `wit/plugin.wit` says the same).
pub const CONTRACT_VERSION: &str = "0.4.0";

/// Every contract version a host serves, newest first: components built against an older
/// one keep running unchanged.
pub const CONTRACT_VERSIONS: &[&str] = &[CONTRACT_VERSION, "0.3.0", "0.2.0"];

/// Re-exported so that hosts and plugins name the same versions.
pub use serde_json;
pub use time;
pub use uuid;
