//! The Kubernetes discovery documents (`/version`, `/api`, `/api/v1`,
//! `/apis`, `/apis/<group>`, `/apis/<group>/<version>`) for the resources a
//! server holds: what kube-rs and kubectl read before they list or watch.
//! Both servers built on this crate (`testkit`, the cache) answer them from
//! a [`Discovery`].
//!
//! Resource identities come from the types' `kube::Resource` impls
//! ([`ResourceDef::of`], [`ResourceDef::crd`]), so group, version, kind and
//! plural are written once, on the type.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{Gvr, ResourceType, version_priority};

/// A resource as discovery describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceDef {
    /// Group/version/plural, kind, scope.
    pub resource: ResourceType,
    /// Lower-case singular name, e.g. `httpscaledobject`.
    pub singular: String,
    /// Short names, e.g. `httpso`.
    pub short_names: Vec<String>,
    /// Whether `.status` is a subresource (writable servers only).
    pub status_subresource: bool,
}

/// Whether a `kube::Resource`'s scope is namespaced.
pub trait Scope {
    /// True for namespaced resources.
    const NAMESPACED: bool;
}

impl Scope for kube::core::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl Scope for kube::core::ClusterResourceScope {
    const NAMESPACED: bool = false;
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

    /// The resource of a type with static resource information (every
    /// k8s-openapi type and every `#[derive(CustomResource)]`).
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::Service;
    /// let svc = listwatch::ResourceDef::of::<Service>();
    /// assert_eq!(svc.gvr(), &listwatch::Gvr::new("", "v1", "services"));
    /// assert!(svc.resource.namespaced);
    /// ```
    pub fn of<K>() -> Self
    where
        K: kube::Resource<DynamicType = ()>,
        K::Scope: Scope,
    {
        ResourceDef::new(
            &K::group(&()),
            &K::version(&()),
            &K::plural(&()),
            &K::kind(&()),
            <K::Scope as Scope>::NAMESPACED,
        )
    }

    /// [`of`](ResourceDef::of) a custom resource, with the short names of
    /// its CustomResourceDefinition.
    pub fn crd<K>() -> Self
    where
        K: kube::Resource<DynamicType = ()> + kube::CustomResourceExt,
        K::Scope: Scope,
    {
        ResourceDef::of::<K>().short_names(K::shortnames())
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

    /// `/apis/<g>/<v>` or `/api/v1`: the prefix of its paths.
    pub fn group_version_path(&self) -> String {
        let gvr = self.gvr();
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
                format!("{base}/namespaces/{ns}/{}", self.gvr().resource)
            }
            _ => format!("{base}/{}", self.gvr().resource),
        }
    }
}

/// What clients may do with the resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `get`, `list`, `watch` (the cache); no subresources.
    ReadOnly,
    /// Every verb, and `<plural>/status` where declared (testkit).
    ReadWrite,
}

const READ_VERBS: &[&str] = &["get", "list", "watch"];
const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The discovery documents of a set of resources.
///
/// ```
/// use listwatch::{Access, Discovery, ResourceDef};
/// let mut d = Discovery::new("example", Access::ReadOnly);
/// d.register(ResourceDef::new("apps", "v1", "deployments", "Deployment", true));
/// let list = d.document("/apis/apps/v1", "127.0.0.1:80").unwrap();
/// assert_eq!(list["resources"][0]["kind"], "Deployment");
/// assert!(d.document("/apis/batch/v1", "127.0.0.1:80").is_none());
/// ```
#[derive(Clone, Debug)]
pub struct Discovery {
    server: String,
    access: Access,
    defs: BTreeMap<Gvr, ResourceDef>,
}

impl Discovery {
    /// No resources yet. `server` names the server in `/version`'s
    /// `gitVersion` (`v1.33.0-<server>`).
    pub fn new(server: &str, access: Access) -> Discovery {
        Discovery {
            server: server.to_owned(),
            access,
            defs: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a resource.
    pub fn register(&mut self, def: ResourceDef) {
        self.defs.insert(def.gvr().clone(), def);
    }

    /// Forgets a resource (as if its CRD were deleted); returns it.
    pub fn unregister(&mut self, gvr: &Gvr) -> Option<ResourceDef> {
        self.defs.remove(gvr)
    }

    /// The resource with this key.
    pub fn get(&self, gvr: &Gvr) -> Option<&ResourceDef> {
        self.defs.get(gvr)
    }

    /// The resource with this apiVersion and kind (for loading manifests).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceDef> {
        self.defs
            .values()
            .find(|d| d.resource.api_version() == api_version && d.resource.kind == kind)
    }

    /// Every resource, by key.
    pub fn resources(&self) -> impl Iterator<Item = &ResourceDef> {
        self.defs.values()
    }

    /// The document for a discovery `path`, if it is one. `addr` is the
    /// server's address as clients reach it (for `/api`).
    pub fn document(&self, path: &str, addr: &str) -> Option<Value> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segs.as_slice() {
            ["version"] => Some(json!({
                "major": "1",
                "minor": "33",
                "gitVersion": format!("v1.33.0-{}", self.server),
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
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}],
            })),
            // The core group always has v1, even when no core resource is held.
            ["api", "v1"] => Some(
                self.resource_list("", "v1")
                    .unwrap_or_else(|| Self::list_json("v1", Vec::new())),
            ),
            ["apis"] => {
                let groups: Vec<Value> = self
                    .groups()
                    .iter()
                    .map(|(g, vs)| Self::group_json(g, vs))
                    .collect();
                Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
            }
            ["apis", group] => {
                let groups = self.groups();
                let vs = groups.get(*group)?;
                let mut v = Self::group_json(group, vs);
                v["kind"] = json!("APIGroup");
                v["apiVersion"] = json!("v1");
                Some(v)
            }
            ["apis", group, version] => self.resource_list(group, version),
            _ => None,
        }
    }

    /// Groups (not core) with their versions, highest priority first (the
    /// first is the preferred version, as the API server orders them).
    fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for gvr in self.defs.keys().filter(|g| !g.group.is_empty()) {
            let vs = groups.entry(gvr.group.clone()).or_default();
            if !vs.contains(&gvr.version) {
                vs.push(gvr.version.clone());
            }
        }
        for vs in groups.values_mut() {
            vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
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

    fn list_json(group_version: &str, resources: Vec<Value>) -> Value {
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        })
    }

    fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let verbs = match self.access {
            Access::ReadOnly => READ_VERBS,
            Access::ReadWrite => ALL_VERBS,
        };
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
                "verbs": verbs,
                "shortNames": d.short_names,
            }));
            if d.status_subresource && self.access == Access::ReadWrite {
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
        Some(Self::list_json(
            &Gvr::new(group, version, "").api_version(),
            resources,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> Vec<ResourceDef> {
        vec![
            ResourceDef::new("x.io", "v1alpha1", "things", "Thing", true)
                .short_names(&["th"])
                .with_status(),
            ResourceDef::new("x.io", "v1beta1", "others", "Other", true),
            ResourceDef::new("", "v1", "services", "Service", true).short_names(&["svc"]),
            ResourceDef::new("", "v1", "namespaces", "Namespace", false),
        ]
    }

    fn discovery(access: Access) -> Discovery {
        let mut d = Discovery::new("test", access);
        for def in defs() {
            d.register(def);
        }
        d
    }

    #[test]
    fn groups_list_the_newest_version_first() {
        let d = discovery(Access::ReadOnly);
        let apis = d.document("/apis", "x").unwrap();
        assert_eq!(apis["kind"], "APIGroupList");
        let x = &apis["groups"][0];
        assert_eq!(x["name"], "x.io");
        assert_eq!(x["preferredVersion"]["version"], "v1beta1");
        assert_eq!(x["versions"][1]["groupVersion"], "x.io/v1alpha1");
        let group = d.document("/apis/x.io", "x").unwrap();
        assert_eq!(group["kind"], "APIGroup");
        assert_eq!(group["preferredVersion"], x["preferredVersion"]);
        assert!(d.document("/apis/y.io", "x").is_none());
    }

    #[test]
    fn read_only_resources_have_read_verbs_and_no_subresources() {
        let d = discovery(Access::ReadOnly);
        let list = d.document("/apis/x.io/v1alpha1", "x").unwrap();
        assert_eq!(list["groupVersion"], "x.io/v1alpha1");
        assert_eq!(list["resources"].as_array().unwrap().len(), 1);
        assert_eq!(
            list["resources"][0]["verbs"],
            json!(["get", "list", "watch"])
        );
        assert_eq!(list["resources"][0]["shortNames"], json!(["th"]));
        assert_eq!(list["resources"][0]["singularName"], "thing");
    }

    #[test]
    fn writable_resources_have_every_verb_and_status() {
        let d = discovery(Access::ReadWrite);
        let list = d.document("/apis/x.io/v1alpha1", "x").unwrap();
        assert_eq!(list["resources"][0]["verbs"].as_array().unwrap().len(), 8);
        assert_eq!(list["resources"][1]["name"], "things/status");
        let core = d.document("/api/v1", "x").unwrap();
        assert_eq!(core["groupVersion"], "v1");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["namespaces", "services"]);
        assert_eq!(core["resources"][0]["namespaced"], false);
    }

    #[test]
    fn core_v1_and_version_always_exist() {
        let d = Discovery::new("empty", Access::ReadOnly);
        assert_eq!(d.document("/api/v1", "x").unwrap()["resources"], json!([]));
        assert_eq!(
            d.document("/version", "x").unwrap()["gitVersion"],
            "v1.33.0-empty"
        );
        assert_eq!(
            d.document("/api", "1.2.3.4:5").unwrap()["serverAddressByClientCIDRs"][0]["serverAddress"],
            "1.2.3.4:5"
        );
        assert!(d.document("/apis/x.io/v1", "x").is_none());
        assert!(d.document("/healthz", "x").is_none());
    }

    #[test]
    fn identities_come_from_the_types() {
        use k8s_openapi::api::core::v1::Namespace;
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        let ns = ResourceDef::of::<Namespace>();
        assert!(!ns.resource.namespaced);
        assert_eq!(ns.collection_path(Some("x")), "/api/v1/namespaces");
        let es = ResourceDef::of::<EndpointSlice>();
        assert_eq!(
            es.collection_path(Some("ns")),
            "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices"
        );
        assert_eq!(es.resource.kind, "EndpointSlice");
        assert_eq!(es.singular, "endpointslice");
    }

    #[test]
    fn paths() {
        let d = ResourceDef::new("x.io", "v1", "things", "Thing", true);
        assert_eq!(d.group_version_path(), "/apis/x.io/v1");
        assert_eq!(d.collection_path(None), "/apis/x.io/v1/things");
        let s = ResourceDef::new("", "v1", "services", "Service", true);
        assert_eq!(
            s.collection_path(Some("ns")),
            "/api/v1/namespaces/ns/services"
        );
    }
}
