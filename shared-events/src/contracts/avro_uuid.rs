//! Serde adapter that writes a `Uuid` as the Avro `string`/`uuid` logical type.
//!
//! apache-avro's serializer is not human-readable, so `Uuid`'s own `Serialize` would emit 16
//! raw bytes, which a `{"type":"string","logicalType":"uuid"}` field rejects.

use std::fmt;

use serde::{Deserializer, Serializer, de};
use uuid::Uuid;

pub fn serialize<S: Serializer>(id: &Uuid, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(id)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uuid, D::Error> {
    deserializer.deserialize_str(UuidVisitor)
}

/// Accepts both shapes a decoded Avro value can take: text, or the 16 bytes of `Value::Uuid`.
struct UuidVisitor;

impl de::Visitor<'_> for UuidVisitor {
    type Value = Uuid;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a UUID as text or 16 bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Uuid, E> {
        Uuid::parse_str(v).map_err(E::custom)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Uuid, E> {
        Uuid::from_slice(v).map_err(E::custom)
    }
}

pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(id: &Option<Uuid>, serializer: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => serializer.collect_str(id),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Uuid>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super")] Uuid);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(id)| id))
    }
}
