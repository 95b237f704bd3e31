//! Byte sizes (`"64MiB"`, `"512KiB"`, `"0"`) as config values.

/// Parses `"<number>[unit]"`, unit one of B, KiB, MiB, GiB (no unit: bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "size {text:?} must start with a number, like \"64MiB\""
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("size {text:?} is too large"))?;
    let per_unit: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}; use B, KiB, MiB or GiB"
            ))
        }
    };
    n.checked_mul(per_unit)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_garbage_does_not() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("7B"), Ok(7));
        for bad in [
            "",
            "MiB",
            "-1MiB",
            "1.5MiB",
            "1 TB",
            "1mb",
            "99999999999999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
