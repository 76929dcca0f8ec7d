//! How long an idle model stays resident: a manifest key, an engine flag and
//! an API field, parsed in one place.

use std::fmt;

/// How long an idle model stays resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    Forever,
    Millis(u64),
}

impl KeepAlive {
    /// Parses `0` (right after each request), `-1` / `forever` / `never`, a bare
    /// number of seconds, or a duration such as `5m`, `30s`, `1h 30m`, `250ms`
    /// (humantime's syntax).
    pub fn parse(s: &str) -> Option<KeepAlive> {
        let s = s.trim();
        if s == "-1" || s.eq_ignore_ascii_case("forever") || s.eq_ignore_ascii_case("never") {
            return Some(KeepAlive::Forever);
        }
        if let Ok(secs) = s.parse::<f64>() {
            if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
                return None;
            }
            return Some(KeepAlive::Millis((secs * 1e3) as u64));
        }
        let d = humantime::parse_duration(s).ok()?;
        Some(KeepAlive::Millis(u64::try_from(d.as_millis()).ok()?))
    }
}

impl std::str::FromStr for KeepAlive {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KeepAlive::parse(s).ok_or_else(|| format!("'{s}': expected a duration such as 5m, 30s, 0 or -1 (never)"))
    }
}

impl fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepAlive::Forever => f.write_str("forever"),
            KeepAlive::Millis(ms) if ms % 60_000 == 0 && *ms > 0 => write!(f, "{}m", ms / 60_000),
            KeepAlive::Millis(ms) if ms % 1000 == 0 => write!(f, "{}s", ms / 1000),
            KeepAlive::Millis(ms) => write!(f, "{ms}ms"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_the_special_values() {
        assert_eq!(KeepAlive::parse("5m"), Some(KeepAlive::Millis(300_000)));
        assert_eq!(KeepAlive::parse("1h 30m"), Some(KeepAlive::Millis(5_400_000)));
        assert_eq!(KeepAlive::parse("250ms"), Some(KeepAlive::Millis(250)));
        assert_eq!(KeepAlive::parse("0"), Some(KeepAlive::Millis(0)));
        assert_eq!(KeepAlive::parse("30"), Some(KeepAlive::Millis(30_000)));
        assert_eq!(KeepAlive::parse("-1"), Some(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse("soon"), None);
        assert_eq!(KeepAlive::parse("-5"), None);
        assert_eq!(KeepAlive::Millis(300_000).to_string(), "5m");
    }
}
