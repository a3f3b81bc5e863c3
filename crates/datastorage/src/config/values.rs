//! Value forms shared by the sections: Go-style durations and byte counts written as integers
//! or strings.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Go-style durations (`500ms`, `5m`, `1h30m`) in and out.
pub(super) mod duration {
    use std::time::Duration;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string().replace(' ', ""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        crate::config::values::parse_duration(&s).map_err(D::Error::custom)
    }
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
