//! Go's `time.ParseDuration` grammar, as used by `metav1.Duration` fields.

use std::time::Duration;

/// Largest duration Go can represent (`math.MaxInt64` nanoseconds).
const MAX_NANOS: u128 = i64::MAX as u128;
/// Fraction digits beyond this cannot change a nanosecond count.
const MAX_FRACTION_DIGITS: usize = 18;

/// Parses a Go duration (`300ms`, `1.5s`, `1m30s`, `2h`, `0s`, `0`).
///
/// The grammar is Go's `time.ParseDuration`: an optional sign, then one or
/// more decimal numbers, each with an optional fraction and a unit (`ns`,
/// `us`, `µs`, `ms`, `s`, `m`, `h`); a bare `0` needs no unit. Unlike Go,
/// a negative duration is an error: no field of these resources accepts one.
///
/// ```
/// use std::time::Duration;
/// use api::parse_go_duration;
///
/// assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
/// assert!(parse_go_duration("20").is_err()); // missing unit
/// assert!(parse_go_duration("-1s").is_err());
/// ```
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let invalid = |why: &str| {
        format!("invalid duration {s:?}: {why} (examples: \"500ms\", \"20s\", \"1m30s\")")
    };
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid("empty"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = leading_digits(rest);
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => after_dot.split_at(leading_digits(after_dot)),
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid("expected a number"));
        }
        let unit_len = after_number
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err(invalid("missing unit (ns, us, ms, s, m or h)")),
            other => {
                return Err(invalid(&format!(
                    "unknown unit {other:?} (expected ns, us, ms, s, m or h)"
                )));
            }
        };
        let too_long = || invalid("out of range");
        // Any integer part this long overflows; the check keeps `parse` from failing first.
        if int_part.len() > 30 {
            return Err(too_long());
        }
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| too_long())?
        };
        let frac_digits = &frac_part[..frac_part.len().min(MAX_FRACTION_DIGITS)];
        let frac_nanos = if frac_digits.is_empty() {
            0
        } else {
            let frac: u128 = frac_digits.parse().map_err(|_| too_long())?;
            frac * unit_nanos / 10u128.pow(frac_digits.len() as u32)
        };
        total = int
            .checked_mul(unit_nanos)
            .and_then(|n| n.checked_add(frac_nanos))
            .and_then(|n| n.checked_add(total))
            .filter(|n| *n <= MAX_NANOS)
            .ok_or_else(too_long)?;
        rest = after_unit;
    }
    if negative && total != 0 {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    Ok(Duration::from_nanos(total as u64))
}

fn leading_digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_go_duration(s).unwrap_or_else(|e| panic!("{s:?} rejected: {e}"))
    }

    #[test]
    fn accepts_go_grammar() {
        let table: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("-0s", Duration::ZERO),
            ("5s", Duration::from_secs(5)),
            ("+5s", Duration::from_secs(5)),
            ("20s", Duration::from_secs(20)),
            ("300ms", Duration::from_millis(300)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("1m", Duration::from_secs(60)),
            ("1m30s", Duration::from_secs(90)),
            ("1h1h", Duration::from_secs(7200)),
            ("2h45m", Duration::from_secs(2 * 3600 + 45 * 60)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("10μs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1.5ns", Duration::from_nanos(1)),
            (
                "0.333333333333333333333s",
                Duration::from_nanos(333_333_333),
            ),
            (
                "9223372036854775807ns",
                Duration::from_nanos(i64::MAX as u64),
            ),
            ("2562047h", Duration::from_secs(2_562_047 * 3600)),
        ];
        for (s, want) in table {
            assert_eq!(ok(s), *want, "{s}");
        }
    }

    #[test]
    fn rejects() {
        let table: &[(&str, &str)] = &[
            ("", "empty"),
            ("-", "empty"),
            ("+", "empty"),
            ("s", "expected a number"),
            (".s", "expected a number"),
            ("1", "missing unit"),
            ("20", "missing unit"),
            ("1.5", "missing unit"),
            ("1s2", "missing unit"),
            ("1 s", "unknown unit \" s\""),
            (" 1s", "expected a number"),
            ("1sec", "unknown unit \"sec\""),
            ("1d", "unknown unit \"d\""),
            ("1S", "unknown unit \"S\""),
            ("-1s", "must not be negative"),
            ("--1s", "expected a number"),
            ("9223372036854775808ns", "out of range"),
            ("2562048h", "out of range"),
            ("99999999999999999999999999999999999999h", "out of range"),
        ];
        for (s, want) in table {
            let err = parse_go_duration(s).expect_err(s);
            assert!(err.contains(want), "{s:?}: {err}");
        }
    }
}
