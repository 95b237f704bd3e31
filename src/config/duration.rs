//! Human durations (`"900ms"`, `"30s"`, `"15m"`, `"7d"`) as config values.

use std::time::Duration;

/// Parses `"<number><unit>"` where unit is one of ms, s, m, h, d, or several such in a row
/// (`"1h30m"`, `"1m30s"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    // Several parts: each must parse on its own; their sum.
    let parts = split_parts(text);
    if parts.len() > 1 {
        let mut total = Duration::ZERO;
        for part in parts {
            total = total
                .checked_add(parse_one(part)?)
                .ok_or_else(|| format!("duration {text:?} is too large"))?;
        }
        return Ok(total);
    }
    parse_one(text)
}

/// `"1h30m"` -> `["1h", "30m"]`: a new part starts where a digit follows a unit letter.
fn split_parts(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..b.len() {
        if b[i].is_ascii_digit() && b[i - 1].is_ascii_alphabetic() {
            out.push(&text[start..i]);
            start = i;
        }
    }
    out.push(&text[start..]);
    out
}

fn parse_one(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} has no unit; write e.g. \"{text}s\""))?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "duration {text:?} must start with a number, like \"30s\""
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("duration {text:?} is too large"))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?}; use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("900ms"), Ok(Duration::from_millis(900)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2d12h"), Ok(Duration::from_secs(216_000)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "30",
            "s",
            "-1s",
            "1.5s",
            "3 weeks",
            "10y",
            "99999999999999999999d",
            "1h30",
            "1h30x",
            "h30m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should fail");
        }
    }
}
