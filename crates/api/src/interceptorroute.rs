//! `InterceptorRoute` (`http.keda.sh/v1beta1`): the current upstream API.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{HeaderMatch, ScalingMetric};

/// Desired state of an `InterceptorRoute`.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "http.keda.sh",
    version = "v1beta1",
    kind = "InterceptorRoute",
    doc = "Routes HTTP traffic to a Service through the interceptor; the user's KEDA ScaledObject scales the workload from the route's metrics.",
    derive = "PartialEq",
    plural = "interceptorroutes",
    shortname = "ir",
    namespaced,
    status = "InterceptorRouteStatus",
    printcolumn = r#"{"name":"TargetService","type":"string","jsonPath":".spec.target.service"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InterceptorRouteSpec {
    /// The Service (and port) requests are forwarded to.
    pub target: TargetRef,
    /// Matching rules, OR-ed. No rules means no request is routed here (as
    /// upstream); the route still exists for scaling and `/queue`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RoutingRule>,
    /// What drives scaling: at least one of `concurrency` and `requestRate`,
    /// each with a `targetValue` of at least 1.
    // Required, as upstream: a CRD default of `{}` would fail the CEL rule below.
    #[schemars(transform = crate::schema::route_scaling_metric)]
    #[x_kube(validation = Rule::new("has(self.concurrency) || has(self.requestRate)").message("at least one of 'concurrency' or 'requestRate' must be set"))]
    pub scaling_metric: ScalingMetric,
    /// Per-route timeouts; absent fields use the global defaults, `0s` disables.
    pub timeouts: Option<InterceptorRouteTimeouts>,
    /// Behaviour while the target has no ready endpoint.
    pub cold_start: Option<ColdStart>,
    /// Requests answered by the interceptor itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
}

/// A Service and exactly one of `port` / `portName`.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.port) != has(self.portName)").message("exactly one of 'port' or 'portName' must be set"))]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Name of the Service.
    #[schemars(length(min = 1))]
    pub service: String,
    /// Service port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Service port name.
    #[schemars(length(min = 1))]
    pub port_name: Option<String>,
}

/// One matching rule: any host, any path, all headers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct RoutingRule {
    /// Hosts (exact, `*.suffix` wildcard, or `*`); empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub hosts: Vec<String>,
    /// Path prefixes; empty means `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathMatch>,
    /// Headers that must all match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub headers: Vec<HeaderMatch>,
}

/// A path prefix, matched on whole segments.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PathMatch {
    /// The prefix, starting with `/`.
    #[schemars(length(min = 1))]
    pub value: String,
}

/// Per-route timeouts (Go durations).
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterceptorRouteTimeouts {
    /// How long a request waits for a ready endpoint (cold start).
    pub readiness: Option<String>,
    /// Total time allowed for the whole request.
    pub request: Option<String>,
    /// Time allowed for the backend's response headers.
    pub response_header: Option<String>,
}

/// Cold-start behaviour: forward to a fallback, answer with a placeholder,
/// or both (at least one). With both, the placeholder answers while the
/// target is cold.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.fallback) || has(self.placeholder)").message("set 'fallback', 'placeholder' or both"))]
pub struct ColdStart {
    /// Where to forward once the readiness timeout passes.
    pub fallback: Option<ColdStartFallback>,
    /// A static answer while the target is cold.
    pub placeholder: Option<Placeholder>,
}

/// The fallback backend of a cold start.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ColdStartFallback {
    /// The fallback Service.
    pub service: ServiceRef,
}

/// A Service by name and exactly one of `port` / `portName`.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.port) != has(self.portName)").message("exactly one of 'port' or 'portName' must be set"))]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    /// Name of the Service.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Service port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Service port name.
    #[schemars(length(min = 1))]
    pub port_name: Option<String>,
}

/// The placeholder answer of a cold start.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Placeholder {
    /// The response (status 503 unless set).
    pub response: StaticResponse,
}

/// A response the interceptor writes itself.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("!(has(self.body) && has(self.bodyFromConfigMap))").message("set 'body' or 'bodyFromConfigMap', not both"))]
#[serde(rename_all = "camelCase")]
pub struct StaticResponse {
    /// HTTP status code (100-599); 200 for a static route and 503 for a
    /// placeholder when absent.
    #[schemars(range(min = 100, max = 599))]
    pub status_code: Option<i32>,
    /// Response body, at most 32768 characters; exclusive with `bodyFromConfigMap`.
    #[schemars(length(max = crate::schema::STATIC_BODY_MAX))]
    pub body: Option<String>,
    /// Response body taken from a ConfigMap key in the route's namespace.
    pub body_from_config_map: Option<ConfigMapKeyRef>,
    /// Response headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Label (value `"true"`) a ConfigMap needs for `bodyFromConfigMap` to
/// read it, as upstream: the interceptor (and the cache) watch only those.
pub const RESPONSE_BODY_LABEL: &str = "http.keda.sh/response-body";

/// The label selector of the ConfigMaps `bodyFromConfigMap` can read:
/// [`RESPONSE_BODY_LABEL`]`=true`.
pub const RESPONSE_BODY_SELECTOR: &str = "http.keda.sh/response-body=true";

/// A ConfigMap in the route's namespace, and optionally one of its keys.
/// Only ConfigMaps labelled [`RESPONSE_BODY_LABEL`]` = "true"` are read.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ConfigMapKeyRef {
    /// ConfigMap name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key within the ConfigMap's data.
    ///
    /// Absent (or empty, which upstream reads the same way) means the key
    /// comes from each request's path: the path without its leading `/`,
    /// and `index.html` for `/`. A key taken from the path that the
    /// ConfigMap lacks gives an empty body (so a missing `/favicon.ico`
    /// degrades quietly), while a missing explicit key is an error (500).
    /// The `Content-Type`, unless a response header sets it, follows the
    /// key's file extension.
    pub key: Option<String>,
}

/// A route answered by the interceptor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[schemars(transform = crate::schema::static_route_rules_required)]
#[serde(rename_all = "camelCase")]
pub struct StaticRoute {
    /// Matching rules, OR-ed; at least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1))]
    pub rules: Vec<RoutingRule>,
    /// The answer.
    pub response: StaticResponse,
    /// `WhenUnavailable` (the default: only while the target has no ready
    /// endpoint) or `Always`.
    #[serde(default)]
    pub response_mode: ResponseMode,
}

/// When a static route answers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ResponseMode {
    /// Every matching request; the target is never contacted.
    Always,
    /// Only while the target has no ready endpoint; otherwise the request is
    /// forwarded. The default, as upstream.
    #[default]
    WhenUnavailable,
}

/// Observed state of an `InterceptorRoute`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct InterceptorRouteStatus {
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = crate::schema::condition_list)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
