//! The field types shared by the reference events.

use std::any::Any;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A client's IP address.
///
/// Serialised as a string (`"1.2.3.4"`, `"::1"`). On input it also accepts the tuple
/// forms Mishka used: `[1, 2, 3, 4]` for IPv4 and eight 16-bit groups for IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ip(pub IpAddr);

impl Ip {
    /// The loopback address `127.0.0.1`.
    pub const LOCALHOST: Ip = Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

impl From<IpAddr> for Ip {
    fn from(ip: IpAddr) -> Self {
        Ip(ip)
    }
}

impl FromStr for Ip {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Ip)
    }
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Ip {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&self.0)
        } else {
            // The binary layout carries the address's bytes: no formatting, no parsing.
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Ip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IpVisitor;
        impl<'de> Visitor<'de> for IpVisitor {
            type Value = Ip;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP address as a string (\"1.2.3.4\") or a tuple of 4 bytes or 8 16-bit groups")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ip, E> {
                v.parse()
                    .map_err(|_| E::custom(format!("invalid IP address {v:?}")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ip, A::Error> {
                let mut parts: Vec<u16> = Vec::with_capacity(8);
                while let Some(p) = seq.next_element::<u16>()? {
                    if parts.len() == 8 {
                        return Err(de::Error::invalid_length(9, &self));
                    }
                    parts.push(p);
                }
                match parts.len() {
                    4 => {
                        let mut b = [0u8; 4];
                        for (slot, p) in b.iter_mut().zip(&parts) {
                            *slot = u8::try_from(*p).map_err(|_| {
                                de::Error::custom(format!("IPv4 tuple part {p} is over 255"))
                            })?;
                        }
                        Ok(Ip(IpAddr::V4(Ipv4Addr::from(b))))
                    }
                    8 => {
                        let mut g = [0u16; 8];
                        g.copy_from_slice(&parts);
                        Ok(Ip(IpAddr::V6(Ipv6Addr::from(g))))
                    }
                    n => Err(de::Error::invalid_length(n, &self)),
                }
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(IpVisitor)
        } else {
            IpAddr::deserialize(d).map(Ip)
        }
    }
}

impl JsonSchema for Ip {
    fn schema_name() -> Cow<'static, str> {
        "Ip".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An IP address: a string, or a tuple of 4 bytes (IPv4) or 8 16-bit groups (IPv6).",
            "anyOf": [
                { "type": "string", "format": "ipv4" },
                { "type": "string", "format": "ipv6" },
                { "type": "array", "items": { "type": "integer", "minimum": 0, "maximum": 255 }, "minItems": 4, "maxItems": 4 },
                { "type": "array", "items": { "type": "integer", "minimum": 0, "maximum": 65535 }, "minItems": 8, "maxItems": 8 }
            ]
        })
    }
}

/// Which side of the host an action came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// The browser-facing site.
    #[default]
    Html,
    /// The JSON API.
    Api,
}

/// Whether a record was created or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaveStatus {
    /// Created.
    Added,
    /// Changed.
    Edited,
}

/// Who changed a user: another user (by id), or the user themself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModifierUser {
    /// Another user, by id.
    User(Uuid),
    /// The user changed their own record (Mishka's `:self`).
    SelfUser,
}

impl Serialize for ModifierUser {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            // The binary layout: the id's 16 bytes, or none for "self".
            let id = match self {
                ModifierUser::User(id) => Some(id),
                ModifierUser::SelfUser => None,
            };
            return id.serialize(s);
        }
        match self {
            ModifierUser::User(id) => s.collect_str(id),
            ModifierUser::SelfUser => s.serialize_str("self"),
        }
    }
}

impl<'de> Deserialize<'de> for ModifierUser {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return Ok(
                Option::<Uuid>::deserialize(d)?.map_or(ModifierUser::SelfUser, ModifierUser::User)
            );
        }
        let s = Cow::<'de, str>::deserialize(d)?;
        if s == "self" {
            return Ok(ModifierUser::SelfUser);
        }
        Uuid::parse_str(&s).map(ModifierUser::User).map_err(|_| {
            de::Error::custom(format!(
                "modifier_user must be a UUID or \"self\", got {s:?}"
            ))
        })
    }
}

impl JsonSchema for ModifierUser {
    fn schema_name() -> Cow<'static, str> {
        "ModifierUser".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The id of the user who made the change, or \"self\".",
            "oneOf": [ { "type": "string", "format": "uuid" }, { "const": "self" } ]
        })
    }
}

/// A structured error, as the reference failure events carry it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorPayload {
    /// A stable, machine-readable code, e.g. `validation_failed`.
    pub code: String,
    /// A human message.
    pub message: String,
    /// Field-level messages, for validation errors (field name → messages).
    #[serde(default)]
    pub fields: BTreeMap<String, Vec<String>>,
    /// Anything else the host wants to pass along.
    #[serde(default, with = "crate::wire::free_json")]
    #[schemars(with = "Value")]
    pub details: Value,
}

impl ErrorPayload {
    /// An error with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorPayload {
            code: code.into(),
            message: message.into(),
            ..Default::default()
        }
    }

    /// Adds a message for one field.
    pub fn field(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.fields
            .entry(field.into())
            .or_default()
            .push(message.into());
        self
    }
}

/// The request a reference event came from, in a form that can cross process and
/// language boundaries (Mishka passed a `Plug.Conn` or a LiveView socket).
///
/// Native plugins can reach the host's own request object with [`Conn::native`] when the
/// host attached one with [`Conn::with_native`]; it is skipped when serialised.
#[derive(Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Conn {
    /// HTTP method, e.g. `POST`; empty for non-HTTP sources (e.g. a websocket).
    #[serde(default)]
    pub method: String,
    /// Request path, e.g. `/users`.
    #[serde(default)]
    pub path: String,
    /// Request headers, lower-cased names.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The peer's socket address, if known.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub peer: Option<SocketAddr>,
    #[serde(skip)]
    #[schemars(skip)]
    native: Option<Arc<dyn Any + Send + Sync>>,
}

impl Conn {
    /// A request context for a method and path.
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        Conn {
            method: method.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    /// Adds a header (the name is lower-cased).
    pub fn header(mut self, name: impl AsRef<str>, value: impl Into<String>) -> Self {
        self.headers
            .insert(name.as_ref().to_ascii_lowercase(), value.into());
        self
    }

    /// Sets the peer address.
    pub fn peer(mut self, peer: SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Drops the host's request object (it never crosses a sandbox; see
    /// [`crate::wire::DecodeInPlace`]).
    pub(crate) fn forget_native(&mut self) {
        self.native = None;
    }

    /// Attaches the host's own request object, for native plugins only.
    pub fn with_native<T: Any + Send + Sync>(mut self, native: Arc<T>) -> Self {
        self.native = Some(native);
        self
    }

    /// The host's own request object, if one of type `T` was attached.
    pub fn native<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.native.as_deref().and_then(|n| n.downcast_ref::<T>())
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &self.headers)
            .field("peer", &self.peer)
            .field("native", &self.native.as_ref().map(|_| ".."))
            .finish()
    }
}

impl PartialEq for Conn {
    /// Compares the serialisable parts; the native object is not data.
    fn eq(&self, other: &Self) -> bool {
        self.method == other.method
            && self.path == other.path
            && self.headers == other.headers
            && self.peer == other.peer
    }
}

/// The generic payload of the placeholder reference events.
///
/// Mishka 0.0.3 reserved these events without fixing their fields; a host that fires one
/// puts what it has in `data` (for content events, typically the item and its form) and
/// plugins put what they add in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Payload {
    /// What the host hands over.
    #[serde(default)]
    pub data: Map<String, Value>,
    /// What plugins add.
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// Fields of a user, as a map (Mishka's `user_info`).
pub type UserInfo = Map<String, Value>;

/// One thing a plugin found for `on_content_search` (Joomla's search result: a title, a
/// link, a snippet, where it lives).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchHit {
    /// What to show as the result's title.
    pub title: String,
    /// Where it leads.
    pub href: String,
    /// A snippet of the matching text.
    #[serde(default)]
    pub text: String,
    /// The area it belongs to (one of `on_content_search_areas`' names), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    /// Anything else the plugin adds.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl SearchHit {
    /// A hit with a title and a link.
    pub fn new(title: impl Into<String>, href: impl Into<String>) -> Self {
        SearchHit {
            title: title.into(),
            href: href.into(),
            ..SearchHit::default()
        }
    }

    /// The snippet.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = text.into();
        self
    }
}

/// An area the content search can be narrowed to, from `on_content_search_areas`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SearchArea {
    /// Its name, as searches and hits refer to it.
    pub name: String,
    /// What to show for it.
    pub label: String,
}
