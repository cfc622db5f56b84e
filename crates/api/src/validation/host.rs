//! Host patterns as written in `spec.hosts` and `spec.rules[].hosts`.

use std::fmt;

/// A parsed host pattern. Exact and wildcard hosts are lower-cased.
///
/// ```
/// use api::HostPattern;
///
/// assert_eq!(HostPattern::parse("*"), Ok(HostPattern::Any));
/// assert_eq!(HostPattern::parse("Shop.Example.com."), Ok(HostPattern::Exact("shop.example.com".into())));
/// assert_eq!(HostPattern::parse("*.example.com"), Ok(HostPattern::Wildcard("example.com".into())));
/// assert!(HostPattern::parse("example.com:8080").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Matches one host exactly (case-insensitive).
    Exact(String),
    /// `*.suffix`: matches any host ending in `.suffix`, at any depth; holds `suffix`.
    Wildcard(String),
    /// `*`, empty, or absent: matches every host.
    Any,
}

/// Longest host name DNS allows, without the trailing dot.
const MAX_HOST_LEN: usize = 253;
/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

impl HostPattern {
    /// Parses a host pattern as written in a manifest.
    ///
    /// - `""` and `"*"` match every host.
    /// - `*.suffix` matches every host below `suffix` (not `suffix` itself).
    /// - Anything else is an exact DNS name.
    ///
    /// Names are lower-cased and one trailing dot (an absolute name such as
    /// `example.com.`) is dropped, so `Example.COM.` and `example.com` are the
    /// same pattern. Rejected: a `*` anywhere but as the whole first label, an
    /// empty label (`a..b`, a leading dot, `*.`), a port (`example.com:8080`),
    /// characters outside `a-z`, `0-9` and `-` (internationalized names must be
    /// written in punycode, `xn--...`), labels that start or end with `-`,
    /// labels longer than 63 characters and names longer than 253.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        if s.is_empty() || s == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some((_, port)) = s.rsplit_once(':') {
            return Err(
                if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                    format!(
                        "host {s:?}: ports are not part of a host pattern (remove \":{port}\"; routing ignores the port of the Host header)"
                    )
                } else {
                    format!(
                        "host {s:?}: ':' is not allowed in a host pattern (IPv6 literals and ports are not supported)"
                    )
                },
            );
        }
        let lower = s.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, lower.as_str()),
        };
        if wildcard && name.is_empty() {
            return Err(format!(
                "host {s:?}: a wildcard needs a domain after \"*.\" (use \"*\" to match every host)"
            ));
        }
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(format!("host {s:?}: empty host name"));
        }
        let full_len = name.len() + if wildcard { 2 } else { 0 };
        if full_len > MAX_HOST_LEN {
            return Err(format!(
                "host {s:?}: {full_len} characters, longer than the {MAX_HOST_LEN} a DNS name allows"
            ));
        }
        for label in name.split('.') {
            check_label(s, label)?;
        }
        Ok(if wildcard {
            HostPattern::Wildcard(name.to_string())
        } else {
            HostPattern::Exact(name.to_string())
        })
    }
}

fn check_label(host: &str, label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(format!(
            "host {host:?}: empty label (two dots in a row, or a leading dot)"
        ));
    }
    if label.contains('*') {
        return Err(format!(
            "host {host:?}: '*' is only allowed as the whole first label, as in \"*.example.com\""
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let hint = if c.is_ascii() {
            ""
        } else {
            " (write internationalized names in punycode, \"xn--...\")"
        };
        return Err(format!(
            "host {host:?}: invalid character {c:?} in label {label:?}; allowed are a-z, 0-9 and '-'{hint}"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "host {host:?}: label {label:?} must not start or end with '-'"
        ));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "host {host:?}: label {label:?} is {} characters, longer than the {MAX_LABEL_LEN} DNS allows",
            label.len()
        ));
    }
    Ok(())
}

impl fmt::Display for HostPattern {
    /// Writes the pattern in its canonical manifest form (`*`, `*.suffix`, or the host).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HostPattern::{self, *};

    fn ok(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap_or_else(|e| panic!("{s:?} rejected: {e}"))
    }

    fn err(s: &str) -> String {
        match HostPattern::parse(s) {
            Ok(p) => panic!("{s:?} accepted as {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn accepts() {
        assert_eq!(ok(""), Any);
        assert_eq!(ok("*"), Any);
        assert_eq!(ok("example.com"), Exact("example.com".into()));
        assert_eq!(ok("EXAMPLE.com"), Exact("example.com".into()));
        assert_eq!(ok("example.com."), Exact("example.com".into()));
        assert_eq!(ok("localhost"), Exact("localhost".into()));
        assert_eq!(ok("10.0.0.1"), Exact("10.0.0.1".into()));
        assert_eq!(
            ok("xn--caf-dma.example"),
            Exact("xn--caf-dma.example".into())
        );
        assert_eq!(ok("a-b.c-d.e"), Exact("a-b.c-d.e".into()));
        assert_eq!(ok("*.example.com"), Wildcard("example.com".into()));
        assert_eq!(ok("*.Example.COM."), Wildcard("example.com".into()));
        assert_eq!(ok("*.com"), Wildcard("com".into()));
        let label63 = "a".repeat(63);
        assert_eq!(ok(&label63), Exact(label63.clone()));
        // 4 labels of 63 plus 3 dots = 255 is too long; 3 x 63 + 61 + 3 dots = 253 is fine.
        let host253 = format!("{l}.{l}.{l}.{}", "b".repeat(61), l = label63);
        assert_eq!(host253.len(), 253);
        assert_eq!(ok(&host253), Exact(host253.clone()));
    }

    #[test]
    fn rejects() {
        assert!(err("*.").contains("needs a domain after"));
        assert!(err("*..").contains("empty host name"));
        assert!(err(".").contains("empty host name"));
        assert!(err("a*b.com").contains("whole first label"));
        assert!(err("*foo.com").contains("whole first label"));
        assert!(err("foo.*.com").contains("whole first label"));
        assert!(err("*.*.com").contains("whole first label"));
        assert!(err("**").contains("whole first label"));
        assert!(err("a..com").contains("empty label"));
        assert!(err(".a.com").contains("empty label"));
        assert!(err("a.com..").contains("empty label"));
        assert!(err("example.com:8080").contains("ports are not part of a host pattern"));
        assert!(err("*.example.com:80").contains("ports are not part of a host pattern"));
        assert!(err("[::1]").contains("IPv6"));
        assert!(err("exa mple.com").contains("invalid character ' '"));
        assert!(err("under_score.com").contains("invalid character '_'"));
        assert!(err("café.com").contains("punycode"));
        assert!(err("-a.com").contains("must not start or end with '-'"));
        assert!(err("a-.com").contains("must not start or end with '-'"));
        assert!(err(&format!("{}.com", "a".repeat(64))).contains("longer than the 63"));
        let long = format!("{l}.{l}.{l}.{l}", l = "a".repeat(63));
        assert!(err(&long).contains("longer than the 253"));
    }

    #[test]
    fn display_round_trips() {
        for s in ["*", "*.example.com", "example.com"] {
            assert_eq!(ok(s).to_string(), s);
            assert_eq!(ok(&ok(s).to_string()), ok(s));
        }
    }
}
