//! Runs one lookup case in a loop, for profiling:
//! `cargo run --release -p routing --example lookup_loop -- miss 100000 50000000`.

use std::hint::black_box;
use std::time::Instant;

use api::{HTTPScaledObject, HTTPScaledObjectSpec, ScaleTargetRef};
use routing::{RoutingTable, compile_http_scaled_object};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).map(String::as_str).unwrap_or("miss");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let iterations: usize = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000_000);
    let table = RoutingTable::from_routes((0..n).map(|i| {
        let (hosts, path) = match i % 100 {
            0 => (None, format!("/catch-{i}")),
            1..=9 => (Some(vec![format!("*.tenant-{i}.example.org")]), "/".into()),
            _ => (Some(vec![format!("app-{i}.example.com")]), "/api".into()),
        };
        let mut obj = HTTPScaledObject::new(
            &format!("app-{i}"),
            HTTPScaledObjectSpec {
                hosts,
                path_prefixes: Some(vec![path]),
                scale_target_ref: ScaleTargetRef {
                    name: "d".into(),
                    service: "s".into(),
                    port: Some(80),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        obj.metadata.namespace = Some("ns".into());
        compile_http_scaled_object(&obj).unwrap()
    }));
    let (host, path) = match case {
        "exact" => (
            "App-11.Example.com:8080".to_string(),
            "/api/users/42?page=2".to_string(),
        ),
        "wildcard" => ("shop.eu.tenant-9.example.org".into(), "/cart/items".into()),
        "catch_all" => ("unknown.example.net".into(), "/catch-0/x".into()),
        _ => ("unknown.example.net".into(), "/nothing/here".into()),
    };
    let headers = http::HeaderMap::new();
    let start = Instant::now();
    let mut hits = 0usize;
    for _ in 0..iterations {
        hits += usize::from(
            black_box(&table)
                .lookup(black_box(&host), black_box(&path), &headers)
                .is_some(),
        );
    }
    let per = start.elapsed().as_nanos() as f64 / iterations as f64;
    println!("{case} n={n}: {per:.1} ns/lookup ({hits} hits)");
}
