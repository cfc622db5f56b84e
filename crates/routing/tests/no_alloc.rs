//! The lookup, and counting the request against the route it found, do not
//! allocate, whatever the request looks like.

mod common;

use std::alloc::System;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use routing::RoutingTable;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The allocation counts are process-wide, and the test harness allocates
/// when it starts a test's thread: one test, so nothing runs beside the
/// measurements.
#[test]
fn the_request_path_does_not_allocate() {
    lookup_does_not_allocate();
    counting_does_not_allocate_once_the_series_exists();
}

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

/// What the interceptor does per request once routed: count it in `/queue`,
/// take and release a cold-start slot, record its (method, status) series.
/// Only a route's first request of a (method, status) allocates (its series).
fn counting_does_not_allocate_once_the_series_exists() {
    let t = RoutingTable::from_routes([hso("ns", "app", &["a.example.com"], &["/"], &[])]);
    let methods = [http::Method::GET, http::Method::POST];
    let count = |method: &http::Method, code: u16| {
        let m = t
            .lookup("a.example.com", "/x", &http::HeaderMap::new())
            .unwrap();
        let c = &m.route.counters;
        c.concurrency.fetch_add(1, Relaxed);
        c.request_count.fetch_add(1, Relaxed);
        c.pending.fetch_add(1, Relaxed);
        c.pending.fetch_sub(1, Relaxed);
        c.concurrency.fetch_sub(1, Relaxed);
        c.observe(method, code, Duration::from_millis(3));
    };
    for m in &methods {
        count(m, 200);
        count(m, 503);
    }
    let region = Region::new(GLOBAL);
    for _ in 0..100 {
        for m in &methods {
            count(m, 200);
            count(m, 503);
        }
    }
    let stats = region.change();
    assert_eq!(stats.allocations, 0, "{stats:?}");
    let counters = &t.get("ns", "app").unwrap().counters;
    assert_eq!(counters.request_series().count(), 4);
    assert_eq!(counters.snapshot(), (0, 404));
    assert!(counters.request_series().all(|s| s.count() == 101));
}
