//! Collecting events: every plugin is given the same input and answers with a
//! contribution; the caller gets them all, each with the plugin that gave it.
//!
//! Where a waterfall passes one state from plugin to plugin, a collecting event asks
//! each of its plugins, in chain order, the same question (Joomla's `onContentSearch`:
//! "what do you find for these words?"; pluggy's hooks that return a list). A plugin may
//! also end the collection (the halt of this mode): no plugin after it is asked.
//!
//! ```
//! use plugboard_core::{Collect, Collector, Context, Contribute};
//!
//! plugboard_core::event! {
//!     /// Asks every plugin for the pages matching a query.
//!     pub struct OnSiteSearch("on_site_search", section = "content") {
//!         /// The words searched for.
//!         pub query: String,
//!     }
//! }
//!
//! impl Collect for OnSiteSearch {
//!     type Output = String;
//! }
//!
//! /// Finds the FAQ page for questions.
//! struct Faq;
//!
//! impl Collector<OnSiteSearch> for Faq {
//!     fn collect(&self, input: &OnSiteSearch, _cx: &Context<'_>) -> Contribute<String> {
//!         if input.query.ends_with('?') {
//!             Contribute::Add("/faq".into())
//!         } else {
//!             Contribute::Pass
//!         }
//!     }
//! }
//! ```

use std::future::Future;

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

use crate::event::{Event, EventInfo, Mode, schema_of};
use crate::plugin::Context;

/// An event whose plugins each answer the same input with a contribution of type
/// [`Collect::Output`], instead of passing a state along.
pub trait Collect: Event {
    /// One plugin's contribution.
    type Output: Serialize + DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static;

    /// The event's description, with its mode and the contribution's schema.
    fn collect_info() -> EventInfo {
        let mut info = Self::info();
        info.mode = Mode::Collect;
        info.output = Some(schema_of::<Self::Output>());
        info
    }
}

/// A collecting plugin's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "an answer carries the plugin's contribution"]
pub enum Contribute<O> {
    /// Add this to the results; the next plugin is asked.
    Add(O),
    /// Nothing to add; the next plugin is asked.
    Pass,
    /// Add this, then end the collection: no plugin after this one is asked.
    Last(O),
    /// End the collection without adding anything.
    Stop,
}

impl<O> Contribute<O> {
    /// Whether the answer ends the collection.
    pub fn ends(&self) -> bool {
        matches!(self, Contribute::Last(_) | Contribute::Stop)
    }

    /// The contribution, if there is one.
    pub fn into_output(self) -> Option<O> {
        match self {
            Contribute::Add(o) | Contribute::Last(o) => Some(o),
            Contribute::Pass | Contribute::Stop => None,
        }
    }
}

/// A plugin on a collecting event `E`: answers the caller's input with a contribution.
/// The callbacks are those of [`Plugin`](crate::Plugin).
pub trait Collector<E: Collect>: Send + Sync + 'static {
    /// Answers one call of the event. The input is borrowed: every plugin gets the same.
    fn collect(&self, input: &E::State, cx: &Context<'_>) -> Contribute<E::Output>;

    crate::__lifecycle_callbacks!();
}

/// A plugin on a collecting event `E` whose answer does I/O and is awaited.
pub trait AsyncCollector<E: Collect>: Send + Sync + 'static {
    /// Answers one call of the event.
    fn collect(
        &self,
        input: &E::State,
        cx: &Context<'_>,
    ) -> impl Future<Output = Contribute<E::Output>> + Send;

    crate::__lifecycle_callbacks!();
}
