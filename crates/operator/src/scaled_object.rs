//! The KEDA `ScaledObject` an HTTPScaledObject stands for: a pure function
//! of the HTTPScaledObject and the scaler's address, so what the operator
//! applies is exactly what a unit test sees.

use std::collections::BTreeMap;

use api::{
    HTTPScaledObject, ScaleTrigger, ScaledObject, ScaledObjectAdvanced, ScaledObjectSpec,
    ScaledObjectTarget,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

/// KEDA polls the external scaler this often (seconds), as upstream sets.
pub const POLLING_INTERVAL: i32 = 15;

/// The trigger type: the scaler pushes activity to KEDA.
pub const TRIGGER_TYPE: &str = "external-push";

/// The ScaledObject for `hso`, owned by it (`controller: true`), pointing
/// KEDA at the external scaler at `scaler_address` (`host:port`).
pub fn desired(hso: &HTTPScaledObject, scaler_address: &str) -> ScaledObject {
    let meta = &hso.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let spec = &hso.spec;
    let target = &spec.scale_target_ref;
    let replicas = spec.replicas.as_ref();
    let metadata = BTreeMap::from([
        ("httpScaledObject".to_string(), name.clone()),
        ("scalerAddress".to_string(), scaler_address.to_string()),
    ]);
    ScaledObject {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: meta.namespace.clone(),
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
            owner_references: Some(vec![owner_reference(hso)]),
            ..ObjectMeta::default()
        },
        spec: ScaledObjectSpec {
            scale_target_ref: ScaledObjectTarget {
                api_version: target.api_version.clone(),
                kind: target.kind.clone(),
                name: target.name.clone(),
            },
            polling_interval: Some(POLLING_INTERVAL),
            cooldown_period: spec.scaledown_period,
            initial_cooldown_period: spec.initial_cooldown_period,
            min_replica_count: replicas.and_then(|r| r.min),
            max_replica_count: replicas.and_then(|r| r.max),
            advanced: Some(ScaledObjectAdvanced {
                restore_to_original_replica_count: Some(true),
            }),
            triggers: vec![ScaleTrigger {
                type_: TRIGGER_TYPE.to_string(),
                name: None,
                metadata,
            }],
        },
        status: None,
    }
}

/// The owner reference that ties a ScaledObject to its HTTPScaledObject.
pub fn owner_reference(hso: &HTTPScaledObject) -> OwnerReference {
    OwnerReference {
        api_version: HTTPScaledObject::api_version(&()).into_owned(),
        kind: HTTPScaledObject::kind(&()).into_owned(),
        name: hso.metadata.name.clone().unwrap_or_default(),
        uid: hso.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `refs` name the HTTPScaledObject `name` as an owner (by kind and
/// name, as upstream checks, so a ScaledObject written by upstream's
/// operator is recognised too).
pub fn owned_by(refs: Option<&[OwnerReference]>, name: &str) -> bool {
    refs.unwrap_or_default()
        .iter()
        .any(|r| r.kind.eq_ignore_ascii_case(&HTTPScaledObject::kind(&())) && r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hso(spec: serde_json::Value) -> HTTPScaledObject {
        api::parse_http_scaled_object(json!({
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1",
                "labels": {"team": "a"}, "annotations": {"note": "n"}
            },
            "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn every_field_upstream_sets() {
        let so = desired(
            &hso(json!({
                "scaleTargetRef": {"name": "web", "kind": "Deployment", "apiVersion": "apps/v1", "service": "web", "port": 8080},
                "replicas": {"min": 1, "max": 7},
                "scaledownPeriod": 120,
                "initialCooldownPeriod": 30,
                "scalingMetric": {"concurrency": {"targetValue": 10}},
                "timeouts": {"conditionWait": "5s"}
            })),
            "keda-add-ons-http-external-scaler.keda:9090",
        );
        let v = serde_json::to_value(&so).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {
                    "name": "web", "namespace": "shop",
                    "labels": {"team": "a"}, "annotations": {"note": "n"},
                    "ownerReferences": [{
                        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
                        "name": "web", "uid": "u-1", "controller": true, "blockOwnerDeletion": true
                    }]
                },
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "pollingInterval": 15,
                    "cooldownPeriod": 120,
                    "initialCooldownPeriod": 30,
                    "minReplicaCount": 1,
                    "maxReplicaCount": 7,
                    "advanced": {"restoreToOriginalReplicaCount": true},
                    "triggers": [{
                        "type": "external-push",
                        "metadata": {
                            "httpScaledObject": "web",
                            "scalerAddress": "keda-add-ons-http-external-scaler.keda:9090"
                        }
                    }]
                }
            })
        );
    }

    #[test]
    fn replica_bounds_only_when_set() {
        let so = desired(
            &hso(json!({"scaleTargetRef": {"name": "web", "service": "web", "port": 80}})),
            "s.keda:9090",
        );
        assert_eq!(so.spec.min_replica_count, None);
        assert_eq!(so.spec.max_replica_count, None);
        assert!(owned_by(so.metadata.owner_references.as_deref(), "web"));
        assert!(!owned_by(so.metadata.owner_references.as_deref(), "other"));
    }
}
