//! Host patterns as written in `spec.hosts` and `spec.rules[].hosts`.

use std::fmt;
use std::sync::Arc;

/// A parsed host pattern, normalised: lower-case, no port, no trailing
/// dot, IPv6 literals without brackets. The routing table indexes routes by
/// it (its strings are shared with the index's keys).
///
/// ```
/// use api::HostPattern;
///
/// assert_eq!(HostPattern::parse("*"), Ok(HostPattern::Any));
/// assert_eq!(HostPattern::parse("Shop.Example.com."), Ok(HostPattern::Exact("shop.example.com".into())));
/// assert_eq!(HostPattern::parse("*.example.com"), Ok(HostPattern::Wildcard("example.com".into())));
/// assert_eq!(HostPattern::parse("example.com:8080"), Ok(HostPattern::Exact("example.com".into())));
/// assert_eq!(HostPattern::parse("[::1]:8080"), Ok(HostPattern::Exact("::1".into())));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Matches one host exactly (case-insensitive).
    Exact(Arc<str>),
    /// `*.suffix`: matches any host ending in `.suffix`, at any depth; holds `suffix`.
    Wildcard(Arc<str>),
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
    /// - Anything else is an exact DNS name or IP address.
    ///
    /// As upstream, a port is not part of the pattern: `example.com:8080`
    /// is `example.com`, and matches that host on any port (the Host
    /// header's port is ignored too). IPv6 literals are hosts, bare (`::1`)
    /// or in brackets (`[::1]`, `[::1]:8080`), and are kept lower-cased
    /// without brackets. Names are lower-cased and one trailing dot (an
    /// absolute name such as `example.com.`) is dropped, so `Example.COM.`
    /// and `example.com` are the same pattern. Rejected: a `*` anywhere but
    /// as the whole first label, an empty label (`a..b`, a leading dot,
    /// `*.`), a port that is not a number from 0 to 65535, characters
    /// outside `a-z`, `0-9` and `-` (internationalized names must be written
    /// in punycode, `xn--...`), labels that start or end with `-`, labels
    /// longer than 63 characters and names longer than 253.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        if s.is_empty() || s == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some(rest) = s.strip_prefix('[') {
            let Some((addr, after)) = rest.split_once(']') else {
                return Err(format!("host {s:?}: '[' without a closing ']'"));
            };
            if !after.is_empty() {
                let port = after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("host {s:?}: only \":port\" may follow \"]\""))?;
                check_port(s, port)?;
            }
            return ipv6(s, addr);
        }
        let s_host = match s.split_once(':') {
            // Two colons or more: a bare IPv6 address (it cannot carry a port).
            Some((_, rest)) if rest.contains(':') => return ipv6(s, s),
            Some((host, port)) => {
                check_port(s, port)?;
                if host.is_empty() {
                    return Err(format!("host {s:?}: empty host name before the port"));
                }
                host
            }
            None => s,
        };
        if s_host == "*" {
            return Ok(HostPattern::Any);
        }
        let lower = s_host.to_ascii_lowercase();
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
            HostPattern::Wildcard(Arc::from(name))
        } else {
            HostPattern::Exact(Arc::from(name))
        })
    }
}

/// A port after a host: a decimal number that fits in 16 bits.
fn check_port(host: &str, port: &str) -> Result<(), String> {
    match port.parse::<u16>() {
        Ok(_) if port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!(
            "host {host:?}: port {port:?} is not a number from 0 to 65535"
        )),
    }
}

/// An IPv6 literal (without brackets), lower-cased as written.
fn ipv6(host: &str, addr: &str) -> Result<HostPattern, String> {
    match addr.parse::<std::net::Ipv6Addr>() {
        Ok(_) => Ok(HostPattern::Exact(Arc::from(addr.to_ascii_lowercase()))),
        Err(_) => Err(format!("host {host:?}: {addr:?} is not an IPv6 address")),
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

impl HostPattern {
    /// Whether a (normalised) request host matches: `*.suffix` matches any
    /// host ending in `.suffix`, at any depth, but not `suffix` itself.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => **h == *host,
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(&**suffix)
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
            HostPattern::Any => true,
        }
    }
}

impl serde::Serialize for HostPattern {
    /// As its manifest form ([`Display`](fmt::Display)).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
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
        // Ports are stripped (upstream), IPv6 literals are hosts.
        assert_eq!(ok("example.com:8080"), Exact("example.com".into()));
        assert_eq!(ok("Example.com:0"), Exact("example.com".into()));
        assert_eq!(ok("*.example.com:80"), Wildcard("example.com".into()));
        assert_eq!(ok("*:80"), Any);
        assert_eq!(ok("::1"), Exact("::1".into()));
        assert_eq!(ok("[::1]"), Exact("::1".into()));
        assert_eq!(ok("[::1]:8080"), Exact("::1".into()));
        assert_eq!(ok("FE80::1"), Exact("fe80::1".into()));
        let label63 = "a".repeat(63);
        assert_eq!(ok(&label63), Exact(label63.as_str().into()));
        // 4 labels of 63 plus 3 dots = 255 is too long; 3 x 63 + 61 + 3 dots = 253 is fine.
        let host253 = format!("{l}.{l}.{l}.{}", "b".repeat(61), l = label63);
        assert_eq!(host253.len(), 253);
        assert_eq!(ok(&host253), Exact(host253.as_str().into()));
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
        assert!(err("example.com:http").contains("not a number from 0 to 65535"));
        assert!(err("example.com:").contains("not a number from 0 to 65535"));
        assert!(err("example.com:70000").contains("not a number from 0 to 65535"));
        assert!(err(":80").contains("empty host name before the port"));
        assert!(err("[::1").contains("without a closing"));
        assert!(err("[::1]80").contains("may follow"));
        assert!(err("[::g]").contains("not an IPv6 address"));
        assert!(err("1::2::3").contains("not an IPv6 address"));
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
