//! Parsing Kubernetes resource paths.

use std::fmt;

/// Group, version and resource (plural name): the key of a [`Store`](crate::Store).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvr {
    /// API group; empty for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Plural resource name, e.g. `httpscaledobjects`.
    pub resource: String,
}

impl Gvr {
    /// Builds a key.
    pub fn new(group: &str, version: &str, resource: &str) -> Gvr {
        Gvr {
            group: group.to_owned(),
            version: version.to_owned(),
            resource: resource.to_owned(),
        }
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `resource.group` (or `resource`), as in API server messages.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

impl fmt::Display for Gvr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version(), self.resource)
    }
}

/// A parsed resource path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePath {
    /// Which resource.
    pub gvr: Gvr,
    /// `namespaces/<ns>` segment, if present.
    pub namespace: Option<String>,
    /// Object name, if present.
    pub name: Option<String>,
    /// Subresource after the name, e.g. `status`.
    pub subresource: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/<group>/<version>/...` resource paths
/// (the query string, if any, is ignored).
///
/// Returns `None` for discovery paths (`/api`, `/apis/<g>/<v>`) and anything
/// else that does not name a resource.
///
/// ```
/// let p = listwatch::parse_path("/apis/http.keda.sh/v1alpha1/namespaces/ns/httpscaledobjects/a/status").unwrap();
/// assert_eq!(p.gvr.group, "http.keda.sh");
/// assert_eq!(p.namespace.as_deref(), Some("ns"));
/// assert_eq!(p.name.as_deref(), Some("a"));
/// assert_eq!(p.subresource.as_deref(), Some("status"));
/// ```
pub fn parse_path(path: &str) -> Option<ResourcePath> {
    let path = path.split('?').next().unwrap_or("");
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        // `/api/v1/namespaces/<ns>` alone is the namespace object itself.
        // ... and `/api/v1/namespaces/<ns>/status` is its status subresource.
        ["namespaces", _, "status" | "finalize"] => (None, rest),
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(name.to_string()), None),
        [resource, name, sub] => (*resource, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    Some(ResourcePath {
        gvr: Gvr::new(group, version, resource),
        namespace,
        name,
        subresource,
    })
}

/// Kubernetes version priority for discovery order: GA > beta > alpha, then
/// by number (`v2` > `v1` > `v1beta2` > `v1beta1` > `v1alpha1`).
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        (3, major, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, major, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, major, n.parse().unwrap_or(0))
    } else {
        (0, major, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Want<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );

    #[test]
    fn paths() {
        let cases: &[(&str, Option<Want<'_>>)] = &[
            ("/api/v1/pods", Some(("", "v1", "pods", None, None, None))),
            (
                "/api/v1/namespaces/default/pods?watch=1",
                Some(("", "v1", "pods", Some("default"), None, None)),
            ),
            (
                "/api/v1/namespaces/default/pods/p/status",
                Some(("", "v1", "pods", Some("default"), Some("p"), Some("status"))),
            ),
            (
                "/api/v1/namespaces/default",
                Some(("", "v1", "namespaces", None, Some("default"), None)),
            ),
            (
                "/apis/discovery.k8s.io/v1/endpointslices",
                Some(("discovery.k8s.io", "v1", "endpointslices", None, None, None)),
            ),
            (
                "/apis/http.keda.sh/v1alpha1/namespaces/n/httpscaledobjects/x",
                Some((
                    "http.keda.sh",
                    "v1alpha1",
                    "httpscaledobjects",
                    Some("n"),
                    Some("x"),
                    None,
                )),
            ),
            ("/apis/http.keda.sh/v1alpha1", None),
            ("/api", None),
            ("/api/v1", None),
            ("/version", None),
            ("/api/v1/namespaces/a/pods/b/c/d", None),
        ];
        for (path, want) in cases {
            let got = parse_path(path).map(|p| {
                (
                    p.gvr.group,
                    p.gvr.version,
                    p.gvr.resource,
                    p.namespace,
                    p.name,
                    p.subresource,
                )
            });
            let want = want.map(|(g, v, r, ns, n, s)| {
                (
                    g.to_string(),
                    v.to_string(),
                    r.to_string(),
                    ns.map(str::to_string),
                    n.map(str::to_string),
                    s.map(str::to_string),
                )
            });
            assert_eq!(got, want, "{path}");
        }
    }
}
