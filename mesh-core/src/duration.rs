//! Durations as Envoy writes them in JSON/YAML: `"15s"`, `"0.250s"`, plus `"250ms"`, `"2m"`.
//!
//! Config holds [`std::time::Duration`], never floats, so configs stay `Eq` and compare exactly.
//! This module is used with `#[serde(with = "...")]` on config fields.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Parses `"1.5s"`, `"250ms"`, `"2m"`, `"1h"`, `"100us"`, `"10ns"`; a bare number means seconds.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(mesh_core::duration::parse("0.25s"), Ok(Duration::from_millis(250)));
/// assert!(mesh_core::duration::parse("-1s").is_err());
/// ```
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let nanos_per_unit: u128 = match unit {
        "" | "s" => 1_000_000_000,
        "ms" => 1_000_000,
        "us" | "µs" => 1_000,
        "ns" => 1,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(format!("invalid duration {text:?}: unknown unit {unit:?}")),
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(format!(
            "invalid duration {text:?}: expected a number such as \"1.5s\""
        ));
    }
    let bad = || format!("invalid duration {text:?}");
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let mut nanos = whole.checked_mul(nanos_per_unit).ok_or_else(bad)?;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let digits: u128 = frac.parse().map_err(|_| bad())?;
        let scale = 10u128.pow(frac.len() as u32);
        nanos += digits * nanos_per_unit / scale;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats as Envoy does: seconds with up to nine fractional digits (`"0.250s"` → `"0.25s"`).
pub fn format(d: &Duration) -> String {
    if d.subsec_nanos() == 0 {
        return format!("{}s", d.as_secs());
    }
    let frac = format!("{:09}", d.subsec_nanos());
    format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
}

/// `#[serde(with = "mesh_core::duration")]` for `Duration` fields.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(d))
}

/// `#[serde(with = "mesh_core::duration")]` for `Duration` fields.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// `#[serde(with = "mesh_core::duration::option")]` for `Option<Duration>` fields.
pub mod option {
    use super::*;

    /// Serializes `Some(d)` as a duration string and `None` as null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format(d)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes a duration string (or null).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| super::parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_and_short_forms() {
        assert_eq!(parse("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse("0.250s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1.000000001s"), Ok(Duration::new(1, 1)));
        assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "s",
            "-1s",
            "1x",
            "1.2.3s",
            "1.0000000001s",
            "99999999999999999999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_round_trip() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::new(7, 1),
        ] {
            assert_eq!(parse(&format(&d)), Ok(d));
        }
        assert_eq!(format(&Duration::from_millis(250)), "0.25s");
    }
}
