//! Go `time.Duration` as the agents encode it in their answers: a number of
//! nanoseconds (Nomad) or a duration string such as `"27.291304ms"`
//! (Consul's `api.ReadableDuration`). Pure; no I/O.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Deserializes a Go duration in either encoding; `null`, a negative or a
/// malformed value gives `None`.
pub fn de_go_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Nanos(u64),
        Float(f64),
        Text(String),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => None,
        Some(Raw::Nanos(n)) => Some(Duration::from_nanos(n)),
        Some(Raw::Float(f)) if f.is_finite() && f >= 0.0 => Some(Duration::from_nanos(f as u64)),
        Some(Raw::Float(_)) => None,
        Some(Raw::Text(s)) => parse_go_duration(&s),
    })
}

/// Parses a Go duration string (`"0s"`, `"1m30s"`, `"27.291304ms"`, `"5µs"`).
/// Negative or malformed durations give `None`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * nanos_per;
    }
    Some(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("5µs"), Some(Duration::from_micros(5)));
        assert_eq!(parse_go_duration("abc"), None);
        assert_eq!(parse_go_duration("-1s"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
