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

/// A request (host, path, headers) and the key of the route it must reach,
/// `None` for a 404.
type Want<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>);

/// Checks where each request goes; a failure names the case and the request.
fn assert_routes(case: &str, t: &RoutingTable, wants: &[Want<'_>]) {
    for &(host, path, headers, want) in wants {
        assert_eq!(
            route_of(t, host, path, headers).as_deref(),
            want,
            "case {case}: {host} {path} {headers:?}"
        );
    }
}

fn table(routes: Vec<routing::Route>) -> RoutingTable {
    RoutingTable::from_routes(routes)
}

/// One case of a precedence rule: the routes of a table, and where requests go.
type Rule = (&'static str, Vec<routing::Route>, &'static [Want<'static>]);

#[test]
fn precedence_rules() {
    let rules: Vec<Rule> = vec![
        (
            "exact beats wildcard beats catch-all",
            vec![
                hso("ns", "exact", &["a.example.com"], &[], &[]),
                hso("ns", "wild", &["*.example.com"], &[], &[]),
                hso("ns", "any", &[], &[], &[]),
            ],
            &[
                ("a.example.com", "/", &[], Some("ns/exact")),
                ("b.example.com", "/", &[], Some("ns/wild")),
                ("other.org", "/", &[], Some("ns/any")),
            ],
        ),
        (
            "star host is a catch-all",
            vec![hso("ns", "star", &["*"], &[], &[])],
            &[
                ("anything.org", "/x", &[], Some("ns/star")),
                ("", "/", &[], Some("ns/star")),
            ],
        ),
        (
            "exact host wins even with a shorter path",
            vec![
                hso("ns", "exact", &["a.example.com"], &["/"], &[]),
                hso("ns", "wild", &["*.example.com"], &["/deep/path"], &[]),
            ],
            &[("a.example.com", "/deep/path", &[], Some("ns/exact"))],
        ),
        (
            "most specific wildcard wins",
            vec![
                hso("ns", "short", &["*.example.com"], &[], &[]),
                hso("ns", "long", &["*.b.example.com"], &[], &[]),
            ],
            &[
                ("a.b.example.com", "/", &[], Some("ns/long")),
                ("x.y.b.example.com", "/", &[], Some("ns/long")),
                ("a.c.example.com", "/", &[], Some("ns/short")),
                // `b.example.com` is the apex of the long wildcard, a subdomain of the short one.
                ("b.example.com", "/", &[], Some("ns/short")),
            ],
        ),
        (
            "wildcard matches any depth but not the apex",
            vec![hso("ns", "wild", &["*.example.com"], &[], &[])],
            &[
                ("a.example.com", "/", &[], Some("ns/wild")),
                ("a.b.c.example.com", "/", &[], Some("ns/wild")),
                ("example.com", "/", &[], None),
                ("badexample.com", "/", &[], None),
                (".example.com", "/", &[], None),
            ],
        ),
        (
            "host is case-insensitive, port and trailing dot stripped",
            vec![
                hso("ns", "app", &["App.Example.COM"], &[], &[]),
                hso("ns", "wild", &["*.Wild.Example.com"], &[], &[]),
                hso("ns", "v4", &["10.0.0.1"], &[], &[]),
            ],
            &[
                ("app.example.com", "/", &[], Some("ns/app")),
                ("APP.EXAMPLE.COM:8080", "/", &[], Some("ns/app")),
                ("app.example.com.", "/", &[], Some("ns/app")),
                ("App.Example.Com.:443", "/", &[], Some("ns/app")),
                ("X.WILD.example.com:80", "/", &[], Some("ns/wild")),
                // IPv6 literals cannot be configured (validation), so they never match
                // an exact host; the port is still stripped for catch-all routes.
                ("[::1]:8080", "/", &[], None),
                ("10.0.0.1:80", "/", &[], Some("ns/v4")),
            ],
        ),
        (
            "longest path prefix wins",
            vec![
                hso("ns", "root", &["h"], &["/"], &[]),
                hso("ns", "api", &["h"], &["/api"], &[]),
                hso("ns", "v1", &["h"], &["/api/v1"], &[]),
            ],
            &[
                ("h", "/api/v1/users", &[], Some("ns/v1")),
                ("h", "/api/v2", &[], Some("ns/api")),
                ("h", "/other", &[], Some("ns/root")),
            ],
        ),
        (
            "path prefixes match whole segments",
            vec![hso("ns", "api", &["h"], &["/api"], &[])],
            &[
                ("h", "/api", &[], Some("ns/api")),
                ("h", "/api/", &[], Some("ns/api")),
                ("h", "/api/x/y", &[], Some("ns/api")),
                ("h", "/apiv2", &[], None),
                ("h", "/ap", &[], None),
                ("h", "/", &[], None),
            ],
        ),
        (
            "a trailing slash prefix behaves like one without",
            vec![hso("ns", "api", &["h"], &["/api/"], &[])],
            &[
                ("h", "/api", &[], Some("ns/api")),
                ("h", "/api/x", &[], Some("ns/api")),
                ("h", "/apix", &[], None),
            ],
        ),
        (
            "the query string is ignored",
            vec![hso("ns", "api", &["h"], &["/api"], &[])],
            &[
                ("h", "/api?x=/y", &[], Some("ns/api")),
                ("h", "/apiv2?x=/api", &[], None),
            ],
        ),
        (
            "more headers win, then valued headers",
            vec![
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
            ],
            &[
                ("h", "/", &[], Some("ns/none")),
                ("h", "/", &[("x-a", "2")], Some("ns/one")),
                ("h", "/", &[("x-a", "2"), ("x-b", "")], Some("ns/two")),
                (
                    "h",
                    "/",
                    &[("x-a", "1"), ("x-b", "")],
                    Some("ns/two-valued"),
                ),
            ],
        ),
        (
            "a header mismatch falls back to a shorter path on the same host",
            vec![
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
            ],
            &[
                (
                    "h.example.com",
                    "/api/x",
                    &[("x-beta", "1")],
                    Some("ns/api-beta"),
                ),
                // Upstream would jump to the wildcard here; we stay on the host.
                ("h.example.com", "/api/x", &[], Some("ns/root")),
            ],
        ),
        (
            "a header mismatch on every path falls back to the wildcard, then the catch-all",
            vec![
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
            ],
            &[
                ("h.example.com", "/api", &[("x-wild", "")], Some("ns/wild")),
                ("h.example.com", "/api", &[], Some("ns/any")),
            ],
        ),
        (
            "the rules of an InterceptorRoute are ORed",
            vec![ir(
                "ns",
                "ir",
                None,
                json!({"rules": [
                    {"hosts": ["a.example.com"], "paths": [{"value": "/a"}]},
                    {"hosts": ["b.example.com"], "headers": [{"name": "x-b"}]},
                ]}),
            )],
            &[
                ("a.example.com", "/a", &[], Some("ns/ir")),
                ("a.example.com", "/b", &[], None),
                ("b.example.com", "/zzz", &[("x-b", "1")], Some("ns/ir")),
                ("b.example.com", "/zzz", &[], None),
            ],
        ),
    ];
    for (case, routes, wants) in rules {
        assert_routes(case, &table(routes), wants);
    }
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
    assert_routes(
        "header lists",
        &t,
        &[
            ("h", "/", &[("x-tenant", "Blue")], Some("ns/h")),
            ("h", "/", &[("X-TENANT", "Blue")], Some("ns/h")),
            ("h", "/", &[("x-tenant", "blue")], None),
            (
                "h",
                "/",
                &[("x-tenant", "red"), ("x-tenant", "Blue")],
                Some("ns/h"),
            ),
        ],
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

/// The key of the route a request for `h/` reaches among `routes`.
fn winner(routes: Vec<routing::Route>) -> Option<String> {
    route_of(&table(routes), "h", "/", &[])
}

#[test]
fn older_creation_timestamp_wins() {
    let won = winner(vec![
        hso_at("ns", "a-young", Some(100), &["h"], &[], &[]),
        hso_at("ns", "z-old", Some(10), &["h"], &[], &[]),
        hso_at("ns", "b-unknown", None, &["h"], &[], &[]),
    ]);
    assert_eq!(won.as_deref(), Some("ns/z-old"));
}

#[test]
fn object_without_timestamp_is_youngest() {
    let won = winner(vec![
        hso_at("a", "x", None, &["h"], &[], &[]),
        hso_at("b", "x", Some(100), &["h"], &[], &[]),
    ]);
    assert_eq!(won.as_deref(), Some("b/x"));
}

#[test]
fn namespace_name_descending_breaks_ties() {
    // Upstream: ties after headers and creationTimestamp go to namespace/name
    // in descending order (the key's byte order, as the API lists objects).
    // Each case: the (namespace, name, created) of the routes, and the winner.
    type Tie<'a> = (&'a str, &'a [(&'a str, &'a str, u32)], &'a str);
    let cases: [Tie<'_>; 4] = [
        (
            "namespaces",
            &[("alpha", "app", 5), ("beta", "app", 5)],
            "beta/app",
        ),
        (
            "names",
            &[
                ("default", "aaa", 5),
                ("default", "zzz", 5),
                ("default", "mmm", 5),
            ],
            "default/zzz",
        ),
        // The joined key decides: "a/x" > "a-b/x" ('/' sorts after '-').
        ("joined key", &[("a", "x", 5), ("a-b", "x", 5)], "a/x"),
        // The timestamp still comes first.
        (
            "timestamp first",
            &[("alpha", "app", 4), ("beta", "app", 5)],
            "alpha/app",
        ),
    ];
    for (name, routes, want) in cases {
        let routes = routes
            .iter()
            .map(|&(ns, n, created)| hso_at(ns, n, Some(created), &["h"], &[], &[]))
            .collect();
        assert_eq!(winner(routes).as_deref(), Some(want), "case {name}");
    }
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
    assert_routes(
        "no rules",
        &t,
        &[("whatever.org", "/a/b", &[], None), ("", "/", &[], None)],
    );
    // The keys stay in the table, so /queue lists them with zero counts.
    assert_eq!(t.len(), 2);
    assert!(t.get("ns", "ir").is_some());
    // An HTTPScaledObject without hosts still catches everything.
    let t = table(vec![
        ir("ns", "ir", None, json!({})),
        hso("ns", "any", &[], &[], &[]),
    ]);
    assert_routes(
        "no hosts",
        &t,
        &[("whatever.org", "/a/b", &[], Some("ns/any"))],
    );
}

/// Checks that every one of `requests` (host, path) reaches the route `want`.
fn assert_all_reach(t: &RoutingTable, want: &str, requests: &[(&str, &str)]) {
    for &(host, path) in requests {
        assert_eq!(
            route_of(t, host, path, &[]).as_deref(),
            Some(want),
            "{host} {path}"
        );
    }
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
    let on = |host| (host, "/");
    assert_all_reach(
        &t,
        "ns/hso",
        &["example.com", "example.com:8080", "example.com:9999"].map(on),
    );
    assert_all_reach(
        &t,
        "ns/ir",
        &[
            "api.example.com",
            "api.example.com:8443",
            "a.w.example.com:1",
        ]
        .map(on),
    );
    assert_eq!(route_of(&t, "other.example.com", "/", &[]), None);
}

#[test]
fn ipv6_hosts() {
    let t = table(vec![
        hso("ns", "bare", &["::1"], &[], &[]),
        hso("ns", "bracketed", &["[fe80::2]:8080"], &[], &[]),
        ir("ns", "ir", None, json!({"rules": [{"hosts": ["[::3]"]}]})),
    ]);
    let on = |host| (host, "/");
    assert_all_reach(&t, "ns/bare", &["[::1]:8080", "[::1]", "::1"].map(on));
    assert_all_reach(&t, "ns/bracketed", &["[FE80::2]", "[fe80::2]:80"].map(on));
    assert_all_reach(&t, "ns/ir", &[("[::3]:1", "/")]);
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
    let on = |host| move |path| (host, path);
    assert_all_reach(
        &t,
        "ns/abc",
        &[
            "/abc/def",
            "/abc/def/",
            "//abc/def",
            "///abc/def//g",
            "/abc/def?q=1",
        ]
        .map(on("h")),
    );
    // (A request path always starts with '/': hyper gives origin-form paths.)
    assert_all_reach(
        &t,
        "ns/noslash",
        &["/api", "//api", "/api/v1", "///api//v1"].map(on("h")),
    );
    assert_all_reach(
        &t,
        "ns/ir",
        &["/x", "///x", "/x/1", "/y", "//y//"].map(on("i")),
    );
    assert_routes(
        "not the prefixes",
        &t,
        &[
            ("h", "/abc", &[], None),
            ("h", "/apiv2", &[], None),
            ("i", "/xy", &[], None),
        ],
    );
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
    assert_routes(
        "the large index",
        &t,
        &[
            ("big", "////p7//x", &[], Some("ns/p7")),
            ("big", "//q/r/", &[], Some("ns/deep")),
        ],
    );
}

#[test]
fn interceptor_route_wins_clash_and_removal_restores_http_scaled_object() {
    let mut t = table(vec![hso("ns", "app", &["old.example.com"], &[], &[])]);
    assert_eq!(
        route_of(&t, "old.example.com", "/", &[]).as_deref(),
        Some("ns/app")
    );
    let counters = t.get("ns", "app").unwrap().counters.clone();
    // `ns/app` is the object of `kind`, reached at `host` and not at `gone`,
    // and it keeps its counters across the switch.
    let served_by = |t: &RoutingTable, kind: SourceKind, host: &str, gone: &str| {
        assert_eq!(t.get("ns", "app").unwrap().kind(), kind);
        assert_eq!(route_of(t, gone, "/", &[]), None, "{gone}");
        assert_eq!(
            route_of(t, host, "/", &[]).as_deref(),
            Some("ns/app"),
            "{host}"
        );
        assert!(std::sync::Arc::ptr_eq(
            &t.get("ns", "app").unwrap().counters,
            &counters
        ));
    };

    assert!(t.apply(ir(
        "ns",
        "app",
        None,
        json!({"rules": [{"hosts": ["new.example.com"]}]})
    )));
    assert_eq!(t.len(), 1);
    served_by(
        &t,
        SourceKind::InterceptorRoute,
        "new.example.com",
        "old.example.com",
    );
    assert!(
        t.get_kind(SourceKind::HttpScaledObject, "ns", "app")
            .is_some()
    );
    assert_eq!(t.all_routes().count(), 2);

    // Updating the shadowed object changes the table but not the routing.
    assert!(t.apply(hso("ns", "app", &["old2.example.com"], &[], &[])));
    assert_eq!(route_of(&t, "old2.example.com", "/", &[]), None);

    assert!(t.remove(SourceKind::InterceptorRoute, "ns", "app"));
    served_by(
        &t,
        SourceKind::HttpScaledObject,
        "old2.example.com",
        "new.example.com",
    );

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
