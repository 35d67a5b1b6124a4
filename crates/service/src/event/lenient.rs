//! Reading an event's fields in one pass over the body, each field of another JSON kind than
//! the relay reads counting as absent.
//!
//! The envelope was read with each field captured raw and parsed again: `data`, which holds the
//! bulk of a body, was scanned twice (BENCHMARKS.md). Here a field's value is looked at once,
//! kept when it is of its kind and skipped when it is not.

use std::{fmt, marker::PhantomData};

use serde::{
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer,
};

/// A field's value when it is of the kind `T` reads, else `None`; absent is `None` too.
pub struct Lenient<T>(pub Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Self(None)
    }
}

/// What a JSON kind can be read as; every other kind is skipped.
pub trait ReadLeniently: Sized {
    /// A JSON string.
    fn from_str(_value: &str) -> Option<Self> {
        None
    }

    /// A JSON object: each entry read or skipped, all of them consumed.
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl ReadLeniently for String {
    fn from_str(value: &str) -> Option<Self> {
        Some(value.to_owned())
    }
}

impl<'de, T: ReadLeniently> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor(PhantomData))
    }
}

struct LenientVisitor<T>(PhantomData<T>);

impl<'de, T: ReadLeniently> Visitor<'de> for LenientVisitor<T> {
    type Value = Lenient<T>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Lenient(T::from_str(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Lenient(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::from_map(map).map(Lenient)
    }
}
