//! A deliberately simple reference matcher: filter every candidate rule,
//! take the best by upstream's precedence. The property tests and the fuzz
//! targets check the indexed lookup against it.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::SystemTime;

use crate::{Route, RoutingTable, Rule};

fn ref_host(host: &str) -> Option<String> {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or("")
    } else {
        host
    };
    let h = h.strip_suffix('.').unwrap_or(h);
    (h.len() <= crate::MAX_HOST_LEN).then(|| h.to_ascii_lowercase())
}

/// Lower is better: exact 0, wildcard 1 (longer suffix first), catch-all 2.
fn ref_host_rank(pattern: &crate::HostPattern, host: Option<&str>) -> Option<(u8, Reverse<usize>)> {
    match pattern {
        crate::HostPattern::Any => Some((2, Reverse(0))),
        crate::HostPattern::Exact(h) => (host? == &**h).then_some((0, Reverse(0))),
        crate::HostPattern::Wildcard(s) => {
            let host = host?;
            let dotted = format!(".{s}");
            (host.ends_with(&dotted) && host.len() > dotted.len()).then_some((1, Reverse(s.len())))
        }
    }
}

/// Upstream's rule: trim every leading and trailing '/' of both, then equal,
/// or the path continues the prefix with a '/'; an empty prefix matches all.
fn ref_path_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_matches('/');
    let path = path.trim_matches('/');
    prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
}

fn ref_headers_match(rule: &Rule, headers: &[(&str, &str)]) -> bool {
    rule.headers().iter().all(|f| {
        headers.iter().any(|(n, v)| {
            n.to_ascii_lowercase() == f.name.as_str()
                && f.value
                    .as_ref()
                    .is_none_or(|want| want.as_bytes() == v.as_bytes())
        })
    })
}

type RefKey = (
    (u8, Reverse<usize>),
    Reverse<usize>,
    Reverse<usize>,
    Reverse<usize>,
    (bool, Option<SystemTime>),
    Reverse<String>,
    usize,
);

/// Whether a rule matches on its own (for static routes): any host, any
/// path, all headers.
fn ref_rule_matches(rule: &Rule, host: Option<&str>, path: &str, headers: &[(&str, &str)]) -> bool {
    ref_headers_match(rule, headers)
        && rule
            .hosts()
            .iter()
            .any(|h| ref_host_rank(h, host).is_some())
        && rule.paths().iter().any(|p| ref_path_matches(p, path))
}

/// A lookup's outcome: (route key, rule index, path prefix, static route index).
pub type Outcome = (String, usize, String, Option<usize>);

/// The winner among `active` (one route per key), as an [`Outcome`].
pub fn reference(
    active: &[Arc<Route>],
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<Outcome> {
    let host = ref_host(host);
    let path = path.split('?').next().unwrap_or("");
    // The best key so far, with its route and (key, rule index, prefix).
    type Best<'a> = (RefKey, (String, usize, String), &'a Arc<Route>);
    let mut best: Option<Best<'_>> = None;
    for route in active {
        for (ri, rule) in route.rules().iter().enumerate() {
            if !ref_headers_match(rule, headers) {
                continue;
            }
            for hp in rule.hosts() {
                let Some(rank) = ref_host_rank(hp, host.as_deref()) else {
                    continue;
                };
                for p in rule.paths() {
                    if !ref_path_matches(p, path) {
                        continue;
                    }
                    let key: RefKey = (
                        rank,
                        Reverse(p.len()),
                        Reverse(rule.headers().len()),
                        Reverse(rule.valued_headers()),
                        (route.created.is_none(), route.created),
                        Reverse(route.key().to_string()),
                        ri,
                    );
                    if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
                        best = Some((key, (route.key().to_string(), ri, p.to_string()), route));
                    }
                }
            }
        }
    }
    best.map(|(_, (key, ri, p), route)| {
        let statics = route.static_routes.iter().position(|sr| {
            sr.rules
                .iter()
                .any(|r| ref_rule_matches(r, host.as_deref(), path, headers))
        });
        (key, ri, p, statics)
    })
}

/// The table's lookup, as an [`Outcome`].
pub fn indexed(
    t: &RoutingTable,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<Outcome> {
    t.lookup(host, path, headers).map(|m| {
        let ri = m
            .route
            .rules()
            .iter()
            .position(|r| std::ptr::eq(r, m.rule))
            .expect("matched rule belongs to the route");
        let statics = match m.action {
            crate::Action::Forward => None,
            crate::Action::Static { index, route } => {
                assert!(std::ptr::eq(route, &m.route.static_routes[index]));
                Some(index)
            }
        };
        (
            m.route.key().to_string(),
            ri,
            m.path_prefix.to_string(),
            statics,
        )
    })
}
