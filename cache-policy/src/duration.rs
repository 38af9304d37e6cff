//! Human-friendly durations (`500ms`, `30s`, `5m`, `1h`, `7d`) as used in `policy.toml` and in the
//! binaries' configuration, so operators write the same thing everywhere.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected a whole number followed by ms, s, m, h or d (e.g. `30s`)")]
pub struct DurationError {
    /// The rejected text, echoed so the operator can find it.
    pub input: String,
}

/// Parses `<whole number><unit>` where unit is `ms`, `s`, `m`, `h` or `d`.
///
/// # Errors
///
/// [`DurationError`] when the unit is missing or unknown, the number is not a whole number, or the
/// value overflows.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// assert_eq!(cache_policy::parse_duration("90s").unwrap(), Duration::from_secs(90));
/// assert_eq!(cache_policy::parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError { input: input.to_owned() };
    let text = input.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).filter(|&i| i > 0).ok_or_else(err)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| err())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err()),
    };
    number.checked_mul(millis_per_unit).map(Duration::from_millis).ok_or_else(err)
}

/// Renders a duration in the largest unit that represents it exactly, the inverse of
/// [`parse_duration`] (used by `cachectl policy`).
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("15ms").unwrap(), Duration::from_millis(15));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3h").unwrap(), Duration::from_secs(10_800));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in ["", "s", "10", "1.5s", "-1s", "10 s", "10sec", "1w", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        for text in ["1d", "36h", "90m", "45s", "1500ms", "0s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
