//! Duration flags and variables.

use std::time::Duration;

/// A duration flag or variable that is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DurationError {
    message: String,
}

/// Parses a duration as Go's `time.ParseDuration` does (`300ms`, `1.5s`,
/// `1m30s`, `2h`; `0` alone needs no unit), the syntax of upstream's
/// variables. Every duration flag of every program uses this parser (as a
/// clap `value_parser`), so they all accept the same values.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(process::parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(process::parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert!(process::parse_duration("5").is_err()); // a unit is required
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    api::parse_go_duration(s).map_err(|message| DurationError { message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_syntax() {
        let s = Duration::from_secs;
        for (text, want) in [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1s", s(1)),
            ("500ms", Duration::from_millis(500)),
            ("5m", s(300)),
            ("1m30s", s(90)),
            ("1.5h", s(5400)),
            ("250us", Duration::from_micros(250)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "5", "5x", "-1s", "1 s", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(!parse_duration("5x").unwrap_err().to_string().is_empty());
    }
}
