//! Property tests of the two parsers that take outside text: host patterns
//! and Go durations never panic, and what they produce reads back the same.

use std::time::Duration;

use api::{HostPattern, parse_go_duration};
use proptest::prelude::*;

/// A valid DNS label: letters, digits and inner hyphens, 1 to 63 characters.
fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?"
}

proptest! {
    #[test]
    fn host_parse_never_panics(s in "\\PC{0,80}") {
        let _ = HostPattern::parse(&s);
    }

    #[test]
    fn host_parse_near_valid_never_panics(s in "[a-z0-9*.:\\-]{0,40}") {
        if let Ok(pattern) = HostPattern::parse(&s) {
            // Whatever is accepted prints to a canonical form that parses back.
            prop_assert_eq!(HostPattern::parse(&pattern.to_string()), Ok(pattern));
        }
    }

    #[test]
    fn valid_names_are_accepted_lowercased(
        labels in prop::collection::vec(label(), 1..5),
        wildcard in any::<bool>(),
        trailing_dot in any::<bool>(),
    ) {
        let name = labels.join(".");
        let text = format!(
            "{}{name}{}",
            if wildcard { "*." } else { "" },
            if trailing_dot { "." } else { "" },
        );
        let lower = name.to_ascii_lowercase();
        let want = if wildcard { HostPattern::Wildcard(lower.into()) } else { HostPattern::Exact(lower.into()) };
        prop_assert_eq!(HostPattern::parse(&text), Ok(want));
    }

    #[test]
    fn a_port_is_stripped_as_upstream(labels in prop::collection::vec(label(), 1..4), port in 0u32..70000) {
        let name = labels.join(".");
        let text = format!("{name}:{port}");
        match HostPattern::parse(&text) {
            Ok(p) => {
                prop_assert!(port <= 65535);
                prop_assert_eq!(p, HostPattern::Exact(name.to_ascii_lowercase().into()));
            }
            Err(e) => {
                prop_assert!(port > 65535);
                prop_assert!(e.contains("is not a number from 0 to 65535"), "{}", e);
            }
        }
    }

    #[test]
    fn duration_parse_never_panics(s in "[-+0-9.a-zµ ]{0,30}") {
        let _ = parse_go_duration(&s);
    }

    #[test]
    fn durations_read_back(
        h in 0u64..1000, m in 0u64..1000, s in 0u64..1000, ms in 0u64..1000, us in 0u64..1000, ns in 0u64..1000,
    ) {
        let text = format!("{h}h{m}m{s}s{ms}ms{us}us{ns}ns");
        let want = Duration::from_secs(h * 3600 + m * 60 + s)
            + Duration::from_millis(ms) + Duration::from_micros(us) + Duration::from_nanos(ns);
        prop_assert_eq!(parse_go_duration(&text), Ok(want));
        // The same amount written as one fractional number of seconds.
        let nanos = want.as_nanos();
        let fractional = format!("{}.{:09}s", nanos / 1_000_000_000, nanos % 1_000_000_000);
        prop_assert_eq!(parse_go_duration(&fractional), Ok(want));
    }
}
