//! Strict reading of JSON request bodies: a key given twice in one object, or one field given
//! under both of its names (`transferId` and `transfer_id`), is refused rather than letting
//! the last one win silently. A proxy or a log that reads the first one would otherwise see a
//! different request than the one tally executes.

use std::fmt;

use prost_reflect::{Kind, MessageDescriptor};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

/// Parses `body` as JSON, refusing an object that holds one key twice.
pub fn parse(body: &[u8]) -> Result<Json, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = StrictValue::deserialize_from(&mut deserializer).map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Refuses a field of `message` (or of a message inside it) given under both its proto name and
/// its JSON name.
pub fn check_spellings(message: &MessageDescriptor, json: &Json) -> Result<(), String> {
    let Json::Object(object) = json else {
        return Ok(());
    };
    for field in message.fields() {
        let (name, json_name) = (field.name(), field.json_name());
        if name != json_name && object.contains_key(name) && object.contains_key(json_name) {
            return Err(format!(
                "field `{json_name}` is given twice, also as `{name}`"
            ));
        }
        let Kind::Message(inner) = field.kind() else {
            continue;
        };
        let Some(value) = object.get(json_name).or_else(|| object.get(name)) else {
            continue;
        };
        if field.is_map() {
            // A map's values are its entry message's `value` field.
            if let (Json::Object(entries), Some(value_field)) = (value, inner.get_field(2))
                && let Kind::Message(value_message) = value_field.kind()
            {
                for entry in entries.values() {
                    check_spellings(&value_message, entry)?;
                }
            }
        } else if let Json::Array(items) = value {
            for item in items {
                check_spellings(&inner, item)?;
            }
        } else {
            check_spellings(&inner, value)?;
        }
    }
    Ok(())
}

/// A JSON value whose objects were read with duplicate keys refused.
struct StrictValue;

impl StrictValue {
    fn deserialize_from<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

struct Element(Json);

impl<'de> de::Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        StrictValue::deserialize_from(deserializer).map(Element)
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        StrictValue::deserialize_from(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(Element(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Element(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("key `{key}` is given twice")));
            }
            object.insert(key, value);
        }
        Ok(Json::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(parse(br#"{"a": 1, "b": {"c": [1, {"d": 2}]}}"#).is_ok());
        let top = parse(br#"{"amount": "1", "amount": "1000000"}"#).unwrap_err();
        assert!(top.contains("`amount` is given twice"), "{top}");
        assert!(parse(br#"{"x": {"y": 1, "y": 2}}"#).is_err());
        assert!(parse(br#"[{"y": 1, "y": 2}]"#).is_err());
        assert!(parse(br#"{"a": 1} {"b": 2}"#).is_err(), "trailing content");
    }

    #[test]
    fn numbers_and_literals_come_through_as_serde_json_reads_them() {
        let strict = parse(
            br#"{"n": -5, "u": 18446744073709551615, "f": 1.5, "t": true, "z": null, "s": "x"}"#,
        )
        .unwrap();
        let loose: Json = serde_json::from_slice(
            br#"{"n": -5, "u": 18446744073709551615, "f": 1.5, "t": true, "z": null, "s": "x"}"#,
        )
        .unwrap();
        assert_eq!(strict, loose);
    }
}
