//! `HTTPScaledObject` (`http.keda.sh/v1alpha1`): the add-on's original API,
//! deprecated upstream but used by most clusters.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{HeaderMatch, ScalingMetric};

/// Desired state of an `HTTPScaledObject`.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "http.keda.sh",
    version = "v1alpha1",
    kind = "HTTPScaledObject",
    doc = "Routes HTTP traffic for a set of hosts and paths to a Service, and scales its workload with KEDA from the traffic.",
    derive = "PartialEq",
    plural = "httpscaledobjects",
    shortname = "httpso",
    namespaced,
    status = "HTTPScaledObjectStatus",
    printcolumn = r#"{"name":"TargetWorkload","type":"string","jsonPath":".status.targetWorkload"}"#,
    printcolumn = r#"{"name":"TargetService","type":"string","jsonPath":".status.targetService"}"#,
    printcolumn = r#"{"name":"MinReplicas","type":"integer","jsonPath":".spec.replicas.min"}"#,
    printcolumn = r#"{"name":"MaxReplicas","type":"integer","jsonPath":".spec.replicas.max"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPScaledObjectSpec {
    /// Hosts to route. Empty, absent or `*` means every host; `*.example.com`
    /// matches any subdomain of `example.com` (not the apex).
    pub hosts: Option<Vec<String>>,
    /// Path prefixes to route, matched on whole segments. Absent means `/`.
    pub path_prefixes: Option<Vec<String>>,
    /// Headers that must all be present (and equal, when `value` is set).
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub headers: Option<Vec<HeaderMatch>>,
    /// The workload to scale and the Service to route to.
    pub scale_target_ref: ScaleTargetRef,
    /// Where to send requests when the target does not become ready in time.
    pub cold_start_timeout_failover_ref: Option<ColdStartTimeoutFailoverRef>,
    /// Replica bounds (min default 0, max default 100).
    pub replicas: Option<ReplicaStruct>,
    /// Deprecated: use `scalingMetric`. Target pending requests (default 100).
    pub target_pending_requests: Option<i32>,
    /// Seconds before scaling down; becomes the ScaledObject's `cooldownPeriod` (default 300).
    #[serde(rename = "scaledownPeriod")]
    pub scaledown_period: Option<i32>,
    /// Seconds before the first scaling decision (default 0).
    pub initial_cooldown_period: Option<i32>,
    /// The metric that drives scaling: `concurrency` or `requestRate`, not both.
    ///
    /// Stricter than upstream's CRD, which accepts both: upstream's operator
    /// then fails the reconcile ("mutually exclusive") and creates no
    /// ScaledObject, so such an object is never valid there either.
    #[x_kube(validation = Rule::new("!(has(self.concurrency) && has(self.requestRate))").message("'concurrency' and 'requestRate' are mutually exclusive"))]
    pub scaling_metric: Option<ScalingMetric>,
    /// Timeouts that override the interceptor's global ones.
    pub timeouts: Option<HTTPScaledObjectTimeouts>,
}

/// The workload to scale and the Service (and port) to route to.
///
/// Stricter than upstream's CRD in three ways, kept because upstream cannot
/// route an object that breaks them either: `service` must not be empty (there is no Service without a
/// name), `port` must be 1-65535 (a Service port is; upstream also reads 0
/// as "no port"), and `portName` must not be empty (upstream reads an empty
/// name as "no port name", so with no `port` there is nothing to route to).
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.portName) != has(self.port)").message("must define either the 'portName' or the 'port'"))]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// Name of the workload (e.g. a Deployment).
    // `#[serde(default)]` would put `default: ""` into the CRD, and the API
    // server would then write `name: ""` into objects that leave it out.
    #[serde(default)]
    #[schemars(transform = crate::schema::no_default)]
    pub name: String,
    /// Kind of the workload (e.g. `Deployment`).
    pub kind: Option<String>,
    /// API version of the workload (e.g. `apps/v1`).
    pub api_version: Option<String>,
    /// Name of the Service to route to.
    #[schemars(length(min = 1))]
    pub service: String,
    /// Service port number; exactly one of `port` and `portName`.
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Service port name; exactly one of `port` and `portName`.
    #[schemars(length(min = 1))]
    pub port_name: Option<String>,
}

/// The Service to route to when the target is still cold after `timeoutSeconds`.
///
/// `service`, `port` and `portName` are stricter than upstream's CRD for the
/// reasons given on [`ScaleTargetRef`].
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.portName) != has(self.port)").message("must define either the 'portName' or the 'port'"))]
#[serde(rename_all = "camelCase")]
pub struct ColdStartTimeoutFailoverRef {
    /// Name of the failover Service.
    #[schemars(length(min = 1))]
    pub service: String,
    /// Service port number; exactly one of `port` and `portName`.
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Service port name; exactly one of `port` and `portName`.
    #[schemars(length(min = 1))]
    pub port_name: Option<String>,
    /// Seconds to wait for the target before failing over (default 30; `0`,
    /// as upstream, means no override: the readiness timeout decides).
    #[schemars(extend("default" = 30))]
    pub timeout_seconds: Option<i32>,
}

/// Replica bounds of the scaled workload.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ReplicaStruct {
    /// Minimum replicas (default 0).
    pub min: Option<i32>,
    /// Maximum replicas (default 100).
    pub max: Option<i32>,
}

/// Per-object timeouts of an `HTTPScaledObject` (Go durations such as `20s`).
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPScaledObjectTimeouts {
    /// How long a request waits for the workload to have a ready replica.
    pub condition_wait: Option<String>,
    /// How long to wait for the backend's response headers.
    pub response_header: Option<String>,
}

/// Observed state of an `HTTPScaledObject`, written by the operator.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPScaledObjectStatus {
    /// `apiVersion/kind/name` of the scaled workload.
    pub target_workload: Option<String>,
    /// `service:port` of the routed Service.
    pub target_service: Option<String>,
    /// Standard conditions; type `Ready` with reason `Reconciled` or `CreateError`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = crate::schema::condition_list)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Annotation that tells the operator not to create a ScaledObject.
pub const SKIP_SCALEDOBJECT_CREATION_ANNOTATION: &str =
    "httpscaledobject.keda.sh/skip-scaledobject-creation";
/// Annotation that tells the operator to leave the ScaledObject behind on delete.
pub const ORPHAN_SCALEDOBJECT_ANNOTATION: &str = "httpscaledobject.keda.sh/orphan-scaledobject";
/// Finalizer the operator puts on every `HTTPScaledObject`.
pub const HTTPSCALEDOBJECT_FINALIZER: &str = "httpscaledobject.http.keda.sh";
