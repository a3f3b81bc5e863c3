//! Parsing request bodies strictly: JSON that two parsers could read differently is refused,
//! with the path of the offending value.
//!
//! On top of what `serde_json` refuses (invalid UTF-8, lone surrogates, numbers beyond an
//! IEEE 754 double such as `1e400`, nesting beyond its recursion limit), an object with the
//! same key twice is refused: which of the two values counts depends on the parser, so an audit
//! store must not pick one.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::{Map, Value};

/// Deepest nesting of a whole body (objects and arrays); deeper bodies are refused before
/// `serde_json`'s own recursion limit (128) would answer with a message that names no field.
pub const MAX_BODY_DEPTH: usize = 64;

/// Why a body is not acceptable JSON: where (a path such as `[3].event_data.items[0]`, or
/// `(body)` when there is none) and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// The path of the offending value, in the form field errors use.
    pub path: String,
    /// What is wrong, in words.
    pub rule: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.rule)
    }
}

/// Parses `bytes` as one JSON value, refusing duplicate keys and nesting beyond
/// [`MAX_BODY_DEPTH`].
pub fn parse_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map(|Strict(v)| v)
        .map_err(|e| {
            let rule = e.inner().to_string();
            // Too deep: the field it starts in, not a path as deep as the nesting.
            let path = if rule.starts_with(DEPTH_RULE) {
                field_of(e.path())
            } else {
                path_of(e.path())
            };
            JsonError { path, rule }
        })?;
    de.end().map_err(|e| JsonError {
        path: "(body)".to_owned(),
        rule: e.to_string(),
    })?;
    Ok(value)
}

/// The start of the rule of a body nested too deep.
const DEPTH_RULE: &str = "nesting is deeper than";

/// The field a path starts in, with the batch position before it: `[3].event_data`, or
/// `(body)` when it starts in no field.
fn field_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } if out.is_empty() => out = format!("[{index}]"),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
                return out;
            }
            _ => break,
        }
    }
    "(body)".to_owned()
}

/// `serde_path_to_error`'s path in the field-error form: `[3].event_data.x`.
fn path_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    if out.is_empty() {
        "(body)".to_owned()
    } else {
        out
    }
}

/// A JSON value read with the strict rules.
struct Strict(Value);

impl<'de> de::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        StrictSeed { depth: 0 }.deserialize(d)
    }
}

#[derive(Clone, Copy)]
struct StrictSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Strict;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor { depth: self.depth })
    }
}

struct StrictVisitor {
    depth: usize,
}

impl StrictVisitor {
    fn nested<E: de::Error>(&self) -> Result<StrictSeed, E> {
        if self.depth >= MAX_BODY_DEPTH {
            return Err(E::custom(format!("{DEPTH_RULE} {MAX_BODY_DEPTH} levels")));
        }
        Ok(StrictSeed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        serde_json::Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom("a number must be finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let seed = self.nested()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Strict(v)) = seq.next_element_seed(seed)? {
            items.push(v);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let seed = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            let Strict(v) = map.next_value_seed(seed)?;
            out.insert(key, v);
        }
        Ok(Strict(Value::Object(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> JsonError {
        parse_strict(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_path() {
        let e = err(r#"[{"a": 1}, {"event_data": {"x": 1, "x": 2}}]"#);
        assert_eq!(e.path, "[1].event_data", "the object holding the key");
        assert!(e.rule.contains("\"x\" appears twice"), "{e}");
    }

    #[test]
    fn numbers_beyond_a_double_and_deep_nesting_name_the_path() {
        let e = err(r#"{"event_data": {"n": 1e400}}"#);
        assert_eq!(e.path, "event_data.n", "{e}");
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        let e = err(&deep);
        assert!(e.rule.contains("deeper than 64"), "{e}");
    }

    #[test]
    fn invalid_text_is_a_body_error() {
        assert_eq!(err("{\"a\": ").path, "a");
        let e = parse_strict(b"{\"a\": \"\xff\"}").unwrap_err();
        assert_eq!(e.path, "a", "{e}");
        assert!(parse_strict(br#"{"a": "\ud800"}"#).is_err());
        assert_eq!(err("{} {}").path, "(body)");
    }

    #[test]
    fn ordinary_json_reads_like_serde_json() {
        let text = r#"{"a": [1, -2, 3.5, true, null, "x"], "b": {"c": {}}}"#;
        assert_eq!(
            parse_strict(text.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }
}
