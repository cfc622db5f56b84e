//! Table tests: one per precedence rule and per table behaviour.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use routing::{Action, NoHeaders, RequestHeaders, ResponseMode, RoutingTable, SourceKind};
use serde_json::json;

/// The key of the route a request reaches, or `None` for a 404.
fn route_of(t: &RoutingTable, host: &str, path: &str, headers: &[(&str, &str)]) -> Option<String> {
    t.lookup(host, path, headers)
        .map(|m| m.route.key().to_string())
}

fn table(routes: Vec<routing::Route>) -> RoutingTable {
    RoutingTable::from_routes(routes)
}

#[test]
fn exact_beats_wildcard_beats_catch_all() {
    let t = table(vec![
        hso("ns", "exact", &["a.example.com"], &[], &[]),
        hso("ns", "wild", &["*.example.com"], &[], &[]),
        hso("ns", "any", &[], &[], &[]),
    ]);
    assert_eq!(
        route_of(&t, "a.example.com", "/", &[]).as_deref(),
        Some("ns/exact")
    );
    assert_eq!(
        route_of(&t, "b.example.com", "/", &[]).as_deref(),
        Some("ns/wild")
    );
    assert_eq!(
        route_of(&t, "other.org", "/", &[]).as_deref(),
        Some("ns/any")
    );
}

#[test]
fn star_host_is_catch_all() {
    let t = table(vec![hso("ns", "star", &["*"], &[], &[])]);
    assert_eq!(
        route_of(&t, "anything.org", "/x", &[]).as_deref(),
        Some("ns/star")
    );
    assert_eq!(route_of(&t, "", "/", &[]).as_deref(), Some("ns/star"));
}

#[test]
fn exact_host_wins_even_with_shorter_path() {
    let t = table(vec![
        hso("ns", "exact", &["a.example.com"], &["/"], &[]),
        hso("ns", "wild", &["*.example.com"], &["/deep/path"], &[]),
    ]);
    assert_eq!(
        route_of(&t, "a.example.com", "/deep/path", &[]).as_deref(),
        Some("ns/exact")
    );
}

#[test]
fn most_specific_wildcard_wins() {
    let t = table(vec![
        hso("ns", "short", &["*.example.com"], &[], &[]),
        hso("ns", "long", &["*.b.example.com"], &[], &[]),
    ]);
    assert_eq!(
        route_of(&t, "a.b.example.com", "/", &[]).as_deref(),
        Some("ns/long")
    );
    assert_eq!(
        route_of(&t, "x.y.b.example.com", "/", &[]).as_deref(),
        Some("ns/long")
    );
    assert_eq!(
        route_of(&t, "a.c.example.com", "/", &[]).as_deref(),
        Some("ns/short")
    );
    // `b.example.com` is the apex of the long wildcard, a subdomain of the short one.
    assert_eq!(
        route_of(&t, "b.example.com", "/", &[]).as_deref(),
        Some("ns/short")
    );
}

#[test]
fn wildcard_matches_any_depth_but_not_the_apex() {
    let t = table(vec![hso("ns", "wild", &["*.example.com"], &[], &[])]);
    assert_eq!(
        route_of(&t, "a.example.com", "/", &[]).as_deref(),
        Some("ns/wild")
    );
    assert_eq!(
        route_of(&t, "a.b.c.example.com", "/", &[]).as_deref(),
        Some("ns/wild")
    );
    assert_eq!(route_of(&t, "example.com", "/", &[]), None);
    assert_eq!(route_of(&t, "badexample.com", "/", &[]), None);
    assert_eq!(route_of(&t, ".example.com", "/", &[]), None);
}

#[test]
fn longest_path_prefix_wins() {
    let t = table(vec![
        hso("ns", "root", &["h"], &["/"], &[]),
        hso("ns", "api", &["h"], &["/api"], &[]),
        hso("ns", "v1", &["h"], &["/api/v1"], &[]),
    ]);
    assert_eq!(
        route_of(&t, "h", "/api/v1/users", &[]).as_deref(),
        Some("ns/v1")
    );
    assert_eq!(route_of(&t, "h", "/api/v2", &[]).as_deref(), Some("ns/api"));
    assert_eq!(route_of(&t, "h", "/other", &[]).as_deref(), Some("ns/root"));
}

#[test]
fn path_prefixes_match_whole_segments() {
    let t = table(vec![hso("ns", "api", &["h"], &["/api"], &[])]);
    assert_eq!(route_of(&t, "h", "/api", &[]).as_deref(), Some("ns/api"));
    assert_eq!(route_of(&t, "h", "/api/", &[]).as_deref(), Some("ns/api"));
    assert_eq!(
        route_of(&t, "h", "/api/x/y", &[]).as_deref(),
        Some("ns/api")
    );
    assert_eq!(route_of(&t, "h", "/apiv2", &[]), None);
    assert_eq!(route_of(&t, "h", "/ap", &[]), None);
    assert_eq!(route_of(&t, "h", "/", &[]), None);
}

#[test]
fn trailing_slash_prefix_behaves_like_without() {
    let t = table(vec![hso("ns", "api", &["h"], &["/api/"], &[])]);
    assert_eq!(route_of(&t, "h", "/api", &[]).as_deref(), Some("ns/api"));
    assert_eq!(route_of(&t, "h", "/api/x", &[]).as_deref(), Some("ns/api"));
    assert_eq!(route_of(&t, "h", "/apix", &[]), None);
}

#[test]
fn query_string_is_ignored() {
    let t = table(vec![hso("ns", "api", &["h"], &["/api"], &[])]);
    assert_eq!(
        route_of(&t, "h", "/api?x=/y", &[]).as_deref(),
        Some("ns/api")
    );
    assert_eq!(route_of(&t, "h", "/apiv2?x=/api", &[]), None);
}

#[test]
fn more_headers_win_then_valued_headers() {
    let t = table(vec![
        hso("ns", "none", &["h"], &[], &[]),
        hso("ns", "one", &["h"], &[], &[("x-a", None)]),
        hso("ns", "two", &["h"], &[], &[("x-a", None), ("x-b", None)]),
        hso(
            "ns",
            "two-valued",
            &["h"],
            &[],
            &[("x-a", Some("1")), ("x-b", None)],
        ),
    ]);
    assert_eq!(route_of(&t, "h", "/", &[]).as_deref(), Some("ns/none"));
    assert_eq!(
        route_of(&t, "h", "/", &[("x-a", "2")]).as_deref(),
        Some("ns/one")
    );
    assert_eq!(
        route_of(&t, "h", "/", &[("x-a", "2"), ("x-b", "")]).as_deref(),
        Some("ns/two")
    );
    assert_eq!(
        route_of(&t, "h", "/", &[("x-a", "1"), ("x-b", "")]).as_deref(),
        Some("ns/two-valued")
    );
}

#[test]
fn header_names_case_insensitive_values_exact_any_value() {
    let t = table(vec![hso(
        "ns",
        "h",
        &["h"],
        &[],
        &[("X-Tenant", Some("Blue"))],
    )]);
    assert_eq!(
        route_of(&t, "h", "/", &[("x-tenant", "Blue")]).as_deref(),
        Some("ns/h")
    );
    assert_eq!(
        route_of(&t, "h", "/", &[("X-TENANT", "Blue")]).as_deref(),
        Some("ns/h")
    );
    assert_eq!(route_of(&t, "h", "/", &[("x-tenant", "blue")]), None);
    assert_eq!(
        route_of(&t, "h", "/", &[("x-tenant", "red"), ("x-tenant", "Blue")]).as_deref(),
        Some("ns/h")
    );
    // The same through an http::HeaderMap.
    let mut map = http::HeaderMap::new();
    map.append("x-tenant", "red".parse().unwrap());
    map.append("x-tenant", "Blue".parse().unwrap());
    assert_eq!(
        t.lookup("h", "/", &map)
            .map(|m| m.route.key().to_string())
            .as_deref(),
        Some("ns/h")
    );
}

#[test]
fn older_creation_timestamp_wins() {
    let t = table(vec![
        hso_at("ns", "a-young", Some(100), &["h"], &[], &[]),
        hso_at("ns", "z-old", Some(10), &["h"], &[], &[]),
        hso_at("ns", "b-unknown", None, &["h"], &[], &[]),
    ]);
    assert_eq!(route_of(&t, "h", "/", &[]).as_deref(), Some("ns/z-old"));
}

#[test]
fn object_without_timestamp_is_youngest() {
    let t = table(vec![
        hso_at("a", "x", None, &["h"], &[], &[]),
        hso_at("b", "x", Some(100), &["h"], &[], &[]),
    ]);
    assert_eq!(route_of(&t, "h", "/", &[]).as_deref(), Some("b/x"));
}

#[test]
fn namespace_name_descending_breaks_ties() {
    // Upstream: ties after headers and creationTimestamp go to namespace/name
    // in descending order (the key's byte order, as the API lists objects).
    let t = table(vec![
        hso_at("alpha", "app", Some(5), &["h"], &[], &[]),
        hso_at("beta", "app", Some(5), &["h"], &[], &[]),
    ]);
    assert_eq!(route_of(&t, "h", "/", &[]).as_deref(), Some("beta/app"));
    let t = table(vec![
        hso_at("default", "aaa", Some(5), &["h"], &[], &[]),
        hso_at("default", "zzz", Some(5), &["h"], &[], &[]),
        hso_at("default", "mmm", Some(5), &["h"], &[], &[]),
    ]);
    assert_eq!(route_of(&t, "h", "/", &[]).as_deref(), Some("default/zzz"));
    // The joined key decides: "a/x" > "a-b/x" ('/' sorts after '-').
    let t = table(vec![
        hso_at("a", "x", Some(5), &["h"], &[], &[]),
        hso_at("a-b", "x", Some(5), &["h"], &[], &[]),
    ]);
    assert_eq!(route_of(&t, "h", "/", &[]).as_deref(), Some("a/x"));
    // The timestamp still comes first.
    let t = table(vec![
        hso_at("alpha", "app", Some(4), &["h"], &[], &[]),
        hso_at("beta", "app", Some(5), &["h"], &[], &[]),
    ]);
    assert_eq!(route_of(&t, "h", "/", &[]).as_deref(), Some("alpha/app"));
}

#[test]
fn host_is_case_insensitive_port_and_trailing_dot_stripped() {
    let t = table(vec![
        hso("ns", "app", &["App.Example.COM"], &[], &[]),
        hso("ns", "wild", &["*.Wild.Example.com"], &[], &[]),
        hso("ns", "v4", &["10.0.0.1"], &[], &[]),
    ]);
    for host in [
        "app.example.com",
        "APP.EXAMPLE.COM:8080",
        "app.example.com.",
        "App.Example.Com.:443",
    ] {
        assert_eq!(
            route_of(&t, host, "/", &[]).as_deref(),
            Some("ns/app"),
            "{host}"
        );
    }
    assert_eq!(
        route_of(&t, "X.WILD.example.com:80", "/", &[]).as_deref(),
        Some("ns/wild")
    );
    // IPv6 literals cannot be configured (validation), so they never match
    // an exact host; the port is still stripped for catch-all routes.
    assert_eq!(route_of(&t, "[::1]:8080", "/", &[]), None);
    assert_eq!(
        route_of(&t, "10.0.0.1:80", "/", &[]).as_deref(),
        Some("ns/v4")
    );
}

#[test]
fn header_mismatch_falls_back_to_shorter_path_on_same_host() {
    let t = table(vec![
        hso(
            "ns",
            "api-beta",
            &["h.example.com"],
            &["/api"],
            &[("x-beta", Some("1"))],
        ),
        hso("ns", "root", &["h.example.com"], &["/"], &[]),
        hso("ns", "wild", &["*.example.com"], &["/api"], &[]),
        hso("ns", "any", &[], &["/api"], &[]),
    ]);
    assert_eq!(
        route_of(&t, "h.example.com", "/api/x", &[("x-beta", "1")]).as_deref(),
        Some("ns/api-beta")
    );
    // Upstream would jump to the wildcard here; we stay on the host.
    assert_eq!(
        route_of(&t, "h.example.com", "/api/x", &[]).as_deref(),
        Some("ns/root")
    );
}

#[test]
fn header_mismatch_on_every_path_falls_back_to_wildcard_then_catch_all() {
    let t = table(vec![
        hso(
            "ns",
            "exact",
            &["h.example.com"],
            &["/api"],
            &[("x-beta", None)],
        ),
        hso(
            "ns",
            "wild",
            &["*.example.com"],
            &["/api"],
            &[("x-wild", None)],
        ),
        hso("ns", "any", &[], &["/"], &[]),
    ]);
    assert_eq!(
        route_of(&t, "h.example.com", "/api", &[("x-wild", "")]).as_deref(),
        Some("ns/wild")
    );
    assert_eq!(
        route_of(&t, "h.example.com", "/api", &[]).as_deref(),
        Some("ns/any")
    );
}

#[test]
fn no_match_is_none() {
    let t = table(vec![hso("ns", "a", &["a.example.com"], &["/api"], &[])]);
    assert!(t.lookup("b.example.com", "/api", &NoHeaders).is_none());
    assert!(RoutingTable::new().lookup("a", "/", &NoHeaders).is_none());
}

#[test]
fn interceptor_route_without_rules_routes_nothing() {
    // Upstream: no rules, no match (an HTTPScaledObject without hosts is a
    // catch-all; an InterceptorRoute without rules is not).
    let t = table(vec![
        ir("ns", "ir", None, json!({})),
        ir(
            "ns",
            "statics",
            None,
            json!({"staticRoutes": [
            {"rules": [{}], "response": {"body": "x"}, "responseMode": "Always"}]}),
        ),
    ]);
    assert_eq!(route_of(&t, "whatever.org", "/a/b", &[]), None);
    assert_eq!(route_of(&t, "", "/", &[]), None);
    // The keys stay in the table, so /queue lists them with zero counts.
    assert_eq!(t.len(), 2);
    assert!(t.get("ns", "ir").is_some());
    // An HTTPScaledObject without hosts still catches everything.
    let t = table(vec![
        ir("ns", "ir", None, json!({})),
        hso("ns", "any", &[], &[], &[]),
    ]);
    assert_eq!(
        route_of(&t, "whatever.org", "/a/b", &[]).as_deref(),
        Some("ns/any")
    );
}

#[test]
fn rule_host_port_is_stripped() {
    let t = table(vec![
        hso("ns", "hso", &["example.com:8080"], &[], &[]),
        ir(
            "ns",
            "ir",
            None,
            json!({"rules": [{"hosts": ["api.example.com:443", "*.w.example.com:80"]}]}),
        ),
    ]);
    for host in ["example.com", "example.com:8080", "example.com:9999"] {
        assert_eq!(
            route_of(&t, host, "/", &[]).as_deref(),
            Some("ns/hso"),
            "{host}"
        );
    }
    for host in [
        "api.example.com",
        "api.example.com:8443",
        "a.w.example.com:1",
    ] {
        assert_eq!(
            route_of(&t, host, "/", &[]).as_deref(),
            Some("ns/ir"),
            "{host}"
        );
    }
    assert_eq!(route_of(&t, "other.example.com", "/", &[]), None);
}

#[test]
fn ipv6_hosts() {
    let t = table(vec![
        hso("ns", "bare", &["::1"], &[], &[]),
        hso("ns", "bracketed", &["[fe80::2]:8080"], &[], &[]),
        ir("ns", "ir", None, json!({"rules": [{"hosts": ["[::3]"]}]})),
    ]);
    for (host, want) in [
        ("[::1]:8080", "ns/bare"),
        ("[::1]", "ns/bare"),
        ("::1", "ns/bare"),
        ("[FE80::2]", "ns/bracketed"),
        ("[fe80::2]:80", "ns/bracketed"),
        ("[::3]:1", "ns/ir"),
    ] {
        assert_eq!(
            route_of(&t, host, "/", &[]).as_deref(),
            Some(want),
            "{host}"
        );
    }
    assert_eq!(route_of(&t, "[::4]:8080", "/", &[]), None);
}

#[test]
fn leading_and_trailing_slashes_are_trimmed() {
    let t = table(vec![
        hso("ns", "abc", &["h"], &["//abc/def//"], &[]),
        hso("ns", "noslash", &["h"], &["api"], &[]),
        ir(
            "ns",
            "ir",
            None,
            json!({"rules": [{"hosts": ["i"], "paths": [{"value": "x"}, {"value": "///y/"}]}]}),
        ),
    ]);
    for path in [
        "/abc/def",
        "/abc/def/",
        "//abc/def",
        "///abc/def//g",
        "/abc/def?q=1",
    ] {
        assert_eq!(
            route_of(&t, "h", path, &[]).as_deref(),
            Some("ns/abc"),
            "{path}"
        );
    }
    // (A request path always starts with '/': hyper gives origin-form paths.)
    for path in ["/api", "//api", "/api/v1", "///api//v1"] {
        assert_eq!(
            route_of(&t, "h", path, &[]).as_deref(),
            Some("ns/noslash"),
            "{path}"
        );
    }
    for path in ["/x", "///x", "/x/1", "/y", "//y//"] {
        assert_eq!(
            route_of(&t, "i", path, &[]).as_deref(),
            Some("ns/ir"),
            "{path}"
        );
    }
    assert_eq!(route_of(&t, "h", "/abc", &[]), None);
    assert_eq!(route_of(&t, "h", "/apiv2", &[]), None);
    assert_eq!(route_of(&t, "i", "/xy", &[]), None);
    // The prefix reported is the normalised one.
    let m = t.lookup("h", "///abc/def/x", &NoHeaders).unwrap();
    assert_eq!(m.path_prefix, "/abc/def");
    assert_eq!(&*m.rule.paths()[0], "/abc/def");
    // The same through the large (hashed) path index.
    let mut routes: Vec<_> = (0..20)
        .map(|i| hso("ns", &format!("p{i}"), &["big"], &[&format!("/p{i}")], &[]))
        .collect();
    routes.push(hso("ns", "deep", &["big"], &["//q/r//"], &[]));
    let t = table(routes);
    assert_eq!(
        route_of(&t, "big", "////p7//x", &[]).as_deref(),
        Some("ns/p7")
    );
    assert_eq!(
        route_of(&t, "big", "//q/r/", &[]).as_deref(),
        Some("ns/deep")
    );
}

#[test]
fn interceptor_route_rules_are_ored() {
    let t = table(vec![ir(
        "ns",
        "ir",
        None,
        json!({"rules": [
            {"hosts": ["a.example.com"], "paths": [{"value": "/a"}]},
            {"hosts": ["b.example.com"], "headers": [{"name": "x-b"}]},
        ]}),
    )]);
    assert_eq!(
        route_of(&t, "a.example.com", "/a", &[]).as_deref(),
        Some("ns/ir")
    );
    assert_eq!(route_of(&t, "a.example.com", "/b", &[]), None);
    assert_eq!(
        route_of(&t, "b.example.com", "/zzz", &[("x-b", "1")]).as_deref(),
        Some("ns/ir")
    );
    assert_eq!(route_of(&t, "b.example.com", "/zzz", &[]), None);
}

#[test]
fn interceptor_route_wins_clash_and_removal_restores_http_scaled_object() {
    let mut t = table(vec![hso("ns", "app", &["old.example.com"], &[], &[])]);
    assert_eq!(
        route_of(&t, "old.example.com", "/", &[]).as_deref(),
        Some("ns/app")
    );
    let counters = t.get("ns", "app").unwrap().counters.clone();

    assert!(t.apply(ir(
        "ns",
        "app",
        None,
        json!({"rules": [{"hosts": ["new.example.com"]}]})
    )));
    assert_eq!(t.len(), 1);
    assert_eq!(
        t.get("ns", "app").unwrap().kind(),
        SourceKind::InterceptorRoute
    );
    assert_eq!(route_of(&t, "old.example.com", "/", &[]), None);
    assert_eq!(
        route_of(&t, "new.example.com", "/", &[]).as_deref(),
        Some("ns/app")
    );
    assert!(std::sync::Arc::ptr_eq(
        &t.get("ns", "app").unwrap().counters,
        &counters
    ));
    assert!(
        t.get_kind(SourceKind::HttpScaledObject, "ns", "app")
            .is_some()
    );
    assert_eq!(t.all_routes().count(), 2);

    // Updating the shadowed object changes the table but not the routing.
    assert!(t.apply(hso("ns", "app", &["old2.example.com"], &[], &[])));
    assert_eq!(route_of(&t, "old2.example.com", "/", &[]), None);

    assert!(t.remove(SourceKind::InterceptorRoute, "ns", "app"));
    assert_eq!(
        t.get("ns", "app").unwrap().kind(),
        SourceKind::HttpScaledObject
    );
    assert_eq!(route_of(&t, "new.example.com", "/", &[]), None);
    assert_eq!(
        route_of(&t, "old2.example.com", "/", &[]).as_deref(),
        Some("ns/app")
    );
    assert!(std::sync::Arc::ptr_eq(
        &t.get("ns", "app").unwrap().counters,
        &counters
    ));

    assert!(t.remove(SourceKind::HttpScaledObject, "ns", "app"));
    assert!(t.is_empty());
    assert_eq!(route_of(&t, "old2.example.com", "/", &[]), None);
    assert!(!t.remove(SourceKind::HttpScaledObject, "ns", "app"));
}

#[test]
fn counters_carry_over_across_re_apply() {
    let mut t = RoutingTable::new();
    t.apply(hso("ns", "app", &["a"], &[], &[]));
    let before = t.lookup("a", "/", &NoHeaders).unwrap().route.clone();
    before.counters.concurrency.fetch_add(3, Ordering::Relaxed);
    before
        .counters
        .request_count
        .fetch_add(7, Ordering::Relaxed);

    assert!(t.apply(hso("ns", "app", &["a", "b"], &["/x"], &[])));
    let after = t.lookup("b", "/x", &NoHeaders).unwrap().route.clone();
    assert!(!std::sync::Arc::ptr_eq(&before, &after));
    assert!(std::sync::Arc::ptr_eq(&before.counters, &after.counters));
    // An in-flight request finishing on the old route is seen by the new one.
    before.counters.concurrency.fetch_sub(1, Ordering::Relaxed);
    assert_eq!(after.counters.snapshot(), (2, 7));

    // A key that leaves the table and comes back starts from zero.
    t.remove(SourceKind::HttpScaledObject, "ns", "app");
    t.apply(hso("ns", "app", &["a"], &[], &[]));
    assert_eq!(t.get("ns", "app").unwrap().counters.snapshot(), (0, 0));
}

#[test]
fn version_bumps_on_change_only() {
    let mut t = RoutingTable::new();
    assert_eq!(t.version(), 0);
    assert!(t.apply(hso("ns", "app", &["a"], &[], &[])));
    assert_eq!(t.version(), 1);
    // Identical re-apply: same resourceVersion and content.
    assert!(!t.apply(hso("ns", "app", &["a"], &[], &[])));
    assert_eq!(t.version(), 1);
    assert!(t.apply(hso("ns", "app", &["b"], &[], &[])));
    assert_eq!(t.version(), 2);
    assert!(!t.remove(SourceKind::InterceptorRoute, "ns", "app"));
    assert_eq!(t.version(), 2);
    let snapshot = t.clone();
    assert!(t.remove(SourceKind::HttpScaledObject, "ns", "app"));
    assert_eq!(t.version(), 3);
    // The earlier snapshot is untouched.
    assert_eq!(snapshot.version(), 2);
    assert_eq!(
        route_of(&snapshot, "b", "/", &[]).as_deref(),
        Some("ns/app")
    );
    assert_eq!(route_of(&t, "b", "/", &[]), None);
}

#[test]
fn new_resource_version_with_same_content_is_a_change() {
    let mut t = RoutingTable::new();
    t.apply(hso("ns", "app", &["a"], &[], &[]));
    let mut obj = hso_obj(meta("ns", "app", None), json!({"hosts": ["a"]}));
    obj.metadata.resource_version = Some("2".into());
    assert!(t.apply(routing::compile_http_scaled_object(&obj).unwrap()));
    assert_eq!(
        t.get("ns", "app").unwrap().resource_version.as_deref(),
        Some("2")
    );
}

#[test]
fn extend_and_reset() {
    let mut t = RoutingTable::new();
    assert_eq!(
        t.extend([
            hso("ns", "a", &["a"], &[], &[]),
            hso("ns", "b", &["b"], &[], &[])
        ]),
        2
    );
    assert_eq!(t.version(), 1);
    let a_counters = t.get("ns", "a").unwrap().counters.clone();

    // Same set: nothing to repair.
    assert_eq!(
        t.reset([
            hso("ns", "a", &["a"], &[], &[]),
            hso("ns", "b", &["b"], &[], &[])
        ]),
        0
    );
    assert_eq!(t.version(), 1);

    // b deleted, a changed, c added: three repairs, one version bump.
    assert_eq!(
        t.reset([
            hso("ns", "a", &["a2"], &[], &[]),
            hso("ns", "c", &["c"], &[], &[])
        ]),
        3
    );
    assert_eq!(t.version(), 2);
    assert_eq!(t.len(), 2);
    assert!(t.get("ns", "b").is_none());
    assert_eq!(route_of(&t, "b", "/", &[]), None);
    assert_eq!(route_of(&t, "a2", "/", &[]).as_deref(), Some("ns/a"));
    assert!(std::sync::Arc::ptr_eq(
        &t.get("ns", "a").unwrap().counters,
        &a_counters
    ));
}

fn static_of(t: &RoutingTable, host: &str, path: &str) -> Option<(String, usize)> {
    t.lookup(host, path, &NoHeaders)
        .and_then(|m| match m.action {
            Action::Static { index, route } => {
                assert!(std::ptr::eq(route, &m.route.static_routes[index]));
                Some((m.route.key().to_string(), index))
            }
            Action::Forward => None,
        })
}

#[test]
fn static_routes_apply_only_within_their_route() {
    let t = table(vec![
        ir(
            "ns",
            "app",
            Some(1),
            json!({
                "rules": [{"hosts": ["app.example.com"]}],
                "staticRoutes": [
                    // No hosts: upstream would still only see this route's requests.
                    {"rules": [{"paths": [{"value": "/healthz"}]}],
                     "response": {"statusCode": 204}, "responseMode": "Always"},
                    {"rules": [{"paths": [{"value": "/healthz"}]}, {"paths": [{"value": "/readyz"}]}],
                     "response": {"body": "second"}},
                    {"rules": [{"headers": [{"name": "x-maint"}]}],
                     "response": {"body": "maintenance"}},
                ],
            }),
        ),
        hso_at("ns", "other", Some(0), &["other.example.com"], &[], &[]),
        hso_at("ns", "api", Some(0), &["app.example.com"], &["/api"], &[]),
    ]);
    // First static route that matches wins.
    let m = t.lookup("app.example.com", "/healthz", &NoHeaders).unwrap();
    let Action::Static { index: 0, route } = m.action else {
        panic!("expected the first static route, got {:?}", m.action)
    };
    assert_eq!(route.response.status, http::StatusCode::NO_CONTENT);
    assert_eq!(route.mode, ResponseMode::Always);
    assert_eq!(
        static_of(&t, "app.example.com", "/readyz"),
        Some(("ns/app".into(), 1))
    );
    // The default mode is upstream's WhenUnavailable.
    let m = t.lookup("app.example.com", "/readyz", &NoHeaders).unwrap();
    let Action::Static { route, .. } = m.action else {
        panic!()
    };
    assert_eq!(route.mode, ResponseMode::WhenUnavailable);
    // Header rules of static routes.
    let m = t
        .lookup("app.example.com", "/x", &[("X-Maint", "1")])
        .unwrap();
    assert!(matches!(m.action, Action::Static { index: 2, .. }));
    // A request of the route that no static route matches is forwarded.
    let m = t.lookup("app.example.com", "/x", &NoHeaders).unwrap();
    assert_eq!(&**m.route.key(), "ns/app");
    assert!(matches!(m.action, Action::Forward));
    // Static routes never capture another host, even without hosts of their own.
    let m = t
        .lookup("other.example.com", "/healthz", &NoHeaders)
        .unwrap();
    assert_eq!(&**m.route.key(), "ns/other");
    assert!(matches!(m.action, Action::Forward));
    assert_eq!(route_of(&t, "unknown.example.com", "/healthz", &[]), None);
    // ... and never outrank another route of the same host: a longer prefix wins,
    // and that route's (none) static routes apply.
    let m = t
        .lookup("app.example.com", "/api/healthz", &NoHeaders)
        .unwrap();
    assert_eq!(&**m.route.key(), "ns/api");
    assert!(matches!(m.action, Action::Forward));
}

#[test]
fn many_paths_on_one_host_use_the_large_index_and_shrink_back() {
    let mut t = RoutingTable::new();
    for i in 0..50 {
        t.apply(hso(
            "ns",
            &format!("r{i}"),
            &["h"],
            &[&format!("/p{i}"), &format!("/p{i}/deep")],
            &[],
        ));
    }
    t.apply(hso("ns", "root", &["h"], &["/"], &[("x-root", None)]));
    for i in 0..50 {
        assert_eq!(
            route_of(&t, "h", &format!("/p{i}/deep/er"), &[]),
            Some(format!("ns/r{i}"))
        );
        assert_eq!(route_of(&t, "h", &format!("/p{i}x"), &[]), None);
    }
    assert_eq!(
        route_of(&t, "h", "/zzz", &[("x-root", "")]).as_deref(),
        Some("ns/root")
    );
    // Leading slashes are trimmed as upstream: `//p1` is `/p1`.
    assert_eq!(
        route_of(&t, "h", "//p1", &[("x-root", "")]).as_deref(),
        Some("ns/r1")
    );
    for i in 2..50 {
        t.remove(SourceKind::HttpScaledObject, "ns", &format!("r{i}"));
    }
    assert_eq!(route_of(&t, "h", "/p1/deep", &[]).as_deref(), Some("ns/r1"));
    assert_eq!(
        route_of(&t, "h", "/p3", &[("x-root", "1")]).as_deref(),
        Some("ns/root")
    );
}

#[test]
fn route_carries_what_the_data_plane_needs() {
    let obj = ir_obj(
        meta("team", "app", Some(1)),
        json!({
            "target": {"service": "app-svc", "portName": "http"},
            "scalingMetric": {"concurrency": {"targetValue": 5}, "requestRate": {"targetValue": 50}},
            "coldStart": {"placeholder": {"response": {
                "bodyFromConfigMap": {"name": "cm", "key": "page"},
                "headers": {"Retry-After": "5"}}}},
        }),
    );
    let r = routing::compile_interceptor_route(&obj).unwrap();
    assert_eq!(&**r.key(), "team/app");
    assert_eq!(&*r.target.service, "app-svc");
    assert_eq!(&*r.target.namespace, "team");
    assert_eq!(r.target.port, routing::PortRef::Name("http".into()));
    assert_eq!(r.scaling.concurrency.unwrap().target_value, 5);
    let rate = r.scaling.request_rate.unwrap();
    assert_eq!(rate.target_value, 50);
    assert_eq!(rate.window, std::time::Duration::from_secs(60));
    assert_eq!(rate.granularity, std::time::Duration::from_secs(1));
    let p = r.cold_start.placeholder.as_ref().unwrap();
    assert_eq!(p.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p.headers.get("retry-after").unwrap(), "5");
    assert!(
        matches!(&p.body, routing::ResponseBody::ConfigMap { name, key } if &**name == "cm" && &**key == "page")
    );
    assert_eq!(r.resource_version.as_deref(), Some("1"));
    assert!(r.created.is_some());

    let obj = hso_obj(
        meta("team", "legacy", None),
        json!({
            "targetPendingRequests": 7,
            "scaleTargetRef": {"name": "d", "service": "s", "port": 80},
            "coldStartTimeoutFailoverRef": {"service": "fallback", "port": 8081},
        }),
    );
    let r = routing::compile_http_scaled_object(&obj).unwrap();
    assert_eq!(r.scaling.concurrency.unwrap().target_value, 7);
    assert!(r.scaling.request_rate.is_none());
    let f = r.cold_start.fallback.as_ref().unwrap();
    assert_eq!(&*f.target.service, "fallback");
    assert_eq!(f.target.port, routing::PortRef::Number(8081));
    assert_eq!(f.wait, Some(std::time::Duration::from_secs(30)));
    assert_eq!(r.timeouts, routing::Timeouts::default());
}

#[test]
fn timeouts_compile_none_default_zero_disabled() {
    let obj = ir_obj(
        meta("ns", "t", None),
        json!({"timeouts": {"readiness": "0s", "responseHeader": "1m30s"}}),
    );
    let r = routing::compile_interceptor_route(&obj).unwrap();
    assert_eq!(r.timeouts.readiness, Some(std::time::Duration::ZERO));
    assert_eq!(r.timeouts.request, None);
    assert_eq!(
        r.timeouts.response_header,
        Some(std::time::Duration::from_secs(90))
    );

    let obj = hso_obj(
        meta("ns", "t", None),
        json!({"timeouts": {"conditionWait": "20s"}, "scalingMetric": {"requestRate": {"window": "2m"}}}),
    );
    let r = routing::compile_http_scaled_object(&obj).unwrap();
    assert_eq!(
        r.timeouts.readiness,
        Some(std::time::Duration::from_secs(20))
    );
    assert!(r.scaling.concurrency.is_none());
    assert_eq!(
        r.scaling.request_rate.unwrap().window,
        std::time::Duration::from_secs(120)
    );
}

#[test]
fn invalid_object_costs_only_itself() {
    let good = hso_obj(
        meta("ns", "good", None),
        json!({"hosts": ["good.example.com"]}),
    );
    let bad = hso_obj(
        meta("ns", "bad", None),
        json!({"hosts": ["bad.example.com"], "scaleTargetRef": {"name": "d", "service": "s"}}),
    );
    let good_ir = ir_obj(
        meta("ns", "good-ir", None),
        json!({"rules": [{"hosts": ["ir.example.com"]}]}),
    );
    let (t, errors) = RoutingTable::from_objects([&good, &bad], [&good_ir]);
    assert_eq!(t.len(), 2);
    assert_eq!(
        route_of(&t, "good.example.com", "/", &[]).as_deref(),
        Some("ns/good")
    );
    assert_eq!(
        route_of(&t, "ir.example.com", "/", &[]).as_deref(),
        Some("ns/good-ir")
    );
    assert_eq!(route_of(&t, "bad.example.com", "/", &[]), None);
    assert!(!errors.is_empty());
    for e in &errors {
        assert_eq!(e.object, "ns/bad", "{e}");
        assert!(e.field.starts_with("spec.scaleTargetRef"), "{e}");
    }
}

#[test]
fn table_serializes_for_the_admin_view() {
    let t = table(vec![
        hso(
            "ns",
            "b",
            &["b.example.com"],
            &["/api"],
            &[("x-a", Some("1"))],
        ),
        hso("ns", "a", &[], &[], &[]),
    ]);
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["routes"][0]["key"], "ns/a");
    assert_eq!(v["routes"][0]["rules"][0]["hosts"][0], "*");
    assert_eq!(v["routes"][1]["rules"][0]["hosts"][0], "b.example.com");
    assert_eq!(v["routes"][1]["rules"][0]["paths"][0], "/api");
    assert_eq!(v["routes"][1]["rules"][0]["headers"][0]["name"], "x-a");
    assert_eq!(v["routes"][1]["rules"][0]["headers"][0]["value"], "1");
    assert_eq!(v["routes"][1]["target"]["service"], "svc");
    assert_eq!(v["routes"][1]["target"]["port"], 8080);
    assert_eq!(v["routes"][1]["kind"], "HTTPScaledObject");
}

#[test]
fn request_headers_trait_for_pairs() {
    let name = http::HeaderName::from_static("x-a");
    let v = vec![
        ("X-A".to_string(), "1".to_string()),
        ("x-b".into(), "2".into()),
    ];
    assert_eq!(v.values(&name).collect::<Vec<_>>(), vec![b"1".as_slice()]);
    assert_eq!(NoHeaders.values(&name).count(), 0);
}

#[test]
fn failover_timeout_zero_is_no_override() {
    let obj = hso_obj(
        meta("team", "f", None),
        json!({
            "scaleTargetRef": {"name": "d", "service": "s", "port": 80},
            "coldStartTimeoutFailoverRef": {"service": "fallback", "port": 8081, "timeoutSeconds": 0},
        }),
    );
    let r = routing::compile_http_scaled_object(&obj).unwrap();
    assert_eq!(r.cold_start.fallback.as_ref().unwrap().wait, None);
}
