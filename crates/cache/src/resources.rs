//! The resources a cache mirrors and serves. Their discovery documents
//! (what kube-rs and kubectl read before a list) come from
//! [`listwatch::Discovery`], the same code as testkit's.

use api::{HTTPScaledObject, InterceptorRoute};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use listwatch::ResourceDef;

/// One resource the cache mirrors from its upstream and serves.
pub type ServedResource = ResourceDef;

/// What an interceptor reads: HTTPScaledObjects, InterceptorRoutes,
/// Services, EndpointSlices and the response-body ConfigMaps (only those
/// labelled `http.keda.sh/response-body=true` are mirrored, see
/// [`upstream_selector`]).
pub fn interceptor_resources() -> Vec<ServedResource> {
    vec![
        ResourceDef::crd::<HTTPScaledObject>(),
        ResourceDef::crd::<InterceptorRoute>(),
        ResourceDef::of::<Service>().short_names(&["svc"]),
        ResourceDef::of::<EndpointSlice>(),
        ResourceDef::of::<ConfigMap>().short_names(&["cm"]),
    ]
}

/// The label selector the cache lists and watches `resource` with: the
/// cache's own (`--label-selector`), and for ConfigMaps also the
/// response-body label, so the cache holds no other ConfigMap.
pub(crate) fn upstream_selector(resource: &ServedResource, cache: Option<&str>) -> Option<String> {
    let own = (resource.gvr().resource == "configmaps").then_some(api::RESPONSE_BODY_SELECTOR);
    match (cache, own) {
        (Some(c), Some(o)) => Some(format!("{c},{o}")),
        (c, o) => c.or(o).map(str::to_owned),
    }
}

/// A `--resources` name that is not one of [`interceptor_resources`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource {name:?} (known: {known})")]
pub struct UnknownResource {
    /// The name given.
    pub name: String,
    /// The known names, comma-separated.
    pub known: String,
}

/// Picks resources from [`interceptor_resources`] by plural name
/// (`httpscaledobjects,interceptorroutes`); an unknown name is an error.
pub fn select_resources(names: &[String]) -> Result<Vec<ServedResource>, UnknownResource> {
    let all = interceptor_resources();
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|r| r.gvr().resource == *n)
                .cloned()
                .ok_or_else(|| UnknownResource {
                    name: n.clone(),
                    known: all
                        .iter()
                        .map(|r| r.gvr().resource.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        })
        .collect()
}

/// The discovery documents for a set of served (read-only) resources.
pub(crate) fn discovery(resources: &[ServedResource]) -> listwatch::Discovery {
    let mut d = listwatch::Discovery::new("keda-http-cache", listwatch::Access::ReadOnly);
    for r in resources {
        d.register(r.clone());
    }
    d
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    // How discovery orders versions and names verbs is `listwatch`'s (its
    // tests); here: the cache serves exactly its resources, read-only.
    #[test]
    fn discovery_serves_the_resources_read_only() {
        let d = discovery(&interceptor_resources());
        let served = |path: &str| -> Vec<(String, Value)> {
            let doc = d.document(path, "x").unwrap();
            let resources = doc["resources"].as_array().unwrap().iter();
            resources
                .map(|r| (r["kind"].as_str().unwrap().to_owned(), r["verbs"].clone()))
                .collect()
        };
        let read = json!(["get", "list", "watch"]);
        let kinds = |names: &[&str]| -> Vec<(String, Value)> {
            names
                .iter()
                .map(|k| (k.to_string(), read.clone()))
                .collect()
        };
        assert_eq!(
            served("/apis/http.keda.sh/v1alpha1"),
            kinds(&["HTTPScaledObject"])
        );
        assert_eq!(served("/api/v1"), kinds(&["ConfigMap", "Service"]));
        let core = d.document("/api/v1", "x").unwrap();
        assert_eq!(core["resources"][1]["shortNames"], json!(["svc"]));
        assert!(d.document("/apis/apps/v1", "x").is_none());
        let version = d.document("/version", "x").unwrap();
        assert_eq!(version["gitVersion"], "v1.33.0-keda-http-cache");
    }

    #[test]
    fn identities_are_the_api_types() {
        let r = interceptor_resources();
        let names: Vec<String> = r.iter().map(|r| r.gvr().to_string()).collect();
        assert_eq!(
            names,
            [
                "http.keda.sh/v1alpha1/httpscaledobjects",
                "http.keda.sh/v1beta1/interceptorroutes",
                "v1/services",
                "discovery.k8s.io/v1/endpointslices",
                "v1/configmaps"
            ]
        );
        assert_eq!(r[0].short_names, ["httpso"]);
        assert!(r.iter().all(|r| r.resource.namespaced));
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
        let err = select_resources(&["pods".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown resource \"pods\" (known: httpscaledobjects, interceptorroutes, services, endpointslices, configmaps)"
        );
    }

    #[test]
    fn only_response_body_config_maps_are_mirrored() {
        let r = interceptor_resources();
        assert_eq!(upstream_selector(&r[0], None), None);
        assert_eq!(
            upstream_selector(&r[0], Some("a=b")).as_deref(),
            Some("a=b")
        );
        assert_eq!(
            upstream_selector(&r[4], None).as_deref(),
            Some("http.keda.sh/response-body=true")
        );
        assert_eq!(
            upstream_selector(&r[4], Some("a=b")).as_deref(),
            Some("a=b,http.keda.sh/response-body=true")
        );
    }
}
