//! Events: the contracts between a host and its plugins.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

/// An event: a named place in the host where plugins may act, with a typed state.
///
/// Implement it with [`event!`](crate::event!) rather than by hand. The state must be
/// serialisable so that the same event can be called by name with JSON (CLI, HTTP,
/// WebAssembly plugins), and must describe itself as a JSON Schema so that tools and
/// plugin authors in other languages can see the contract.
pub trait Event: Send + Sync + 'static {
    /// The event's unique name, e.g. `on_user_after_save_failure`.
    const NAME: &'static str;
    /// The section the event belongs to, e.g. `user` or `content`.
    const SECTION: &'static str;
    /// When the event fires, for humans.
    const DOC: &'static str;
    /// The state that travels through the event's chain of plugins.
    type State: Serialize + DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static;
    /// Whether the state can cross into sandboxed plugins in the binary layout (see
    /// [`wire`](crate::wire)); declare with `event!`'s `binary` flag.
    const BINARY: bool = false;

    /// The fingerprint of the state's binary layout, when it has one.
    fn binary_layout() -> Option<u64> {
        Self::BINARY.then(|| crate::wire::fingerprint(&schema_of::<Self::State>()))
    }

    /// The event's description, as listed in catalogues.
    fn info() -> EventInfo {
        EventInfo {
            name: Cow::Borrowed(Self::NAME),
            section: Cow::Borrowed(Self::SECTION),
            doc: Cow::Borrowed(Self::DOC.trim()),
            schema: schema_of::<Self::State>(),
            mode: Mode::Waterfall,
            output: None,
        }
    }
}

/// How an event's chain runs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each plugin takes the state from the one before it and replies continue or halt.
    #[default]
    Waterfall,
    /// Each plugin is given the same input and answers with a contribution; the caller
    /// gets them all (see [`Collect`](crate::Collect)).
    Collect,
}

impl Mode {
    /// Whether it is the default, [`Mode::Waterfall`].
    pub fn is_waterfall(&self) -> bool {
        *self == Mode::Waterfall
    }
}

/// The JSON Schema of a state type, as a JSON value.
pub fn schema_of<T: JsonSchema>() -> serde_json::Value {
    schemars::schema_for!(T).to_value()
}

/// What a catalogue knows about an event, typed or dynamic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventInfo {
    /// The event's unique name.
    pub name: Cow<'static, str>,
    /// Its section.
    pub section: Cow<'static, str>,
    /// When it fires.
    pub doc: Cow<'static, str>,
    /// The JSON Schema of its state (for a collecting event, the input every plugin
    /// is given).
    pub schema: serde_json::Value,
    /// How its chain runs.
    #[serde(skip_serializing_if = "Mode::is_waterfall")]
    pub mode: Mode,
    /// For a collecting event, the JSON Schema of one plugin's contribution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
}

impl EventInfo {
    /// Describes a dynamic event (one declared at run time, whose state is free JSON).
    pub fn dynamic(
        name: impl Into<Cow<'static, str>>,
        section: impl Into<Cow<'static, str>>,
        doc: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            name: name.into(),
            section: section.into(),
            doc: doc.into(),
            schema: serde_json::json!({ "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "AnyValue" }),
            mode: Mode::Waterfall,
            output: None,
        }
    }

    /// Makes it a collecting event whose contributions have this schema.
    pub fn collecting(mut self, output: serde_json::Value) -> Self {
        self.mode = Mode::Collect;
        self.output = Some(output);
        self
    }

    /// Replaces the schema of a dynamic event with a known one.
    pub fn with_schema(mut self, schema: serde_json::Value) -> Self {
        self.schema = schema;
        self
    }

    /// The names of the state's top-level fields, in schema order, for listings.
    pub fn fields(&self) -> Vec<String> {
        self.schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// The state type of plugins that work on raw JSON: dynamic events, and bridges such as
/// WebAssembly plugins that may join any event's chain.
///
/// A `Plugin<Json>` can be registered on any event by name; on a typed event the engine
/// converts the state to JSON only around that plugin's step.
pub struct Json;

impl Event for Json {
    const NAME: &'static str = "json";
    const SECTION: &'static str = "dynamic";
    const DOC: &'static str = "Any event, seen as JSON.";
    type State = serde_json::Value;
}

/// Declares an event: a state type plus its name, section and docs.
///
/// Two forms. The first defines the state struct itself (deriving `Clone`, `Debug`,
/// `Serialize`, `Deserialize` and `JsonSchema`; the calling crate needs `serde` and
/// `schemars` as dependencies) and makes it its own event, as Mishka's reference
/// modules do:
///
/// ```
/// plugboard_core::event! {
///     /// Fires when a visitor signs up for the newsletter.
///     pub struct OnNewsletterSignup("on_newsletter_signup", section = "marketing") {
///         /// The address given.
///         pub email: String,
///     }
/// }
/// # use plugboard_core::Event;
/// assert_eq!(OnNewsletterSignup::NAME, "on_newsletter_signup");
/// ```
///
/// Add `binary` after the section (`section = "marketing", binary`) to let sandboxed
/// plugins receive the state in the binary layout; the state must then follow the rules
/// of [`wire`](crate::wire).
///
/// The second makes a marker type that names an event whose state is an existing type,
/// so that several events can share one payload:
///
/// ```
/// plugboard_core::event! {
///     /// Fires before an article is shown.
///     pub OnArticleShow("on_article_show", section = "content") => plugboard_core::reference::Payload;
/// }
/// ```
#[macro_export]
macro_rules! event {
    (
        $(#[doc = $doc:literal])*
        $vis:vis struct $ty:ident($name:literal, section = $section:literal $(, $binary:ident)?) {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $fty:ty ),* $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Clone, Debug, ::serde::Serialize, ::serde::Deserialize, ::schemars::JsonSchema)]
        $vis struct $ty {
            $( $(#[$fmeta])* $fvis $field : $fty ),*
        }

        impl $crate::Event for $ty {
            const NAME: &'static str = $name;
            const SECTION: &'static str = $section;
            const DOC: &'static str = concat!("" $(, $doc, "\n")*);
            type State = Self;
            const BINARY: bool = $crate::event!(@binary $($binary)?);
        }
    };
    (@binary) => { false };
    (@binary binary) => { true };
    (
        $(#[doc = $doc:literal])*
        $vis:vis $ty:ident($name:literal, section = $section:literal) => $state:ty;
    ) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, Default)]
        $vis struct $ty;

        impl $crate::Event for $ty {
            const NAME: &'static str = $name;
            const SECTION: &'static str = $section;
            const DOC: &'static str = concat!("" $(, $doc, "\n")*);
            type State = $state;
        }
    };
}
