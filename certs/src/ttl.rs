//! Durations written the way people write them: `90s`, `15m`, `12h`, `30d`,
//! or a sum such as `1h30m`.

use time::Duration;

use crate::PkiError;

pub fn parse(value: &str) -> Result<Duration, PkiError> {
    let fail = |reason: &str| PkiError::InvalidTtl {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if value.is_empty() {
        return Err(fail("empty"));
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in value.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(fail("use a number with a unit: s, m, h or d (e.g. 12h)")),
        };
        if digits.is_empty() {
            return Err(fail("a unit needs a number before it"));
        }
        let n: i64 = digits.parse().map_err(|_| fail("number too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| fail("too large"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(fail("missing unit after the last number (s, m, h or d)"));
    }
    if total <= 0 {
        return Err(fail("must be longer than zero"));
    }
    Ok(Duration::seconds(total))
}

/// The inverse of [`parse`] for messages: the largest whole units.
pub fn format(d: Duration) -> String {
    let secs = d.whole_seconds();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= size && secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("90s").unwrap(), Duration::seconds(90));
        assert_eq!(parse("15m").unwrap(), Duration::minutes(15));
        assert_eq!(parse("12h").unwrap(), Duration::hours(12));
        assert_eq!(parse("30d").unwrap(), Duration::days(30));
        assert_eq!(parse("1h30m").unwrap(), Duration::minutes(90));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "",
            "12",
            "h",
            "0h",
            "-1h",
            "1.5h",
            "1w",
            "12 h",
            "99999999999999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_whole_units() {
        assert_eq!(format(Duration::hours(12)), "12h");
        assert_eq!(format(Duration::days(7)), "7d");
        assert_eq!(format(Duration::seconds(61)), "61s");
    }
}
