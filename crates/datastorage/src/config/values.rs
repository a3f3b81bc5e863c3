//! Value forms shared by the sections: Go-style durations and byte counts written as integers
//! or strings.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration as the config writes it: a Go-style string, or a bare `0`.
#[derive(Deserialize)]
#[serde(untagged)]
enum DurationForm {
    Text(String),
    Number(i64),
}

fn from_form(form: DurationForm) -> Result<Duration, String> {
    match form {
        DurationForm::Text(s) => parse_duration(&s),
        DurationForm::Number(0) => Ok(Duration::ZERO),
        DurationForm::Number(n) => Err(format!(
            "invalid duration {n}: a duration needs a unit, e.g. \"{n}s\" (a bare number may only be 0)"
        )),
    }
}

/// Go-style durations (`500ms`, `5m`, `1h30m`, or a bare `0`) in and out.
pub(super) mod duration {
    use std::time::Duration;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    use crate::config::values::{format_duration, from_form, DurationForm};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        from_form(DurationForm::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// Like [`duration`], for a key that may be absent (`null`).
pub(super) mod option_duration {
    use std::time::Duration;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    use crate::config::values::{format_duration, from_form, DurationForm};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<DurationForm>::deserialize(d)?
            .map(from_form)
            .transpose()
            .map_err(D::Error::custom)
    }
}

/// A duration the way the config writes it: `5m`, `1h30m`, `500ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    humantime::format_duration(d).to_string().replace(' ', "")
}

/// Parses a Go-style duration; `0` alone is zero.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "invalid duration {s:?}: {e} (use a Go-style duration such as 500ms, 30s, 5m or 1h30m)"
        )
    })
}

pub(super) fn int_or_string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrString {
        Int(u64),
        Str(String),
    }
    match IntOrString::deserialize(d)? {
        IntOrString::Int(n) => Ok(n),
        IntOrString::Str(s) => s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "expected a plain integer number of bytes, got {s:?}"
            ))
        }),
    }
}

/// Rewrites serde's type names in an error message into the words a config author uses, e.g.
/// `expected u32` into `expected a whole number from 0 to 4294967295`.
pub fn plain_words(message: &str) -> String {
    let words = [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "expected u64",
            "expected a whole number from 0 to 18446744073709551615",
        ),
        ("expected usize", "expected a whole number of at least 0"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ];
    let mut out = message.to_owned();
    for (from, to) in words {
        if let Some(at) = out.find(from) {
            // Only a whole word: `expected u16` must not match inside `expected u160`.
            let end = at + from.len();
            if !out[end..].starts_with(|c: char| c.is_ascii_alphanumeric()) {
                out.replace_range(at..end, to);
            }
        }
    }
    out
}
