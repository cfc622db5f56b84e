//! The CustomResourceDefinitions of this add-on, as installed in a cluster.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{HTTPScaledObject, InterceptorRoute};

/// Both CustomResourceDefinitions: `httpscaledobjects.http.keda.sh` and
/// `interceptorroutes.http.keda.sh`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![HTTPScaledObject::crd(), InterceptorRoute::crd()]
}

/// [`crds`] as one multi-document YAML string, ready for `kubectl apply -f -`.
///
/// ```
/// let yaml = api::crds_yaml();
/// assert!(yaml.starts_with("---\n"));
/// assert_eq!(yaml.matches("kind: CustomResourceDefinition\n").count(), 2);
/// ```
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| {
            let body = serde_yaml::to_string(crd)
                .expect("a CustomResourceDefinition always serializes to YAML");
            format!("---\n{body}")
        })
        .collect()
}
