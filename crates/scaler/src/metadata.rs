//! What a ScaledObject's trigger metadata asks for, and the metric specs
//! and values that answer it: pure functions over the routing table and
//! the fleet's counts, no I/O.
//!
//! Three kinds, as upstream (checked in this order when several keys are
//! present; other keys, such as KEDA's `scalerAddress`, are ignored):
//!
//! | metadata | metrics | target | value |
//! |---|---|---|---|
//! | `interceptorRoute: <name>` | `http_<name>_concurrency`, `http_<name>_rate` (each when set) | float | float |
//! | `httpScaledObject: <name>` | `http-<ns>_002F<name>` | integer, from `scalingMetric`, else `targetPendingRequests`, else 100 | concurrency, or the rate rounded up |
//! | `interceptorTargetPendingRequests: "<n>"` | `http-<ns>_002F<ScaledObject name>` | `n` | all in-flight requests |

use routing::{RoutingTable, SourceKind};

use crate::Counts;
use crate::proto::{MetricSpec, MetricValue};

/// Metadata key naming an InterceptorRoute.
pub const INTERCEPTOR_ROUTE: &str = "interceptorRoute";
/// Metadata key naming an HTTPScaledObject.
pub const HTTP_SCALED_OBJECT: &str = "httpScaledObject";
/// Metadata key of the interceptor fleet's own ScaledObject.
pub const INTERCEPTOR_TARGET_PENDING_REQUESTS: &str = "interceptorTargetPendingRequests";

/// What a ScaledObject asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// An InterceptorRoute's metrics.
    InterceptorRoute {
        /// Namespace (the ScaledObject's).
        namespace: String,
        /// The route's name.
        name: String,
    },
    /// An HTTPScaledObject's metric.
    HttpScaledObject {
        /// Namespace (the ScaledObject's).
        namespace: String,
        /// The object's name.
        name: String,
    },
    /// The interceptor fleet's own metric: every in-flight request.
    Interceptors {
        /// Metric name (from the ScaledObject's namespace/name).
        metric: String,
        /// Pending requests per interceptor replica.
        target: i64,
    },
}

/// Why a request cannot be answered: maps to a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Bad or missing metadata (gRPC `InvalidArgument`).
    #[error("{0}")]
    Invalid(String),
    /// The route named does not exist (gRPC `NotFound`).
    #[error("{0}")]
    NotFound(String),
}

impl From<QueryError> for tonic::Status {
    fn from(e: QueryError) -> tonic::Status {
        match e {
            QueryError::Invalid(m) => tonic::Status::invalid_argument(m),
            QueryError::NotFound(m) => tonic::Status::not_found(m),
        }
    }
}

/// Reads the ScaledObject reference (`namespace`, `name`, metadata).
pub fn parse(
    namespace: &str,
    name: &str,
    metadata: &std::collections::HashMap<String, String>,
) -> Result<Query, QueryError> {
    let named = |key: &str| -> Result<Option<String>, QueryError> {
        match metadata.get(key) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Err(QueryError::Invalid(format!(
                "scalerMetadata.{key} of ScaledObject {namespace}/{name} is empty"
            ))),
            Some(v) => Ok(Some(v.trim().to_string())),
        }
    };
    if namespace.is_empty() {
        return Err(QueryError::Invalid(format!(
            "ScaledObjectRef {name:?} has an empty namespace"
        )));
    }
    if let Some(route) = named(INTERCEPTOR_ROUTE)? {
        return Ok(Query::InterceptorRoute {
            namespace: namespace.to_string(),
            name: route,
        });
    }
    if let Some(object) = named(HTTP_SCALED_OBJECT)? {
        return Ok(Query::HttpScaledObject {
            namespace: namespace.to_string(),
            name: object,
        });
    }
    if let Some(raw) = named(INTERCEPTOR_TARGET_PENDING_REQUESTS)? {
        let target = raw.parse::<i64>().ok().filter(|t| *t > 0).ok_or_else(|| {
            QueryError::Invalid(format!(
                "scalerMetadata.{INTERCEPTOR_TARGET_PENDING_REQUESTS} of ScaledObject \
                 {namespace}/{name}: {raw:?} is not a positive integer"
            ))
        })?;
        return Ok(Query::Interceptors {
            metric: http_scaled_object_metric(namespace, name),
            target,
        });
    }
    let keys: Vec<&str> = metadata
        .keys()
        .map(String::as_str)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Err(QueryError::Invalid(format!(
        "scalerMetadata of ScaledObject {namespace}/{name} names no route: it needs one of \
         {INTERCEPTOR_ROUTE}, {HTTP_SCALED_OBJECT} or {INTERCEPTOR_TARGET_PENDING_REQUESTS} \
         (keys given: {})",
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.join(", ")
        }
    )))
}

/// Upstream's escaping: every character outside `[-.0-9A-Za-z]` becomes
/// `_` and the hex of its UTF-8 bytes, at least 4 digits (`/` is `_002F`).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            let hex: String = c
                .encode_utf8(&mut buf)
                .bytes()
                .map(|b| format!("{b:02X}"))
                .collect();
            out.push('_');
            out.push_str(&format!("{hex:0>4}"));
        }
    }
    out
}

/// `http-<ns>/<name>`, escaped: an HTTPScaledObject's metric name.
pub fn http_scaled_object_metric(namespace: &str, name: &str) -> String {
    escape(&format!("http-{namespace}/{name}"))
}

/// `http_<name>_concurrency` (no namespace, no escaping, as upstream).
pub fn concurrency_metric(route: &str) -> String {
    format!("http_{route}_concurrency")
}

/// `http_<name>_rate`.
pub fn rate_metric(route: &str) -> String {
    format!("http_{route}_rate")
}

fn route<'t>(
    table: &'t RoutingTable,
    kind: SourceKind,
    namespace: &str,
    name: &str,
) -> Result<&'t routing::Route, QueryError> {
    table
        .get_kind(kind, namespace, name)
        .map(|r| &**r)
        .ok_or_else(|| {
            let what = match kind {
                SourceKind::HttpScaledObject => "HTTPScaledObject",
                SourceKind::InterceptorRoute => "InterceptorRoute",
            };
            QueryError::NotFound(format!(
                "{what} {namespace}/{name} not found (or not valid) in the routing table"
            ))
        })
}

/// The metric specs answering `query`.
pub fn specs(table: &RoutingTable, query: &Query) -> Result<Vec<MetricSpec>, QueryError> {
    Ok(match query {
        Query::InterceptorRoute { namespace, name } => {
            let r = route(table, SourceKind::InterceptorRoute, namespace, name)?;
            let mut out = Vec::new();
            if let Some(c) = r.scaling.concurrency {
                out.push(MetricSpec {
                    metric_name: concurrency_metric(name),
                    target_size: 0,
                    target_size_float: c.target_value as f64,
                });
            }
            if let Some(rr) = r.scaling.request_rate {
                out.push(MetricSpec {
                    metric_name: rate_metric(name),
                    target_size: 0,
                    target_size_float: rr.target_value as f64,
                });
            }
            out
        }
        Query::HttpScaledObject { namespace, name } => {
            let r = route(table, SourceKind::HttpScaledObject, namespace, name)?;
            let target = r
                .scaling
                .request_rate
                .map(|rr| rr.target_value)
                .or(r.scaling.concurrency.map(|c| c.target_value))
                .unwrap_or(100);
            vec![MetricSpec {
                metric_name: http_scaled_object_metric(namespace, name),
                target_size: target,
                target_size_float: 0.0,
            }]
        }
        Query::Interceptors { metric, target } => vec![MetricSpec {
            metric_name: metric.clone(),
            target_size: *target,
            target_size_float: 0.0,
        }],
    })
}

/// The metric values answering `query`; for an InterceptorRoute, only the
/// metric named `metric_name` when it is not empty (an unknown name gives
/// an empty list, as upstream).
pub fn values(
    table: &RoutingTable,
    counts: &Counts,
    query: &Query,
    metric_name: &str,
) -> Result<Vec<MetricValue>, QueryError> {
    Ok(match query {
        Query::InterceptorRoute { namespace, name } => {
            let r = route(table, SourceKind::InterceptorRoute, namespace, name)?;
            let c = counts.get(r.key());
            let mut out = Vec::new();
            if r.scaling.concurrency.is_some() {
                out.push(MetricValue {
                    metric_name: concurrency_metric(name),
                    metric_value: 0,
                    metric_value_float: c.concurrency as f64,
                });
            }
            if r.scaling.request_rate.is_some() {
                out.push(MetricValue {
                    metric_name: rate_metric(name),
                    metric_value: 0,
                    metric_value_float: c.rate,
                });
            }
            if !metric_name.is_empty() {
                out.retain(|v| v.metric_name == metric_name);
            }
            out
        }
        Query::HttpScaledObject { namespace, name } => {
            let r = route(table, SourceKind::HttpScaledObject, namespace, name)?;
            let c = counts.get(r.key());
            let value = if r.scaling.request_rate.is_some() {
                c.rate.ceil() as i64
            } else {
                c.concurrency
            };
            vec![MetricValue {
                metric_name: http_scaled_object_metric(namespace, name),
                metric_value: value,
                metric_value_float: 0.0,
            }]
        }
        Query::Interceptors { metric, .. } => vec![MetricValue {
            metric_name: metric.clone(),
            metric_value: counts.total_concurrency,
            metric_value_float: 0.0,
        }],
    })
}

/// Active: any value above zero.
pub fn is_active(values: &[MetricValue]) -> bool {
    values
        .iter()
        .any(|v| v.metric_value > 0 || v.metric_value_float > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse` of the ScaledObject `namespace/name` with the metadata `pairs`.
    fn parse_pairs(
        namespace: &str,
        name: &str,
        pairs: &[(&str, &str)],
    ) -> Result<Query, QueryError> {
        let metadata = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(namespace, name, &metadata)
    }

    /// The message of the `Invalid` error of ScaledObject `namespace/so`.
    fn invalid(namespace: &str, pairs: &[(&str, &str)]) -> String {
        match parse_pairs(namespace, "so", pairs) {
            Err(QueryError::Invalid(m)) => m,
            other => panic!("want Invalid, got {other:?}"),
        }
    }

    #[test]
    fn escaping_matches_upstream() {
        assert_eq!(
            http_scaled_object_metric("apps", "web"),
            "http-apps_002Fweb"
        );
        for (raw, want) in [
            ("a.b-c_d", "a.b-c_005Fd"),
            ("é", "_C3A9"),
            ("😀", "_F09F9880"),
        ] {
            assert_eq!(escape(raw), want, "escape({raw:?})");
        }
    }

    #[test]
    fn metadata_kinds_in_upstream_order() {
        assert_eq!(
            parse_pairs(
                "ns",
                "so",
                &[("httpScaledObject", "h"), ("interceptorRoute", "r")]
            ),
            Ok(Query::InterceptorRoute {
                namespace: "ns".into(),
                name: "r".into()
            })
        );
        assert!(matches!(
            parse_pairs(
                "ns",
                "so",
                &[("httpScaledObject", "h"), ("scalerAddress", "x:9090")]
            ),
            Ok(Query::HttpScaledObject { .. })
        ));
        assert_eq!(
            parse_pairs(
                "keda",
                "interceptor",
                &[("interceptorTargetPendingRequests", "200")]
            ),
            Ok(Query::Interceptors {
                metric: "http-keda_002Finterceptor".into(),
                target: 200
            })
        );
    }

    #[test]
    fn bad_metadata_names_the_key() {
        assert_eq!(
            invalid("ns", &[("scalerAddress", "x")]),
            "scalerMetadata of ScaledObject ns/so names no route: it needs one of \
             interceptorRoute, httpScaledObject or interceptorTargetPendingRequests \
             (keys given: scalerAddress)"
        );
        assert_eq!(
            invalid("ns", &[("interceptorTargetPendingRequests", "x")]),
            "scalerMetadata.interceptorTargetPendingRequests of ScaledObject ns/so: \"x\" is not a positive integer"
        );
        assert_eq!(
            invalid("ns", &[("interceptorRoute", " ")]),
            "scalerMetadata.interceptorRoute of ScaledObject ns/so is empty"
        );
        assert_eq!(
            invalid("", &[("httpScaledObject", "a")]),
            "ScaledObjectRef \"so\" has an empty namespace"
        );
    }
}
