//! Strict deserialization of the policy document, closing what serde's defaults let through:
//!
//! * a JSON array in place of an object (serde's derive maps a sequence to a struct by
//!   position, skipping `deny_unknown_fields`: `"match": []` meant "match everything");
//! * `null` as "absent" (`"protocol": null` widened a rule to every protocol);
//! * duplicate keys in the free-form objects (`{"rate_limit": …, "rate_limit": …}`: the
//!   last silently won).
//!
//! Each document struct is derived with `#[serde(remote = "Self")]` and gets its
//! `Deserialize` from [`strict_struct!`], which deserializes it as a map only.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Value};

/// A deserializer that reads structs only from maps, forwarding everything else.
pub struct MapOnly<D>(pub D);

macro_rules! forward {
    ($($m:ident),* $(,)?) => {
        $(fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
            self.0.$m(v)
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
        deserialize_i128,
        deserialize_u128,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_newtype_struct(name, v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(len, v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple_struct(name, len, v)
    }

    /// The point of the wrapper: a struct is read from a map, never from a sequence.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, v)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// `Deserialize` (as a map only) and `Serialize` for a struct derived with
/// `#[serde(remote = "Self")]`.
#[macro_export]
macro_rules! strict_struct {
    ($t:ty) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$t>::deserialize($crate::policy::strict::MapOnly(d))
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$t>::serialize(self, s)
            }
        }
    };
}

/// For optional fields: present means a value, and `null` is refused (it is not "absent":
/// leave the field out for that).
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// For optional free-form fields: a JSON value (duplicate keys refused), never `null`.
pub fn present_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    match ValueSeed.deserialize(d)? {
        Value::Null => Err(de::Error::custom(
            "null is not a value here; leave the field out to match anything",
        )),
        v => Ok(Some(v)),
    }
}

/// A free-form field that must be present: a JSON value, duplicate keys refused.
pub fn value<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    ValueSeed.deserialize(d)
}

/// Builds a `serde_json::Value`, refusing an object that names a key twice.
struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueSeed)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueSeed)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(de::Error::custom(format!(
                    "the key `{k}` is given twice; keep one"
                )));
            }
            let v = map.next_value_seed(ValueSeed)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    #[serde(remote = "Self", deny_unknown_fields)]
    struct Doc {
        a: u32,
        #[serde(default, deserialize_with = "present")]
        b: Option<String>,
        #[serde(default, deserialize_with = "present_value")]
        c: Option<Value>,
    }
    crate::strict_struct!(Doc);

    #[test]
    fn maps_only_no_nulls_no_duplicates() {
        let ok: Doc = serde_json::from_str(r#"{"a":1,"c":{"x":1}}"#).unwrap();
        assert_eq!(ok.a, 1);
        let e = serde_json::from_str::<Doc>(r#"[1,"b"]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid type: sequence"), "{e}");
        let e = serde_json::from_str::<Doc>(r#"{"a":1,"b":null}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("null"), "{e}");
        let e = serde_json::from_str::<Doc>(r#"{"a":1,"c":null}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("null is not a value"), "{e}");
        let e = serde_json::from_str::<Doc>(r#"{"a":1,"c":{"x":1,"x":2}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`x` is given twice"), "{e}");
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"a":1,"b":null,"c":{"x":1}}"#
        );
    }
}
