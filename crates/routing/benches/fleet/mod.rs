//! The tables and requests the routing benchmarks measure, shared by
//! `benches/routing.rs` and `examples/lookup_loop.rs`.
#![allow(dead_code)] // each target uses a different part

use api::{HTTPScaledObject, HTTPScaledObjectSpec, ScaleTargetRef};
use http::HeaderMap;
use routing::{Route, RoutingTable, compile_http_scaled_object};

pub fn object(i: usize, generation: i64) -> HTTPScaledObject {
    let (hosts, paths) = match i % 100 {
        0 => (None, vec![format!("/catch-{i}")]),
        1..=9 => (
            Some(vec![format!("*.tenant-{i}.example.org")]),
            vec!["/".into()],
        ),
        _ => (
            Some(vec![format!("app-{i}.example.com")]),
            vec![match i % 3 {
                0 => "/".to_string(),
                1 => "/api".to_string(),
                _ => format!("/api/v{}", i % 5),
            }],
        ),
    };
    let mut obj = HTTPScaledObject::new(
        &format!("app-{i}"),
        HTTPScaledObjectSpec {
            hosts,
            path_prefixes: Some(paths),
            scale_target_ref: ScaleTargetRef {
                name: format!("app-{i}"),
                service: format!("app-{i}"),
                port: Some(8080),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    obj.metadata.namespace = Some(format!("team-{}", i % 50));
    obj.metadata.resource_version = Some(format!("{}", i as i64 * 10 + generation));
    obj.metadata.generation = Some(generation);
    obj
}

pub fn route(i: usize, generation: i64) -> Route {
    compile_http_scaled_object(&object(i, generation)).expect("valid benchmark object")
}

pub fn table(n: usize) -> RoutingTable {
    RoutingTable::from_routes((0..n).map(|i| route(i, 1)))
}

pub fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", "bench/1.0".parse().unwrap());
    h.insert("accept", "*/*".parse().unwrap());
    h.insert("x-request-id", "0123456789abcdef".parse().unwrap());
    h
}

/// (case, host, path) for a table of `n` routes; the hits target the last
/// route of each kind so they exist at every size.
pub fn cases(n: usize) -> Vec<(&'static str, String, String)> {
    let exact = (10..n).rev().find(|i| i % 100 >= 10 && i % 3 == 1).unwrap();
    let wildcard = (0..n).rev().find(|i| (1..=9).contains(&(i % 100))).unwrap();
    let catch_all = (0..n).rev().find(|i| i % 100 == 0).unwrap();
    vec![
        (
            "exact_hit",
            format!("App-{exact}.Example.com:8080"),
            "/api/users/42?page=2".into(),
        ),
        (
            "wildcard_hit",
            format!("shop.eu.tenant-{wildcard}.example.org"),
            "/cart/items".into(),
        ),
        (
            "catch_all_hit",
            "unknown.example.net".into(),
            format!("/catch-{catch_all}/x"),
        ),
        ("miss", "unknown.example.net".into(), "/nothing/here".into()),
    ]
}
