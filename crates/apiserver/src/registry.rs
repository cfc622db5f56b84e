//! The resources the server knows out of the box. Discovery itself is
//! `listwatch`'s ([`Discovery`], shared with the cache); identities come
//! from the types' `kube::Resource` impls.

use api::{HTTPScaledObject, InterceptorRoute, ScaledObject};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventsEvent;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
pub use listwatch::ResourceDef;
use listwatch::{Access, Discovery};

/// The resources registered out of the box.
pub fn builtin_resources() -> Vec<ResourceDef> {
    vec![
        ResourceDef::crd::<HTTPScaledObject>().with_status(),
        ResourceDef::crd::<InterceptorRoute>().with_status(),
        ResourceDef::of::<ScaledObject>()
            .short_names(&["so"])
            .with_status(),
        ResourceDef::of::<Service>()
            .short_names(&["svc"])
            .with_status(),
        ResourceDef::of::<Endpoints>().short_names(&["ep"]),
        ResourceDef::of::<ConfigMap>().short_names(&["cm"]),
        ResourceDef::of::<Secret>(),
        ResourceDef::of::<Pod>().short_names(&["po"]).with_status(),
        ResourceDef::of::<Namespace>()
            .short_names(&["ns"])
            .with_status(),
        ResourceDef::of::<Event>().short_names(&["ev"]),
        ResourceDef::of::<EndpointSlice>(),
        ResourceDef::of::<Lease>(),
        ResourceDef::of::<EventsEvent>().short_names(&["ev"]),
        ResourceDef::of::<Deployment>()
            .short_names(&["deploy"])
            .with_status(),
        // What an install creates besides workloads (`deploy/`), so its
        // rendered manifests can be applied here as on a cluster.
        ResourceDef::of::<ServiceAccount>().short_names(&["sa"]),
        ResourceDef::of::<ClusterRole>(),
        ResourceDef::of::<ClusterRoleBinding>(),
        ResourceDef::of::<Role>(),
        ResourceDef::of::<RoleBinding>(),
        ResourceDef::of::<PodDisruptionBudget>()
            .short_names(&["pdb"])
            .with_status(),
        ResourceDef::of::<CustomResourceDefinition>()
            .short_names(&["crd", "crds"])
            .with_status(),
    ]
}

/// Discovery of a writable server holding [`builtin_resources`].
pub(crate) fn with_builtins() -> Discovery {
    let mut d = Discovery::new("http-addon", Access::ReadWrite);
    for def in builtin_resources() {
        d.register(def);
    }
    d
}

#[cfg(test)]
mod tests {
    use listwatch::Gvr;

    use super::*;

    #[test]
    fn versions_sort_by_priority() {
        let mut vs = vec!["v1alpha1", "v2", "v1beta1", "v1", "v1beta2"];
        vs.sort_by_key(|v| std::cmp::Reverse(listwatch::version_priority(v)));
        assert_eq!(vs, ["v2", "v1", "v1beta2", "v1beta1", "v1alpha1"]);
    }

    #[test]
    fn discovery_lists_builtins() {
        let r = with_builtins();
        let list = r.document("/apis/http.keda.sh/v1alpha1", "x").unwrap();
        assert_eq!(list["resources"][0]["shortNames"][0], "httpso");
        assert_eq!(list["resources"][1]["name"], "httpscaledobjects/status");
        // Version order and verbs are `listwatch`'s (its tests).
        assert!(r.document("/api/v1", "x").is_some());
        assert!(r.document("/apis/nope/v1", "x").is_none());
        assert_eq!(
            r.document("/version", "x").unwrap()["gitVersion"],
            "v1.33.0-http-addon"
        );
    }

    #[test]
    fn builtins_are_the_known_identities() {
        let names: Vec<String> = builtin_resources()
            .iter()
            .map(|d| d.gvr().to_string())
            .collect();
        for want in [
            "http.keda.sh/v1alpha1/httpscaledobjects",
            "http.keda.sh/v1beta1/interceptorroutes",
            "keda.sh/v1alpha1/scaledobjects",
            "v1/services",
            "v1/endpoints",
            "v1/configmaps",
            "v1/secrets",
            "v1/pods",
            "v1/namespaces",
            "v1/events",
            "discovery.k8s.io/v1/endpointslices",
            "coordination.k8s.io/v1/leases",
            "events.k8s.io/v1/events",
            "apps/v1/deployments",
            "v1/serviceaccounts",
            "rbac.authorization.k8s.io/v1/clusterroles",
            "rbac.authorization.k8s.io/v1/clusterrolebindings",
            "rbac.authorization.k8s.io/v1/roles",
            "rbac.authorization.k8s.io/v1/rolebindings",
            "policy/v1/poddisruptionbudgets",
            "apiextensions.k8s.io/v1/customresourcedefinitions",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        let r = with_builtins();
        let ns = r.get(&Gvr::new("", "v1", "namespaces")).unwrap();
        assert!(!ns.resource.namespaced);
        for cluster_scoped in ["clusterroles", "clusterrolebindings"] {
            let gvr = Gvr::new("rbac.authorization.k8s.io", "v1", cluster_scoped);
            assert!(!r.get(&gvr).unwrap().resource.namespaced, "{gvr}");
        }
        let crd = Gvr::new("apiextensions.k8s.io", "v1", "customresourcedefinitions");
        assert!(!r.get(&crd).unwrap().resource.namespaced);
        let pdb = Gvr::new("policy", "v1", "poddisruptionbudgets");
        assert!(r.get(&pdb).unwrap().resource.namespaced);
        assert_eq!(
            r.by_kind("http.keda.sh/v1beta1", "InterceptorRoute")
                .unwrap()
                .gvr()
                .resource,
            "interceptorroutes"
        );
    }
}
