//! The subset of KEDA's `ScaledObject` (`keda.sh/v1alpha1`) the operator writes.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The fields of a KEDA `ScaledObject` spec this project writes.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledObject",
    plural = "scaledobjects",
    namespaced,
    status = "serde_json::Value"
)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    /// The workload KEDA scales.
    pub scale_target_ref: ScaledObjectTarget,
    /// Seconds between KEDA's polls.
    pub polling_interval: Option<i32>,
    /// Seconds after the last active trigger before scaling to zero.
    pub cooldown_period: Option<i32>,
    /// Seconds after creation before the first scale-down.
    pub initial_cooldown_period: Option<i32>,
    /// Minimum replicas.
    pub min_replica_count: Option<i32>,
    /// Maximum replicas.
    pub max_replica_count: Option<i32>,
    /// Advanced settings.
    pub advanced: Option<ScaledObjectAdvanced>,
    /// The triggers; the operator writes one `external-push` trigger.
    #[serde(default)]
    pub triggers: Vec<ScaleTrigger>,
}

/// The workload a ScaledObject scales.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectTarget {
    /// Workload API version.
    pub api_version: Option<String>,
    /// Workload kind.
    pub kind: Option<String>,
    /// Workload name.
    pub name: String,
}

/// `spec.advanced` of a ScaledObject.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectAdvanced {
    /// Restore the workload's replica count when the ScaledObject is deleted.
    pub restore_to_original_replica_count: Option<bool>,
}

/// One KEDA trigger.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTrigger {
    /// Trigger type, e.g. `external-push`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Optional trigger name.
    pub name: Option<String>,
    /// Trigger metadata, e.g. `scalerAddress` and `httpScaledObject`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}
