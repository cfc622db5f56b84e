//! Routing decisions that must equal upstream's (the Go add-on), replayed
//! through a real interceptor on a routes directory, as a new user runs it:
//! static routes, rule-less InterceptorRoutes, rule hosts with ports and IPv6
//! literals, paths without a leading slash, path normalisation, the
//! namespace/name tie-break, and coldStart with placeholder and fallback.

mod common;

use common::*;
use http::StatusCode;

fn hso_at(ns: &str, name: &str, svc: &str, hosts: &str, created: &str) -> String {
    format!(
        r#"---
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: "{created}"}}
spec:
  hosts: {hosts}
  scaleTargetRef: {{name: {svc}, kind: Deployment, apiVersion: apps/v1, service: {svc}, portName: http}}
"#
    )
}

/// Writes `svc.yaml`: a Service with one endpoint per `(namespace, name,
/// backend, ready)`.
fn write_services(dir: &std::path::Path, services: &[(&str, &str, std::net::SocketAddr, bool)]) {
    let yaml: String = services
        .iter()
        .map(|(ns, svc, addr, ready)| service_yaml(ns, svc, "http", None, *addr, *ready))
        .collect();
    write(dir, "svc.yaml", &yaml);
}

/// An interceptor on a new routes directory holding `svc.yaml` (the
/// `services`, as [`write_services`] writes them) and `routes.yaml`
/// (`objects`), once every route of `routes` (`namespace/name`) is in its
/// table.
async fn serve_objects(
    services: &[(&str, &str, std::net::SocketAddr, bool)],
    objects: &str,
    routes: &[&str],
) -> (interceptor::Interceptor, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_services(dir.path(), services);
    write(dir.path(), "routes.yaml", objects);
    (start_waiting(dir.path(), &[], routes, &[]).await, dir)
}

/// `RequestCount` of a route in `/queue`.
async fn request_count(icp: &interceptor::Interceptor, key: &str) -> u64 {
    let q = queue(icp).await;
    q[key]["RequestCount"]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in /queue: {q}"))
}

#[tokio::test]
async fn static_routes_answer_only_their_own_route_and_are_not_counted() {
    let [app, other] = echoes(["app", "other"]).await;
    let statics = r#"  staticRoutes:
  - rules: [{paths: [{value: /healthz}]}]
    response: {statusCode: 200, body: static ok}
    responseMode: Always
  - rules: [{paths: [{value: /maintenance}]}]
    response: {statusCode: 503, body: maintenance}
"#;
    let created = "2024-01-01T00:00:00Z";
    let objects = ir_rule("app", "app", "app.test", statics)
        + &hso_at("ns", "other", "other", "[other.test]", created);
    let services = [("ns", "app", app, true), ("ns", "other", other, true)];
    let (icp, dir) = serve_objects(&services, &objects, &["ns/app", "ns/other"]).await;

    // On the route's own host the static route answers (the forwarding rule
    // does not outrank it), without a cold-start header.
    let got = get(icp.proxy_addr, "app.test", "/healthz").await;
    assert_eq!(
        (got.status, got.text().as_str(), got.server()),
        (StatusCode::OK, "static ok", "")
    );
    assert_eq!(got.cold(), None);
    // A static route never captures another host: other routes and unknown
    // hosts are not answered statically.
    let got = get(icp.proxy_addr, "other.test", "/healthz").await;
    assert_eq!((got.status, got.server()), (StatusCode::OK, "other"));
    let got = get(icp.proxy_addr, "unknown.test", "/healthz").await;
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.text());
    // WhenUnavailable (the default mode) with a ready target: forwarded.
    let got = get(icp.proxy_addr, "app.test", "/maintenance").await;
    assert_eq!((got.status, got.server()), (StatusCode::OK, "app"));
    // Static traffic does not scale the app: neither answer nor the
    // WhenUnavailable forward counts in /queue; an ordinary request does.
    assert_eq!(request_count(&icp, "ns/app").await, 0);
    let got = get(icp.proxy_addr, "app.test", "/other").await;
    assert_eq!((got.status, got.server()), (StatusCode::OK, "app"));
    assert_eq!(request_count(&icp, "ns/app").await, 1);

    // Not ready: WhenUnavailable answers statically.
    write_services(
        dir.path(),
        &[("ns", "app", app, false), ("ns", "other", other, true)],
    );
    wait_unready(&icp, "ns", "app").await;
    let got = get(icp.proxy_addr, "app.test", "/maintenance/x").await;
    assert_eq!(
        (got.status, got.text().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "maintenance")
    );
    assert_eq!(request_count(&icp, "ns/app").await, 1);
    icp.stop().await;
}

/// Waits until the ready-cache says `ns/svc` has no ready endpoint.
async fn wait_unready(icp: &interceptor::Interceptor, ns: &str, svc: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while icp.sync.endpoints.load().has_ready(ns, svc) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ns}/{svc} stays ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn interceptor_route_without_rules_routes_nothing_but_has_a_queue_key() {
    let (icp, _dir) = serving(&ir("ns", "norules", "app", ""), &["ns/norules"]).await;
    let got = get(icp.proxy_addr, "anything.test", "/x").await;
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.text());
    let q = queue(&icp).await;
    assert_eq!(q["ns/norules"]["Concurrency"], 0, "{q}");
    assert_eq!(q["ns/norules"]["RequestCount"], 0, "{q}");
    icp.stop().await;
}

/// An interceptor serving `objects` for the Service `ns/app` (echo "app"),
/// once every route of `routes` is in its table.
async fn serving(objects: &str, routes: &[&str]) -> (interceptor::Interceptor, tempfile::TempDir) {
    let app = echo("app").await;
    serve_objects(&[("ns", "app", app, true)], objects, routes).await
}

async fn assert_app(icp: &interceptor::Interceptor, host: &str, path: &str) -> Got {
    let got = get(icp.proxy_addr, host, path).await;
    assert_eq!(
        (got.status, got.server()),
        (StatusCode::OK, "app"),
        "{host} {path}: {}",
        got.text()
    );
    got
}

#[tokio::test]
async fn rule_host_with_a_port_matches_the_host_on_any_port() {
    let (icp, _dir) = serving(
        &hso_at(
            "ns",
            "port",
            "app",
            r#"["port.test:8080"]"#,
            "2024-01-01T00:00:00Z",
        ),
        &["ns/port"],
    )
    .await;
    for host in ["port.test", "port.test:8080", "port.test:9999"] {
        assert_app(&icp, host, "/").await;
    }
    icp.stop().await;
}

#[tokio::test]
async fn ipv6_hosts_route() {
    let objects = [
        hso_at("ns", "v6", "app", r#"["::1"]"#, "2024-01-01T00:00:00Z"),
        ir_rule("v6b", "app", "[::2]:8080", ""),
    ]
    .join("");
    let (icp, _dir) = serving(&objects, &["ns/v6", "ns/v6b"]).await;
    for host in ["[::1]:8080", "[::1]", "[::2]", "[::2]:1"] {
        assert_app(&icp, host, "/").await;
    }
    icp.stop().await;
}

/// Serves the route `ns/<name>` for `path.test` with the path rule `value`
/// (YAML): each of `matching` reaches the app, its request target
/// forwarded exactly as sent, and `other` matches nothing.
async fn assert_path_rule(name: &str, value: &str, matching: &[&str], other: &str) {
    let paths = format!("    paths: [{{value: {value}}}]\n");
    let route = ir_rule(name, "app", "path.test", &paths);
    let (icp, _dir) = serving(&route, &[&format!("ns/{name}")]).await;
    for path in matching {
        let got = assert_app(&icp, "path.test", path).await;
        let sent = path.split('?').next().unwrap();
        assert_eq!(got.json()["path"], sent, "{path}");
    }
    let got = get(icp.proxy_addr, "path.test", other).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{other}");
    icp.stop().await;
}

#[tokio::test]
async fn rule_path_without_a_leading_slash() {
    assert_path_rule("noslash", "api", &["/api", "/api/x"], "/apix").await;
}

#[tokio::test]
async fn leading_and_trailing_slashes_are_trimmed_before_matching() {
    let matching = ["/abc/def", "///abc/def", "/abc/def//x", "//abc/def/?q=1"];
    assert_path_rule("slashes", r#""//abc/def//""#, &matching, "/abc").await;
}

#[tokio::test]
async fn ties_go_to_namespace_name_descending() {
    let [alpha, beta] = echoes(["alpha", "beta"]).await;
    let same = "2024-01-01T00:00:00Z";
    let objects = hso_at("alpha", "app", "app", "[tie.test]", same)
        + &hso_at("beta", "app", "app", "[tie.test]", same);
    let services = [("alpha", "app", alpha, true), ("beta", "app", beta, true)];
    let (icp, _dir) = serve_objects(&services, &objects, &["alpha/app", "beta/app"]).await;
    let got = get(icp.proxy_addr, "tie.test", "/").await;
    assert_eq!((got.status, got.server()), (StatusCode::OK, "beta"));
    icp.stop().await;
}

#[tokio::test]
async fn cold_start_with_placeholder_and_fallback_answers_with_the_placeholder() {
    let [app, fallback] = echoes(["app", "fallback"]).await;
    let spec = r#"  coldStart:
    placeholder:
      response: {body: warming up}
    fallback:
      service: {name: fallback, portName: http}
"#;
    let services = [
        ("ns", "app", app, false),
        ("ns", "fallback", fallback, true),
    ];
    let (icp, _dir) = serve_objects(
        &services,
        &ir_rule("cold", "app", "cold.test", spec),
        &["ns/cold"],
    )
    .await;
    let got = get(icp.proxy_addr, "cold.test", "/").await;
    assert_eq!(
        (got.status, got.text().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "warming up")
    );
    assert_eq!(got.cold(), Some("true"));
    icp.stop().await;
}
