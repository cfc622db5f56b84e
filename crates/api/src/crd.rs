//! The CustomResourceDefinitions of this add-on, as installed in a cluster.
//!
//! They accept and default what upstream's CRDs do (checked field by field
//! against a description of upstream's files in `tests/crds_upstream.rs`),
//! with the few stricter rules documented on the types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::{HTTPScaledObject, InterceptorRoute};

/// Both CustomResourceDefinitions: `httpscaledobjects.http.keda.sh` and
/// `interceptorroutes.http.keda.sh`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![HTTPScaledObject::crd(), InterceptorRoute::crd()];
    for version in crds.iter_mut().flat_map(|crd| crd.spec.versions.iter_mut()) {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            drop_nullable(schema);
        }
    }
    crds
}

/// Removes `nullable`, which kube-derive puts on every `Option` field and
/// upstream's CRDs never have. It is not cosmetic: the API server prunes a
/// `null` from a field that is not nullable (and then applies the field's
/// default), but keeps it in a nullable one, so `targetValue: null` would
/// stay null instead of becoming 100 as upstream does.
fn drop_nullable(schema: &mut JSONSchemaProps) {
    schema.nullable = None;
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        drop_nullable(child);
    }
    match &mut schema.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => drop_nullable(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().for_each(drop_nullable),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(value)) = &mut schema.additional_properties {
        drop_nullable(value);
    }
    for branches in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of] {
        branches.iter_mut().flatten().for_each(drop_nullable);
    }
    if let Some(not) = &mut schema.not {
        drop_nullable(not);
    }
}

/// [`crds`] as one multi-document YAML string, ready for `kubectl apply -f -`.
///
/// ```
/// let yaml = api::crds_yaml();
/// assert!(yaml.starts_with("---\n"));
/// assert_eq!(yaml.matches("kind: CustomResourceDefinition\n").count(), 2);
/// assert!(!yaml.contains("nullable"));
/// ```
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| {
            let body = crate::yaml::to_string(crd)
                .expect("a CustomResourceDefinition always serializes to YAML");
            format!("---\n{body}")
        })
        .collect()
}
