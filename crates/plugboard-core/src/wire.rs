//! How states cross into sandboxed plugins.
//!
//! JSON is the baseline every guest language speaks. A state type may also opt into a
//! compact binary layout (postcard: fields in declaration order, no names, varints),
//! which guests decode several times faster; the reference events all do. Host and guest
//! agree on it per event: each side computes [`fingerprint`] of the state's JSON Schema,
//! and the binary layout is used only when both fingerprints match, so a guest built
//! against another version of a state falls back to JSON instead of misreading bytes.
//!
//! A type that opts in must be readable without a self-describing format: no
//! `skip_serializing_if`, no untagged or internally tagged enums, and free JSON values
//! (`serde_json::Value`, maps or lists of them) marked
//! `#[serde(with = "plugboard_core::wire::free_json")]`.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};

/// Which encoding a state crosses the sandbox in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wire {
    /// JSON text: any state, any guest language.
    Json,
    /// The binary layout of states that opt in.
    Binary,
}

/// A state that decoding in place ([`Wire::decode_into`]) overwrites entirely once
/// [`DecodeInPlace::reset_skipped`] has run, so that a guest may decode each call into the
/// state its previous call returned and keep that state's allocations. The reference
/// events implement it; a type with `#[serde(skip)]` fields must reset them (in-place
/// decoding leaves them as they were).
pub trait DecodeInPlace: DeserializeOwned {
    /// Resets what in-place decoding does not write.
    fn reset_skipped(&mut self) {}
}

/// An encoding or decoding failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WireError(String);

impl Wire {
    /// Encodes a state.
    pub fn encode<T: Serialize + ?Sized>(self, state: &T) -> Result<Vec<u8>, WireError> {
        self.encode_sized(state, 256)
    }

    /// Encodes a state into a buffer that starts with `capacity` bytes (the size of the
    /// state it came from is a good guess: growing the buffer is a large part of the cost).
    pub fn encode_sized<T: Serialize + ?Sized>(
        self,
        state: &T,
        capacity: usize,
    ) -> Result<Vec<u8>, WireError> {
        let out = Vec::with_capacity(capacity);
        match self {
            Wire::Json => {
                let mut out = out;
                serde_json::to_writer(&mut out, state).map_err(|e| WireError(e.to_string()))?;
                Ok(out)
            }
            Wire::Binary => postcard::to_extend(state, out).map_err(|e| WireError(e.to_string())),
        }
    }

    /// Decodes into an existing state with serde's `deserialize_in_place`: where the
    /// state's `Deserialize` supports it, strings and lists keep their buffers, so decoding
    /// allocates less. On an error `place` is left half-written; throw it away.
    pub fn decode_into<T: DeserializeOwned>(
        self,
        bytes: &[u8],
        place: &mut T,
    ) -> Result<(), WireError> {
        match self {
            Wire::Json => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                T::deserialize_in_place(&mut de, place).map_err(|e| WireError(e.to_string()))?;
                de.end().map_err(|e| WireError(e.to_string()))
            }
            Wire::Binary => {
                let mut de = postcard::Deserializer::from_bytes(bytes);
                T::deserialize_in_place(&mut de, place).map_err(|e| WireError(e.to_string()))?;
                match de.finalize() {
                    Ok([]) => Ok(()),
                    Ok(rest) => Err(WireError(format!(
                        "{} trailing bytes after the state",
                        rest.len()
                    ))),
                    Err(e) => Err(WireError(e.to_string())),
                }
            }
        }
    }

    /// Decodes a state; trailing bytes are an error.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, WireError> {
        match self {
            Wire::Json => serde_json::from_slice(bytes).map_err(|e| WireError(e.to_string())),
            Wire::Binary => match postcard::take_from_bytes(bytes) {
                Ok((v, [])) => Ok(v),
                Ok((_, rest)) => Err(WireError(format!(
                    "{} trailing bytes after the state",
                    rest.len()
                ))),
                Err(e) => Err(WireError(e.to_string())),
            },
        }
    }
}

/// The fingerprint of a binary layout: FNV-1a (64 bit) of the state's JSON Schema as
/// compact JSON text. Both sides derive the schema from the same Rust types, so equal
/// fingerprints mean equal field order and types.
pub fn fingerprint(schema: &serde_json::Value) -> u64 {
    let text = schema.to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Free JSON (`serde_json::Value`, a map of them, a list of them): itself in JSON; in the
/// binary layout, a tagged tree (null, bool, integer, float, string, list, map) that
/// decodes without parsing text.
pub trait FreeJson: Sized {
    /// Writes the binary form.
    fn serialize_binary<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
    /// Reads the binary form.
    fn deserialize_binary<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

/// Use as `#[serde(with = "plugboard_core::wire::free_json")]` on a [`FreeJson`] field.
pub mod free_json {
    use super::*;

    /// Serializes `value`.
    pub fn serialize<T: FreeJson + Serialize, S: Serializer>(
        value: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            value.serialize(s)
        } else {
            value.serialize_binary(s)
        }
    }

    /// Deserializes a value written by [`serialize`].
    pub fn deserialize<'de, T: FreeJson + DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        if d.is_human_readable() {
            T::deserialize(d)
        } else {
            T::deserialize_binary(d)
        }
    }
}

mod tree {
    //! The binary form of free JSON: an enum per value, so that a format without
    //! self-description can read it back.

    use std::fmt;

    use serde::de::{self, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
    use serde::ser::{SerializeMap, SerializeSeq};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::{Map, Number, Value};

    const VARIANTS: &[&str] = &["null", "bool", "u64", "i64", "f64", "string", "list", "map"];

    /// How deep lists and maps may nest, as serde_json reads JSON: decoding recurses per
    /// level, so deeper bytes (a plugin's reply) would overflow the stack.
    const MAX_DEPTH: usize = 128;

    std::thread_local! {
        static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// One more level of nesting while it lives; refused past [`MAX_DEPTH`].
    struct Nested;

    impl Nested {
        fn enter<E: de::Error>() -> Result<Nested, E> {
            DEPTH.with(|d| {
                if d.get() >= MAX_DEPTH {
                    return Err(E::custom(format_args!(
                        "free JSON nested deeper than {MAX_DEPTH} levels"
                    )));
                }
                d.set(d.get() + 1);
                Ok(Nested)
            })
        }
    }

    impl Drop for Nested {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(d.get() - 1));
        }
    }

    pub(super) struct Ref<'a>(pub(super) &'a Value);
    pub(super) struct SeqRef<'a>(pub(super) &'a [Value]);
    pub(super) struct MapRef<'a>(pub(super) &'a Map<String, Value>);

    impl Serialize for Ref<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                Value::Null => s.serialize_unit_variant("v", 0, "null"),
                Value::Bool(b) => s.serialize_newtype_variant("v", 1, "bool", b),
                Value::Number(n) => {
                    if let Some(u) = n.as_u64() {
                        s.serialize_newtype_variant("v", 2, "u64", &u)
                    } else if let Some(i) = n.as_i64() {
                        s.serialize_newtype_variant("v", 3, "i64", &i)
                    } else {
                        let f = n.as_f64().unwrap_or(f64::NAN);
                        s.serialize_newtype_variant("v", 4, "f64", &f)
                    }
                }
                Value::String(x) => s.serialize_newtype_variant("v", 5, "string", x),
                Value::Array(a) => s.serialize_newtype_variant("v", 6, "list", &SeqRef(a)),
                Value::Object(m) => s.serialize_newtype_variant("v", 7, "map", &MapRef(m)),
            }
        }
    }

    impl Serialize for SeqRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for v in self.0 {
                seq.serialize_element(&Ref(v))?;
            }
            seq.end()
        }
    }

    impl Serialize for MapRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in self.0 {
                map.serialize_entry(k, &Ref(v))?;
            }
            map.end()
        }
    }

    pub(super) struct Owned(pub(super) Value);
    pub(super) struct SeqOwned(pub(super) Vec<Value>);
    pub(super) struct MapOwned(pub(super) Map<String, Value>);

    impl<'de> Deserialize<'de> for Owned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_enum("v", VARIANTS, TreeVisitor)
        }
    }

    struct TreeVisitor;

    impl<'de> Visitor<'de> for TreeVisitor {
        type Value = Owned;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a free JSON value in the binary layout")
        }

        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Owned, A::Error> {
            let (tag, v): (u32, _) = data.variant()?;
            Ok(Owned(match tag {
                0 => {
                    v.unit_variant()?;
                    Value::Null
                }
                1 => Value::Bool(v.newtype_variant()?),
                2 => Value::Number(v.newtype_variant::<u64>()?.into()),
                3 => Value::Number(v.newtype_variant::<i64>()?.into()),
                4 => Number::from_f64(v.newtype_variant()?).map_or(Value::Null, Value::Number),
                5 => Value::String(v.newtype_variant()?),
                6 => Value::Array(v.newtype_variant::<SeqOwned>()?.0),
                7 => Value::Object(v.newtype_variant::<MapOwned>()?.0),
                other => {
                    return Err(de::Error::invalid_value(
                        de::Unexpected::Unsigned(u64::from(other)),
                        &"a free JSON tag 0..=7",
                    ));
                }
            }))
        }
    }

    impl<'de> Deserialize<'de> for SeqOwned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = SeqOwned;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a list of free JSON values")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SeqOwned, A::Error> {
                    // Capped: the hint comes from the bytes.
                    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                    while let Some(Owned(v)) = seq.next_element()? {
                        out.push(v);
                    }
                    Ok(SeqOwned(out))
                }
            }
            let _nested = Nested::enter::<D::Error>()?;
            d.deserialize_seq(V)
        }
    }

    impl<'de> Deserialize<'de> for MapOwned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = MapOwned;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a map of free JSON values")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MapOwned, A::Error> {
                    // Sized up front (growing an index map rehashes it); capped, as the
                    // hint comes from the bytes.
                    let mut out = Map::with_capacity(map.size_hint().unwrap_or(0).min(64));
                    while let Some((k, Owned(v))) = map.next_entry::<String, Owned>()? {
                        out.insert(k, v);
                    }
                    Ok(MapOwned(out))
                }
            }
            let _nested = Nested::enter::<D::Error>()?;
            d.deserialize_map(V)
        }
    }
}

impl FreeJson for serde_json::Value {
    fn serialize_binary<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        tree::Ref(self).serialize(s)
    }
    fn deserialize_binary<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        tree::Owned::deserialize(d).map(|v| v.0)
    }
}

impl FreeJson for serde_json::Map<String, serde_json::Value> {
    fn serialize_binary<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        tree::MapRef(self).serialize(s)
    }
    fn deserialize_binary<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        tree::MapOwned::deserialize(d).map(|v| v.0)
    }
}

impl FreeJson for Vec<serde_json::Value> {
    fn serialize_binary<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        tree::SeqRef(self).serialize(s)
    }
    fn deserialize_binary<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        tree::SeqOwned::deserialize(d).map(|v| v.0)
    }
}
