//! Property tests: the indexed lookup against a deliberately simple reference
//! matcher, and incremental updates against a build from scratch.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::reference::{indexed, reference};
use crate::{
    Route, RoutingTable, SourceKind, compile_http_scaled_object, compile_interceptor_route,
};

const NAMESPACES: &[&str] = &["a", "a-b", "b"];
const NAMES: &[&str] = &["x", "y", "z"];
const HOSTS: &[&str] = &[
    "h.example.com",
    "a.h.example.com",
    "example.com",
    "b.example.com",
    "x.b.example.com",
    "other.org",
    "*.example.com",
    "*.h.example.com",
    "*.b.example.com",
    "*.org",
    "*",
    "example.com:8080",
    "::1",
    "[::2]:8080",
];
const PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/",
    "/api/v1",
    "/apiv2",
    "/api/v1/users",
    "/b",
    "/b/c",
    "api",
    "//b//",
    "/api//v1",
];
const HEADER_NAMES: &[&str] = &["x-a", "x-b"];
const REQ_HOSTS: &[&str] = &[
    "h.example.com",
    "H.Example.COM:8080",
    "a.h.example.com",
    "z.a.h.example.com",
    "example.com",
    "example.com.",
    "b.example.com",
    "x.b.example.com",
    "y.x.b.example.com",
    "other.org",
    "q.other.org",
    ".other.org",
    "nomatch.net",
    "",
    "Y.X.B.example.com:80",
    "a.b.example.com:8.0",
    "h.example.com:80:80",
    "[::1]:8080",
    "::1",
    "[::2]",
    "example.com:9090",
];
const REQ_PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/",
    "/api/v1",
    "/api/v1/users/1",
    "/apiv2",
    "/apiv2/x",
    "/b",
    "/b/c/d",
    "/bc",
    "",
    "/api?x=/b",
    "//api",
    "/API",
    "///api/v1//",
    "/api//v1",
    "//b/",
    "*",
];
const REQ_HEADERS: &[(&str, &str)] = &[("x-a", "1"), ("X-A", "2"), ("x-b", "1"), ("x-b", "2")];

/// The source objects of a test: kind, namespace, name and JSON.
#[derive(Clone, Debug)]
struct Obj {
    kind: SourceKind,
    ns: &'static str,
    name: &'static str,
    json: Value,
}

impl Obj {
    fn compile(&self) -> Route {
        let result = match self.kind {
            SourceKind::HttpScaledObject => {
                compile_http_scaled_object(&serde_json::from_value(self.json.clone()).unwrap())
            }
            SourceKind::InterceptorRoute => {
                compile_interceptor_route(&serde_json::from_value(self.json.clone()).unwrap())
            }
        };
        match result {
            Ok(r) => r,
            Err(e) => panic!("generated object {} is invalid: {e:?}", self.json),
        }
    }
}

fn pick<T: Clone + std::fmt::Debug + 'static>(
    items: &'static [T],
) -> impl Strategy<Value = T> + Clone {
    proptest::sample::select(items)
}

fn headers_strategy() -> impl Strategy<Value = Value> {
    // Each name at most once (validation rejects duplicates); value or not.
    proptest::collection::vec(
        prop_oneof![Just(None), Just(Some(None)), Just(Some(Some("1")))],
        2,
    )
    .prop_map(|choices| {
        Value::Array(
            choices
                .into_iter()
                .zip(HEADER_NAMES)
                .filter_map(|(c, n)| {
                    c.map(|v| match v {
                        Some(v) => json!({"name": n, "value": v}),
                        None => json!({"name": n}),
                    })
                })
                .collect(),
        )
    })
}

fn rule_strategy() -> impl Strategy<Value = Value> {
    (
        proptest::sample::subsequence(HOSTS, 0..3),
        proptest::sample::subsequence(PATHS, 0..3),
        headers_strategy(),
    )
        .prop_map(|(hosts, paths, headers)| {
            let paths: Vec<Value> = paths.iter().map(|p| json!({"value": p})).collect();
            json!({"hosts": hosts, "paths": paths, "headers": headers})
        })
}

fn meta(ns: &str, name: &str, created: Option<u8>, rv: u32) -> Value {
    let mut m = json!({"namespace": ns, "name": name, "resourceVersion": rv.to_string()});
    if let Some(s) = created {
        m["creationTimestamp"] = json!(format!("2024-01-01T00:00:{s:02}Z"));
    }
    m
}

fn obj_strategy() -> impl Strategy<Value = Obj> {
    let identity = (
        pick(NAMESPACES),
        pick(NAMES),
        proptest::option::of(0u8..3),
        0u32..1000,
    );
    let hso = (
        identity.clone(),
        proptest::sample::subsequence(HOSTS, 0..3),
        proptest::sample::subsequence(PATHS, 0..3),
        headers_strategy(),
    )
        .prop_map(|((ns, name, created, rv), hosts, paths, headers)| {
            let mut spec = json!({
                "scaleTargetRef": {"name": "d", "service": "svc", "port": 80},
                "headers": headers,
            });
            if !hosts.is_empty() {
                spec["hosts"] = json!(hosts);
            }
            if !paths.is_empty() {
                spec["pathPrefixes"] = json!(paths);
            }
            Obj {
                kind: SourceKind::HttpScaledObject,
                ns,
                name,
                json: json!({
                    "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
                    "metadata": meta(ns, name, created, rv), "spec": spec,
                }),
            }
        });
    let ir = (
        identity,
        proptest::collection::vec(rule_strategy(), 0..3),
        proptest::collection::vec(
            (
                // At least one rule: upstream's CRD requires it.
                proptest::collection::vec(rule_strategy(), 1..3),
                any::<bool>(),
            ),
            0..2,
        ),
    )
        .prop_map(|((ns, name, created, rv), rules, statics)| {
            let statics: Vec<Value> = statics
                .into_iter()
                .map(|(rules, always)| {
                    json!({
                        "rules": rules,
                        "response": {"statusCode": 200},
                        "responseMode": if always { "Always" } else { "WhenUnavailable" },
                    })
                })
                .collect();
            Obj {
                kind: SourceKind::InterceptorRoute,
                ns,
                name,
                json: json!({
                    "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
                    "metadata": meta(ns, name, created, rv),
                    "spec": {
                        "target": {"service": "svc", "port": 80},
                        "scalingMetric": {"concurrency": {"targetValue": 100}},
                        "rules": rules,
                        "staticRoutes": statics,
                    },
                }),
            }
        });
    prop_oneof![hso, ir]
}

fn request_strategy() -> impl Strategy<
    Value = (
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
    ),
> {
    (
        pick(REQ_HOSTS),
        pick(REQ_PATHS),
        proptest::sample::subsequence(REQ_HEADERS, 0..=REQ_HEADERS.len()),
    )
}

/// The active route of each key: the InterceptorRoute if there is one.
fn active_routes(objects: &BTreeMap<(SourceKind, &str, &str), Arc<Route>>) -> Vec<Arc<Route>> {
    let mut by_key: BTreeMap<(&str, &str), Arc<Route>> = BTreeMap::new();
    for ((kind, ns, name), r) in objects {
        let e = by_key.entry((ns, name)).or_insert_with(|| r.clone());
        if *kind == SourceKind::InterceptorRoute {
            *e = r.clone();
        }
    }
    by_key.into_values().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn lookup_agrees_with_reference(
        objs in proptest::collection::vec(obj_strategy(), 0..7),
        requests in proptest::collection::vec(request_strategy(), 1..12),
    ) {
        let mut objects = BTreeMap::new();
        let mut routes = Vec::new();
        for o in &objs {
            let route = o.compile();
            objects.insert((o.kind, o.ns, o.name), ());
            routes.push(route);
        }
        let table = RoutingTable::from_routes(routes);
        // The reference sees the table's stored routes (for rule identity),
        // but decides shadowing and matching itself.
        let stored: BTreeMap<(SourceKind, &str, &str), Arc<Route>> = objects
            .keys()
            .map(|&(k, ns, name)| ((k, ns, name), table.get_kind(k, ns, name).unwrap().clone()))
            .collect();
        let active = active_routes(&stored);
        prop_assert_eq!(table.len(), active.len());
        for (host, path, headers) in &requests {
            prop_assert_eq!(
                indexed(&table, host, path, headers),
                reference(&active, host, path, headers),
                "host {:?} path {:?} headers {:?}", host, path, headers
            );
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Apply(Obj),
    Remove(SourceKind, &'static str, &'static str),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => obj_strategy().prop_map(Op::Apply),
        1 => (
            prop_oneof![Just(SourceKind::HttpScaledObject), Just(SourceKind::InterceptorRoute)],
            pick(NAMESPACES),
            pick(NAMES),
        )
            .prop_map(|(k, ns, name)| Op::Remove(k, ns, name)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn incremental_equals_from_scratch(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        let mut table = RoutingTable::new();
        let mut model: BTreeMap<(SourceKind, &str, &str), Obj> = BTreeMap::new();
        let mut last_version = 0;
        for op in &ops {
            let changed = match op {
                Op::Apply(o) => {
                    model.insert((o.kind, o.ns, o.name), o.clone());
                    table.apply(o.compile())
                }
                Op::Remove(k, ns, name) => {
                    let existed = model.remove(&(*k, *ns, *name)).is_some();
                    let changed = table.remove(*k, ns, name);
                    prop_assert_eq!(existed, changed);
                    changed
                }
            };
            prop_assert_eq!(table.version(), last_version + u64::from(changed));
            last_version = table.version();
        }
        let scratch = RoutingTable::from_routes(model.values().map(|o| o.compile()));
        prop_assert_eq!(table.len(), scratch.len());
        prop_assert_eq!(table.dump_index(), scratch.dump_index());
        prop_assert_eq!(table.wildcard_label_counts(), scratch.wildcard_label_counts());
        let mut a: Vec<_> = table.all_routes().map(|r| (r.kind(), r.key().to_string())).collect();
        let mut b: Vec<_> = scratch.all_routes().map(|r| (r.kind(), r.key().to_string())).collect();
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
        for host in REQ_HOSTS {
            for path in REQ_PATHS {
                for headers in [&REQ_HEADERS[..1], &REQ_HEADERS[1..]] {
                    prop_assert_eq!(
                        indexed(&table, host, path, headers),
                        indexed(&scratch, host, path, headers)
                    );
                }
            }
        }
        // A full relist of the same set repairs nothing.
        let mut relisted = table.clone();
        prop_assert_eq!(relisted.reset(model.values().map(|o| o.compile())), 0);
        prop_assert_eq!(relisted.version(), table.version());
    }
}
