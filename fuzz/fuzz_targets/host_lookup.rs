//! Host header normalisation and lookup, differential: the indexed table
//! against the reference matcher the property tests use, for any Host,
//! path and headers, over a table chosen from a pool of routes.
//!
//! Input: two bytes choose the routes (a bit each); the rest is lines:
//! Host, request target, then `name:value` headers.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use routing::reference::{indexed, reference};
use routing::{Route, RoutingTable};
use serde_json::{Value, json};

fn hso(name: &str, hosts: Value, paths: Value, headers: Value) -> Value {
    json!({
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": format!("2024-01-01T00:00:{:02}Z", name.len())},
        "spec": {"hosts": hosts, "pathPrefixes": paths, "headers": headers,
                 "scaleTargetRef": {"name": name, "service": name, "port": 80}}
    })
}

fn ir(name: &str, rules: Value, statics: Value) -> Value {
    json!({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"target": {"service": name, "port": 80},
                 "scalingMetric": {"concurrency": {"targetValue": 100}},
                 "rules": rules, "staticRoutes": statics}
    })
}

fn pool() -> Vec<Value> {
    vec![
        hso("exact", json!(["a.example.com"]), json!(["/"]), json!([])),
        hso("wild", json!(["*.example.com"]), json!(["/api", "/b/c"]), json!([])),
        hso("deep", json!(["*.a.example.com"]), json!([]), json!([])),
        hso("any", json!(["*"]), json!(["/x"]), json!([])),
        hso("none", json!([]), json!([]), json!([{"name": "x-a"}])),
        hso("port", json!(["example.com:8080", "::1"]), json!(["api"]), json!([])),
        hso("hdr", json!(["a.example.com"]), json!(["/"]), json!([{"name": "x-a", "value": "1"}, {"name": "x-b"}])),
        ir("r1", json!([{"hosts": ["b.example.com", "*.org"], "paths": [{"value": "/v1"}]}]),
            json!([{"rules": [{"paths": [{"value": "/health"}]}], "response": {"statusCode": 200}, "responseMode": "Always"}])),
        ir("r2", json!([{"hosts": ["*"], "headers": [{"name": "x-b", "value": "2"}]}]), json!([])),
        ir("r3", json!([{"paths": [{"value": "//api//v1//"}]}]), json!([])),
    ]
}

fn compile(v: &Value) -> Option<Route> {
    match v["kind"].as_str()? {
        "HTTPScaledObject" => routing::compile_http_scaled_object(
            &api::parse_http_scaled_object(v.clone()).ok()?,
        )
        .ok(),
        _ => routing::compile_interceptor_route(&api::parse_interceptor_route(v.clone()).ok()?)
            .ok(),
    }
}

/// The 1,024 tables the two selector bytes can choose (ten routes, a bit
/// each), each compiled once: the lookup, not the compile, is under test.
fn tables() -> &'static [OnceLock<(RoutingTable, Vec<Arc<Route>>)>] {
    static TABLES: OnceLock<Vec<OnceLock<(RoutingTable, Vec<Arc<Route>>)>>> = OnceLock::new();
    TABLES.get_or_init(|| (0..1024).map(|_| OnceLock::new()).collect())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let chosen = u16::from_le_bytes([data[0], data[1]]);
    let Ok(text) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    let mut lines = text.split('\n');
    let host = lines.next().unwrap_or("");
    // The path as the proxy hands it over: hyper's parse of the request
    // target (origin form `/...`, `*`, or absolute form `http://h/...`).
    let Ok(uri) = lines.next().unwrap_or("/").parse::<http::Uri>() else {
        return;
    };
    let path = uri.path();
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();

    let entry = &tables()[usize::from(chosen & 0x3ff)];
    let (table, active) = entry.get_or_init(|| {
        let mut table = RoutingTable::new();
        for (i, v) in pool().iter().enumerate() {
            if chosen & (1 << i) != 0 {
                let route = compile(v).expect("the pool's routes are valid");
                table.apply(route);
            }
        }
        let active: Vec<Arc<Route>> = table.routes().cloned().collect();
        (table, active)
    });
    assert_eq!(
        indexed(table, host, path, &headers[..]),
        reference(active, host, path, &headers[..]),
        "host {host:?} path {path:?} headers {headers:?}"
    );
});
