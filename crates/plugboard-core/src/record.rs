//! The registered record of a plugin (Mishka's `PluginState`) and how it is registered.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// A plugin's lifecycle status.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Known, not started yet.
    Registered,
    /// Running in its event's chain.
    Started,
    /// Running in its event's chain after a restart.
    Restarted,
    /// Stopped by an operator (or by the failure threshold). Sticky: only `enable` leaves it.
    Stopped,
    /// Wants to run, but a hard dependency is not active.
    Held,
}

impl Status {
    /// Whether the plugin runs in its chain (given its code is loaded).
    pub fn is_active(self) -> bool {
        matches!(self, Status::Started | Status::Restarted)
    }

    /// Whether the plugin wants to run (it is active, or held waiting for dependencies).
    pub fn wants_to_run(self) -> bool {
        matches!(self, Status::Started | Status::Restarted | Status::Held)
    }

    /// The status's name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Registered => "registered",
            Status::Started => "started",
            Status::Restarted => "restarted",
            Status::Stopped => "stopped",
            Status::Held => "held",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a plugin depends on the plugins it names.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependType {
    /// The plugin is held until every dependency is active.
    Hard,
    /// Dependencies only order the chain: they run first when present.
    #[default]
    Soft,
}

impl fmt::Display for DependType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DependType::Hard => "hard",
            DependType::Soft => "soft",
        })
    }
}

/// A plugin's priority, `0..=100`; lower runs first.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "u8", into = "u8")]
pub struct Priority(u8);

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Priority {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .minimum(Some(Priority::FIRST.0))
            .maximum(Some(Priority::LAST.0))
            .description(Some("A plugin's priority; lower runs first."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Priority {}

/// A priority outside `0..=100`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("priority {0} is out of range: it must be between 0 and 100")]
pub struct PriorityError(pub u64);

impl Priority {
    /// The highest priority (runs first).
    pub const FIRST: Priority = Priority(0);
    /// The default priority.
    pub const DEFAULT: Priority = Priority(50);
    /// The lowest priority (runs last).
    pub const LAST: Priority = Priority(100);

    /// A priority, if `value` is within `0..=100`.
    pub fn new(value: u64) -> Result<Self, PriorityError> {
        if value <= 100 {
            Ok(Priority(value as u8))
        } else {
            Err(PriorityError(value))
        }
    }

    /// The numeric value.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::DEFAULT
    }
}

impl TryFrom<u8> for Priority {
    type Error = PriorityError;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Priority::new(value.into())
    }
}

impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The registered record of a plugin: Mishka's `PluginState`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PluginRecord {
    /// Unique name.
    pub name: String,
    /// The event whose chain the plugin joins.
    pub event: String,
    /// Lower runs first.
    pub priority: Priority,
    /// The runtime status.
    pub status: Status,
    /// Whether `depends` holds the plugin (hard) or only orders it (soft).
    pub depend_type: DependType,
    /// Names of the plugins this one depends on, on any event.
    pub depends: Vec<String>,
    /// Free data for the plugin (Mishka's `extra`: a list of maps).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub extra: Vec<Map<String, Value>>,
    /// When the record was first registered.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub inserted_at: OffsetDateTime,
    /// When the record last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: OffsetDateTime,
}

/// The key of a record's `extra` under which the installer names the package that owns it.
pub const PACKAGE_KEY: &str = "package";

impl PluginRecord {
    /// The package that owns this record (installed it), if one does.
    pub fn package(&self) -> Option<&str> {
        self.extra
            .iter()
            .find_map(|m| m.get(PACKAGE_KEY).and_then(Value::as_str))
    }

    /// Whether this plugin's dependencies hold it (hard) and it names `other`.
    pub fn hard_depends_on(&self, other: &str) -> bool {
        self.depend_type == DependType::Hard && self.depends.iter().any(|d| d == other)
    }
}

/// What the code says about a plugin when it registers it; the status is the runtime's.
///
/// ```
/// use plugboard_core::Registration;
/// let reg = Registration::new("audit").priority(10).hard_depends(["session"]);
/// assert_eq!(reg.name, "audit");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Unique plugin name.
    pub name: String,
    /// Lower runs first; default 50.
    #[serde(default)]
    pub priority: Priority,
    /// Hard or soft; default soft.
    #[serde(default)]
    pub depend_type: DependType,
    /// Plugins this one depends on.
    #[serde(default)]
    pub depends: Vec<String>,
    /// Free data for the plugin.
    #[serde(default)]
    pub extra: Vec<Map<String, Value>>,
}

impl Registration {
    /// A registration with default priority (50), no dependencies and no extra data.
    pub fn new(name: impl Into<String>) -> Self {
        Registration {
            name: name.into(),
            priority: Priority::DEFAULT,
            depend_type: DependType::Soft,
            depends: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Sets the priority. Values above 100 are clamped to 100; use [`Priority::new`] to
    /// reject them instead.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Priority(priority.min(100));
        self
    }

    /// Depends on these plugins, holding this one until they are all active.
    pub fn hard_depends<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depend_type = DependType::Hard;
        self.depends = names.into_iter().map(Into::into).collect();
        self
    }

    /// Runs after these plugins when they are present, without waiting for them.
    pub fn soft_depends<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depend_type = DependType::Soft;
        self.depends = names.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one map of free data.
    pub fn extra(mut self, extra: Map<String, Value>) -> Self {
        self.extra.push(extra);
        self
    }
}

/// Why `name` may not name an event or a plugin: the rules are 1 to 128 bytes of ASCII
/// letters, digits and `_ - . : /` (names travel in URLs, logs and SQL).
pub fn invalid_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 128 {
        Some("it is longer than 128 bytes")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'))
    {
        Some("only ASCII letters, digits and `_ - . : /` are allowed")
    } else {
        None
    }
}
