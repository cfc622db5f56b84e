//! Types shared by both custom resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A header a request must carry: `name` present, and equal to `value` when set.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub struct HeaderMatch {
    /// Header name (case-insensitive, not empty).
    #[schemars(length(min = 1))]
    pub name: String,
    /// Exact value; absent means any value.
    pub value: Option<String>,
}

/// What drives scaling. On an `HTTPScaledObject` at most one may be set; on an
/// `InterceptorRoute` at least one, and both are allowed.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingMetric {
    /// Scale on concurrent (in-flight) requests.
    pub concurrency: Option<ConcurrencyMetric>,
    /// Scale on the request rate over a sliding window.
    pub request_rate: Option<RequestRateMetric>,
}

/// Concurrency target.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyMetric {
    /// Target in-flight requests per replica. Defaults to 100 on an
    /// `HTTPScaledObject`; required (at least 1) on an `InterceptorRoute`.
    #[schemars(extend("default" = 100))]
    pub target_value: Option<i64>,
}

/// Request-rate target.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRateMetric {
    /// Target requests per second per replica. Defaults to 100 on an
    /// `HTTPScaledObject`; required (at least 1) on an `InterceptorRoute`.
    #[schemars(extend("default" = 100))]
    pub target_value: Option<i64>,
    /// Sliding window (Go duration, default `1m`).
    #[schemars(extend("default" = "1m"))]
    pub window: Option<String>,
    /// Bucket size within the window (Go duration, default `1s`).
    #[schemars(extend("default" = "1s"))]
    pub granularity: Option<String>,
}
