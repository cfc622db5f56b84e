//! Builders for test objects (JSON, as the API server would send them).

#![allow(dead_code)]

use api::{HTTPScaledObject, InterceptorRoute};
use routing::{Route, compile_http_scaled_object, compile_interceptor_route};
use serde_json::{Value, json};

/// `metadata` with an optional creation time in seconds after 2024-01-01T00:00:00Z.
pub fn meta(ns: &str, name: &str, created: Option<u32>) -> Value {
    let mut m = json!({"namespace": ns, "name": name, "resourceVersion": "1"});
    if let Some(s) = created {
        m["creationTimestamp"] = json!(format!(
            "2024-01-01T{:02}:{:02}:{:02}Z",
            s / 3600,
            (s / 60) % 60,
            s % 60
        ));
    }
    m
}

pub fn hso_obj(meta: Value, spec: Value) -> HTTPScaledObject {
    let mut spec = spec;
    if spec.get("scaleTargetRef").is_none() {
        spec["scaleTargetRef"] = json!({"name": "app", "service": "svc", "port": 8080});
    }
    serde_json::from_value(json!({
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": meta,
        "spec": spec,
    }))
    .expect("valid HTTPScaledObject json")
}

pub fn ir_obj(meta: Value, spec: Value) -> InterceptorRoute {
    let mut spec = spec;
    if spec.get("target").is_none() {
        spec["target"] = json!({"service": "svc", "port": 8080});
    }
    if spec.get("scalingMetric").is_none() {
        spec["scalingMetric"] = json!({"concurrency": {"targetValue": 100}});
    }
    serde_json::from_value(json!({
        "apiVersion": "http.keda.sh/v1beta1",
        "kind": "InterceptorRoute",
        "metadata": meta,
        "spec": spec,
    }))
    .expect("valid InterceptorRoute json")
}

/// A compiled HTTPScaledObject `ns/name` with these hosts, prefixes and headers.
pub fn hso(
    ns: &str,
    name: &str,
    hosts: &[&str],
    paths: &[&str],
    headers: &[(&str, Option<&str>)],
) -> Route {
    hso_at(ns, name, None, hosts, paths, headers)
}

pub fn hso_at(
    ns: &str,
    name: &str,
    created: Option<u32>,
    hosts: &[&str],
    paths: &[&str],
    headers: &[(&str, Option<&str>)],
) -> Route {
    let mut spec = json!({});
    if !hosts.is_empty() {
        spec["hosts"] = json!(hosts);
    }
    if !paths.is_empty() {
        spec["pathPrefixes"] = json!(paths);
    }
    if !headers.is_empty() {
        spec["headers"] = headers_json(headers);
    }
    compile_http_scaled_object(&hso_obj(meta(ns, name, created), spec)).expect("compiles")
}

pub fn headers_json(headers: &[(&str, Option<&str>)]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(n, v)| match v {
                Some(v) => json!({"name": n, "value": v}),
                None => json!({"name": n}),
            })
            .collect(),
    )
}

/// A compiled InterceptorRoute with the given spec (target and metric defaulted).
pub fn ir(ns: &str, name: &str, created: Option<u32>, spec: Value) -> Route {
    compile_interceptor_route(&ir_obj(meta(ns, name, created), spec)).expect("compiles")
}
