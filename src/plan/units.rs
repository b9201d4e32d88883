//! Human units in the file: durations (`"30s"`, `"10m"`, `"1h 30m"`) and sizes (`"1MiB"`, `"64kB"`).

use std::time::Duration;

/// Parses a duration such as `"15s"` or `"1h 30m"`.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write e.g. \"30s\", \"10m\", \"1h\"")
    })
}

/// Parses a size such as `"1MiB"`, `"512 KiB"`, `"10kB"` or a plain number of bytes.
pub fn size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || format!("`{text}` is not a size; write e.g. \"1MiB\", \"512KiB\", \"10kB\"");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("512 KiB"), Ok(512 << 10));
        assert_eq!(size("10kB"), Ok(10_000));
        assert_eq!(size("42"), Ok(42));
        assert!(size("1 parsec").is_err());
        assert!(size("MiB").is_err());
        assert!(size("99999999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(duration("soon").is_err());
    }
}
