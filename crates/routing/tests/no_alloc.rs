//! The lookup does not allocate, whatever the request looks like.

mod common;

use std::alloc::System;

use common::*;
use routing::RoutingTable;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn lookup_does_not_allocate() {
    let mut routes = vec![
        hso(
            "ns",
            "exact",
            &["a.example.com"],
            &["/api", "/api/v1"],
            &[("x-a", Some("1"))],
        ),
        hso("ns", "wild", &["*.example.com"], &["/"], &[("x-b", None)]),
        hso("ns", "any", &[], &["/catch"], &[]),
    ];
    // Enough prefixes on one host for the large (hashed) path index.
    for i in 0..20 {
        routes.push(hso(
            "ns",
            &format!("p{i}"),
            &["a.example.com"],
            &[&format!("/p{i}")],
            &[],
        ));
    }
    let t = RoutingTable::from_routes(routes);
    let mut headers = http::HeaderMap::new();
    headers.insert("x-b", "2".parse().unwrap());
    headers.insert("user-agent", "test".parse().unwrap());
    let requests = [
        ("A.Example.COM:8080", "/api/v1/x?q=1"),
        ("a.example.com", "/p7/deep/er"),
        ("B.C.Example.com.", "/x"),
        ("[::1]:8080", "/catch/me"),
        ("nowhere.org", "/nothing"),
        (&*"X".repeat(400), "/catch"),
    ];
    let region = Region::new(GLOBAL);
    let mut found = 0;
    for (host, path) in requests {
        found += usize::from(t.lookup(host, path, &headers).is_some());
        found += usize::from(t.lookup(host, path, &[("X-A", "1")]).is_some());
    }
    let stats = region.change();
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(found, 9);
}
