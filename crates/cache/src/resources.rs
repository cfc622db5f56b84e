//! The resources a cache mirrors and serves, and the discovery documents
//! that describe them (what kube-rs and kubectl read before a list).

use listwatch::ResourceType;
use serde_json::{Value, json};

/// One resource the cache mirrors from its upstream and serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedResource {
    /// Group, version, plural, kind and scope.
    pub resource: ResourceType,
    /// Lower-case singular name, e.g. `httpscaledobject`.
    pub singular: String,
    /// Short names, e.g. `httpso`.
    pub short_names: Vec<String>,
}

impl ServedResource {
    /// A resource with the given names.
    pub fn new(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        short_names: &[&str],
    ) -> Self {
        ServedResource {
            resource: ResourceType::new(group, version, plural, kind, namespaced),
            singular: kind.to_lowercase(),
            short_names: short_names.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `/apis/<g>/<v>` or `/api/v1`: the prefix of its paths.
    pub fn group_version_path(&self) -> String {
        let gvr = &self.resource.gvr;
        if gvr.group.is_empty() {
            format!("/api/{}", gvr.version)
        } else {
            format!("/apis/{}/{}", gvr.group, gvr.version)
        }
    }

    /// The collection path, cluster-wide or in one namespace.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let base = self.group_version_path();
        match namespace {
            Some(ns) if self.resource.namespaced => {
                format!("{base}/namespaces/{ns}/{}", self.resource.gvr.resource)
            }
            _ => format!("{base}/{}", self.resource.gvr.resource),
        }
    }
}

/// What an interceptor reads: HTTPScaledObjects, InterceptorRoutes,
/// Services and EndpointSlices.
pub fn interceptor_resources() -> Vec<ServedResource> {
    vec![
        ServedResource::new(
            "http.keda.sh",
            "v1alpha1",
            "httpscaledobjects",
            "HTTPScaledObject",
            true,
            &["httpso"],
        ),
        ServedResource::new(
            "http.keda.sh",
            "v1beta1",
            "interceptorroutes",
            "InterceptorRoute",
            true,
            &[],
        ),
        ServedResource::new("", "v1", "services", "Service", true, &["svc"]),
        ServedResource::new(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            &[],
        ),
    ]
}

/// Picks resources from [`interceptor_resources`] by plural name
/// (`httpscaledobjects,interceptorroutes`); an unknown name is an error.
pub fn select_resources(names: &[String]) -> Result<Vec<ServedResource>, String> {
    let all = interceptor_resources();
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|r| r.resource.gvr.resource == *n)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "unknown resource {n:?} (known: httpscaledobjects, interceptorroutes, services, endpointslices)"
                    )
                })
        })
        .collect()
}

/// The discovery documents for a set of served resources.
#[derive(Debug, Clone)]
pub(crate) struct Discovery {
    resources: Vec<ServedResource>,
}

impl Discovery {
    pub(crate) fn new(resources: Vec<ServedResource>) -> Self {
        Discovery { resources }
    }

    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            let gvr = &r.resource.gvr;
            if gvr.group.is_empty() {
                continue;
            }
            match groups.iter_mut().find(|(g, _)| *g == gvr.group) {
                Some((_, versions)) => {
                    if !versions.contains(&gvr.version) {
                        versions.push(gvr.version.clone());
                    }
                }
                None => groups.push((gvr.group.clone(), vec![gvr.version.clone()])),
            }
        }
        for (_, versions) in &mut groups {
            // Newest first, as the API server orders them (preferred first).
            versions.sort_by_key(|v| std::cmp::Reverse(listwatch::version_priority(v)));
        }
        groups
    }

    fn group_json(group: &str, versions: &[String]) -> Value {
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        json!({
            "name": group,
            "versions": vs,
            "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
        })
    }

    fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let items: Vec<Value> = self
            .resources
            .iter()
            .filter(|r| r.resource.gvr.group == group && r.resource.gvr.version == version)
            .map(|r| {
                json!({
                    "name": r.resource.gvr.resource,
                    "singularName": r.singular,
                    "namespaced": r.resource.namespaced,
                    "kind": r.resource.kind,
                    "verbs": ["get", "list", "watch"],
                    "shortNames": r.short_names,
                })
            })
            .collect();
        if items.is_empty() {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": items,
        }))
    }

    /// The document for a discovery `path`, if it is one.
    pub(crate) fn document(&self, path: &str, server: &str) -> Option<Value> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segs.as_slice() {
            ["version"] => Some(json!({
                "major": "1",
                "minor": "33",
                "gitVersion": "v1.33.0-keda-http-cache",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.24.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            })),
            ["api"] => Some(json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
            })),
            ["api", "v1"] => Some(self.resource_list("", "v1").unwrap_or_else(|| {
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": []})
            })),
            ["apis"] => {
                let groups: Vec<Value> = self
                    .groups()
                    .iter()
                    .map(|(g, vs)| Self::group_json(g, vs))
                    .collect();
                Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
            }
            ["apis", group] => self
                .groups()
                .iter()
                .find(|(g, _)| g == group)
                .map(|(g, vs)| {
                    let mut v = Self::group_json(g, vs);
                    v["kind"] = json!("APIGroup");
                    v["apiVersion"] = json!("v1");
                    v
                }),
            ["apis", group, version] => self.resource_list(group, version),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_groups_newest_version_first() {
        let d = Discovery::new(interceptor_resources());
        let apis = d.document("/apis", "x").unwrap();
        let keda = apis["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "http.keda.sh")
            .unwrap();
        assert_eq!(keda["preferredVersion"]["version"], "v1beta1");
        let list = d.document("/apis/http.keda.sh/v1alpha1", "x").unwrap();
        assert_eq!(list["resources"][0]["name"], "httpscaledobjects");
        assert_eq!(
            list["resources"][0]["verbs"],
            json!(["get", "list", "watch"])
        );
        let core = d.document("/api/v1", "x").unwrap();
        assert_eq!(core["resources"][0]["kind"], "Service");
        assert!(d.document("/apis/apps/v1", "x").is_none());
    }

    #[test]
    fn paths() {
        let r = &interceptor_resources()[0];
        assert_eq!(
            r.collection_path(Some("ns")),
            "/apis/http.keda.sh/v1alpha1/namespaces/ns/httpscaledobjects"
        );
        let s = &interceptor_resources()[2];
        assert_eq!(s.collection_path(None), "/api/v1/services");
        assert!(select_resources(&["pods".into()]).is_err());
    }
}
