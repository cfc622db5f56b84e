//! Which resources the server knows for discovery, and their traits.

use std::collections::BTreeMap;

use listwatch::{Gvr, ResourceType};
use serde_json::{Value, json};

/// A resource as discovery describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceDef {
    /// Group/version/plural, kind, scope.
    pub resource: ResourceType,
    /// Lower-case singular name, e.g. `httpscaledobject`.
    pub singular: String,
    /// Short names, e.g. `httpso`.
    pub short_names: Vec<String>,
    /// Whether `.status` is a subresource: writes to the main resource
    /// ignore `.status`, and `.../status` changes only `.status`.
    pub status_subresource: bool,
}

impl ResourceDef {
    /// A resource without short names or status subresource.
    pub fn new(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        ResourceDef {
            resource: ResourceType::new(group, version, plural, kind, namespaced),
            singular: kind.to_lowercase(),
            short_names: Vec::new(),
            status_subresource: false,
        }
    }

    /// Adds short names.
    pub fn short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Marks `.status` as a subresource.
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// The key.
    pub fn gvr(&self) -> &Gvr {
        &self.resource.gvr
    }
}

/// The resources registered out of the box.
pub fn builtin_resources() -> Vec<ResourceDef> {
    vec![
        ResourceDef::new(
            "http.keda.sh",
            "v1alpha1",
            "httpscaledobjects",
            "HTTPScaledObject",
            true,
        )
        .short_names(&["httpso"])
        .with_status(),
        ResourceDef::new(
            "http.keda.sh",
            "v1beta1",
            "interceptorroutes",
            "InterceptorRoute",
            true,
        )
        .with_status(),
        ResourceDef::new("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject", true)
            .short_names(&["so"])
            .with_status(),
        ResourceDef::new("", "v1", "services", "Service", true)
            .short_names(&["svc"])
            .with_status(),
        ResourceDef::new("", "v1", "endpoints", "Endpoints", true).short_names(&["ep"]),
        ResourceDef::new("", "v1", "configmaps", "ConfigMap", true).short_names(&["cm"]),
        ResourceDef::new("", "v1", "secrets", "Secret", true),
        ResourceDef::new("", "v1", "pods", "Pod", true)
            .short_names(&["po"])
            .with_status(),
        ResourceDef::new("", "v1", "namespaces", "Namespace", false)
            .short_names(&["ns"])
            .with_status(),
        ResourceDef::new("", "v1", "events", "Event", true).short_names(&["ev"]),
        ResourceDef::new(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
        ),
        ResourceDef::new("coordination.k8s.io", "v1", "leases", "Lease", true),
        ResourceDef::new("events.k8s.io", "v1", "events", "Event", true).short_names(&["ev"]),
        ResourceDef::new("apps", "v1", "deployments", "Deployment", true)
            .short_names(&["deploy"])
            .with_status(),
    ]
}

/// All registered resources.
#[derive(Clone, Debug, Default)]
pub(crate) struct Registry {
    defs: BTreeMap<Gvr, ResourceDef>,
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl Registry {
    pub(crate) fn with_builtins() -> Registry {
        let mut r = Registry::default();
        for d in builtin_resources() {
            r.register(d);
        }
        r
    }

    pub(crate) fn register(&mut self, def: ResourceDef) {
        self.defs.insert(def.gvr().clone(), def);
    }

    pub(crate) fn get(&self, gvr: &Gvr) -> Option<&ResourceDef> {
        self.defs.get(gvr)
    }

    /// The resource with this apiVersion and kind (for loading manifests).
    pub(crate) fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceDef> {
        self.defs
            .values()
            .find(|d| d.resource.api_version() == api_version && d.resource.kind == kind)
    }

    /// Groups (not core) with their versions, highest priority first.
    fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for gvr in self.defs.keys().filter(|g| !g.group.is_empty()) {
            let vs = groups.entry(gvr.group.clone()).or_default();
            if !vs.contains(&gvr.version) {
                vs.push(gvr.version.clone());
            }
        }
        for vs in groups.values_mut() {
            vs.sort_by_key(|v| std::cmp::Reverse(listwatch::version_priority(v)));
        }
        groups
    }

    fn group_json(name: &str, versions: &[String]) -> Value {
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
            .collect();
        json!({
            "name": name,
            "versions": vs,
            "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
        })
    }

    /// `/apis`
    pub(crate) fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(g, vs)| Self::group_json(g, vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/<group>`
    pub(crate) fn api_group(&self, group: &str) -> Option<Value> {
        let groups = self.groups();
        let vs = groups.get(group)?;
        let mut v = Self::group_json(group, vs);
        v["kind"] = json!("APIGroup");
        v["apiVersion"] = json!("v1");
        Some(v)
    }

    /// `/api/v1` or `/apis/<group>/<version>`
    pub(crate) fn api_resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let mut resources = Vec::new();
        for d in self
            .defs
            .values()
            .filter(|d| d.gvr().group == group && d.gvr().version == version)
        {
            resources.push(json!({
                "name": d.gvr().resource,
                "singularName": d.singular,
                "namespaced": d.resource.namespaced,
                "kind": d.resource.kind,
                "verbs": VERBS,
                "shortNames": d.short_names,
            }));
            if d.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", d.gvr().resource),
                    "singularName": "",
                    "namespaced": d.resource.namespaced,
                    "kind": d.resource.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        if resources.is_empty() {
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
            "resources": resources,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_by_priority() {
        let mut vs = vec!["v1alpha1", "v2", "v1beta1", "v1", "v1beta2"];
        vs.sort_by_key(|v| std::cmp::Reverse(listwatch::version_priority(v)));
        assert_eq!(vs, ["v2", "v1", "v1beta2", "v1beta1", "v1alpha1"]);
    }

    #[test]
    fn discovery_lists_builtins() {
        let r = Registry::with_builtins();
        let list = r.api_resource_list("http.keda.sh", "v1alpha1").unwrap();
        assert_eq!(list["resources"][0]["shortNames"][0], "httpso");
        assert_eq!(list["resources"][1]["name"], "httpscaledobjects/status");
        let groups = r.api_group_list();
        let keda = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "http.keda.sh")
            .unwrap();
        assert_eq!(keda["preferredVersion"]["version"], "v1beta1");
        assert!(r.api_resource_list("", "v1").is_some());
        assert!(r.api_resource_list("nope", "v1").is_none());
    }
}
