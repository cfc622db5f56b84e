//! The proxy end to end over real sockets: a routes directory, in-process
//! echo backends, an interceptor on ephemeral ports.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::StatusCode;

#[tokio::test]
async fn forwards_keeping_host_and_appending_forwarded_for() {
    let (icp, _dir) = serve_app("app.test", &[]).await;

    let forwarded = [("x-forwarded-for", "10.1.2.3")];
    let got = get_with(
        icp.proxy_addr,
        "App.Test:8080",
        "/some/path?x=1",
        &forwarded,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.server(), "app");
    assert_eq!(got.cold(), Some("false"));
    let j = got.json();
    assert_eq!(j["host"], "App.Test:8080");
    assert_eq!(j["path"], "/some/path");
    assert_eq!(j["query"], "x=1");
    assert_eq!(j["headers"]["x-forwarded-for"][0], "10.1.2.3, 127.0.0.1");

    // Bodies stream both ways: a 2 MiB upload and a 3 MiB download.
    let upload = Bytes::from(vec![b'u'; 2 << 20]);
    let got = send(
        &client(),
        icp.proxy_addr,
        "POST",
        "app.test",
        "/up",
        &[],
        upload,
    )
    .await;
    assert_eq!(got.json()["bodyLength"], 2 << 20);
    let got = get(icp.proxy_addr, "app.test", "/down?size=3145728").await;
    assert_eq!(got.body.len(), 3 << 20);

    let q = queue(&icp).await;
    assert_eq!(q["ns/app"]["Concurrency"], 0);
    assert_eq!(q["ns/app"]["RequestCount"], 3);
    icp.stop().await;
}

#[tokio::test]
async fn routing_precedence_end_to_end() {
    // Each app `ns/<name>` (its echo backend named alike): hosts, path
    // prefixes, headers.
    type App<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        &'a [(&'a str, &'a str)],
    );
    let apps: [App<'_>; 5] = [
        ("exact-api", &["prec.test"], &["/api"], &[]),
        ("exact-root", &["prec.test"], &["/"], &[]),
        ("canary", &["prec.test"], &["/api"], &[("x-canary", "1")]),
        ("wild", &["*.test"], &[], &[]),
        ("any", &[], &[], &[]),
    ];
    let mut files = String::new();
    for (name, hosts, paths, headers) in apps {
        files.push_str(&http_service(name, echo(name).await, true));
        files.push_str(&httpso_yaml("ns", name, name, hosts, paths, headers));
    }
    let keys = apps.map(|(name, ..)| format!("ns/{name}"));
    let keys = keys.each_ref().map(String::as_str);
    let (icp, _dir) = serve_files(&[("all.yaml", &files)], &[], &keys, &keys).await;
    let c = client();
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 8] = [
        ("prec.test", "/api/x", &[], "exact-api"),
        ("PREC.test:80", "/api", &[], "exact-api"),
        ("prec.test", "/api/x", &[("x-canary", "1")], "canary"),
        ("prec.test", "/api/x", &[("x-canary", "2")], "exact-api"),
        ("prec.test", "/apiv2", &[], "exact-root"),
        ("a.b.test", "/api", &[], "wild"),
        ("test", "/", &[], "any"),
        ("elsewhere.example", "/api", &[], "any"),
    ];
    for (host, path, headers, want) in cases {
        let got = send(&c, icp.proxy_addr, "GET", host, path, headers, Bytes::new()).await;
        assert_eq!(got.status, StatusCode::OK, "{host}{path}: {}", got.text());
        assert_eq!(got.server(), want, "{host}{path} {headers:?}");
    }
    icp.stop().await;
}

#[tokio::test]
async fn no_route_is_404_naming_host_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let icp = start_dir(dir.path(), &[]).await;
    let got = get(icp.proxy_addr, "nowhere.test", "/x/y").await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    let text = got.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("nowhere.test") && text.contains("/x/y"),
        "{text}"
    );
    icp.stop().await;
}

#[tokio::test]
async fn unresolvable_port_is_500_and_broken_backend_is_502() {
    let backend = echo("app").await;
    // A backend that accepts and hangs up at once.
    let rude = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rude_addr = rude.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = rude.accept().await {
            drop(s);
        }
    });
    let routes = [
        // The route asks for portName `http`; the Service only has `web`.
        service_yaml("ns", "app", "web", None, backend, true),
        httpso_yaml("ns", "app", "app", &["app.test"], &[], &[]),
        http_service("rude", rude_addr, true),
        httpso_yaml("ns", "rude", "rude", &["rude.test"], &[], &[]),
    ]
    .concat();
    let keys = ["ns/app", "ns/rude"];
    let (icp, _dir) = serve_files(&[("routes.yaml", &routes)], &[], &keys, &keys).await;

    let got = get(icp.proxy_addr, "app.test", "/").await;
    assert_eq!(
        got.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        got.text()
    );
    assert!(got.text().contains("no port named http"), "{}", got.text());

    let got = get(icp.proxy_addr, "rude.test", "/").await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    icp.stop().await;
}

/// An InterceptorRoute `ns/name` for the host `name.test` to `svc`, with
/// `extra` appended to its spec.
fn ir_yaml(name: &str, svc: &str, extra: &str) -> String {
    ir_rule(name, svc, &format!("{name}.test"), extra)
}

#[tokio::test]
async fn timeouts_are_504() {
    let backend = echo("slow").await;
    let routes = [
        http_service("slow", backend, true),
        ir_yaml("rht", "slow", "  timeouts: {responseHeader: 200ms}\n"),
        ir_yaml("req", "slow", "  timeouts: {request: 200ms}\n"),
    ]
    .concat();
    let keys = ["ns/rht", "ns/req"];
    let (icp, _dir) = serve_files(&[("routes.yaml", &routes)], &[], &keys, &["ns/slow"]).await;

    let got = get(icp.proxy_addr, "rht.test", "/?delay=5s").await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{}", got.text());
    let got = get(icp.proxy_addr, "req.test", "/?delay=5s").await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{}", got.text());
    // Fast requests on the same routes are fine.
    assert_eq!(
        get(icp.proxy_addr, "rht.test", "/").await.status,
        StatusCode::OK
    );
    let q = queue(&icp).await;
    assert_eq!(q["ns/rht"]["Concurrency"], 0);
    assert_eq!(q["ns/rht"]["RequestCount"], 2);
    icp.stop().await;
}

/// A backend that sends its status line, headers and half of its body at
/// once, then stalls.
async fn stalling_backend() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                let _ = s.write_all(b"world").await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn request_timeout_covers_the_response_body() {
    use http_body_util::BodyExt;
    let stalling = stalling_backend().await;
    let fast = echo("fast").await;
    let routes = [
        http_service("stall", stalling, true),
        http_service("fast", fast, true),
        ir_yaml("stall", "stall", "  timeouts: {request: 300ms}\n"),
        ir_yaml("fast", "fast", "  timeouts: {request: 300ms}\n"),
    ]
    .concat();
    let keys = ["ns/stall", "ns/fast"];
    let (icp, _dir) = serve_files(&[("routes.yaml", &routes)], &[], &keys, &keys).await;

    // A body that ends in time arrives whole.
    let got = get(icp.proxy_addr, "fast.test", "/?size=100000").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body.len(), 100_000);

    // The headers arrive, then the body is cut off at the deadline instead
    // of hanging for the backend's 30 s.
    let req = http::Request::builder()
        .uri(format!("http://{}/", icp.proxy_addr))
        .header("host", "stall.test")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(WAIT, client().request(req))
        .await
        .expect("headers in time")
        .expect("headers");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("the body ends (cut off) well before the backend finishes");
    assert!(
        body.is_err(),
        "a cut-off body is an error, not a short success"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off at the 300 ms deadline, took {:?}",
        started.elapsed()
    );
    wait_concurrency(&icp, "ns/stall", 0).await;
    icp.stop().await;
}

#[tokio::test]
async fn backend_connections_are_reused() {
    let (backend, accepted) = counting_backend(false).await;
    let routes = http_service("app", backend, true) + &ir_yaml("app", "app", "");
    let keys = ["ns/app"];
    let (icp, _dir) = serve_files(&[("routes.yaml", &routes)], &[], &keys, &keys).await;
    let client = client();
    for _ in 0..20 {
        let got = get_on(&client, icp.proxy_addr, "app.test", "/").await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(&got.body[..], b"ok");
        // The connection goes back to the pool just after the body ends.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "20 sequential requests over one client connection use one backend connection"
    );
    icp.stop().await;
}

#[tokio::test]
async fn cold_start_holds_until_the_slice_turns_ready() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo("cold").await;
    write_app(dir.path(), "cold", &["cold.test"], backend, false);
    let icp = start_waiting(dir.path(), &[], &["ns/cold"], &[]).await;

    let addr = icp.proxy_addr;
    let held = tokio::spawn(async move { get(addr, "cold.test", "/held").await });
    let q = wait_concurrency(&icp, "ns/cold", 1).await;
    assert_eq!(q["ns/cold"]["RequestCount"], 1);
    assert!(!held.is_finished());

    // The Service turns ready: the held request goes through at once.
    write(dir.path(), "svc.yaml", &http_service("cold", backend, true));
    let got = tokio::time::timeout(WAIT, held)
        .await
        .expect("released")
        .unwrap();
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.server(), "cold");
    assert_eq!(got.cold(), Some("true"));
    assert_eq!(got.json()["path"], "/held");
    let q = wait_concurrency(&icp, "ns/cold", 0).await;
    assert_eq!(q["ns/cold"]["RequestCount"], 1);

    // Warm now.
    assert_eq!(get(addr, "cold.test", "/").await.cold(), Some("false"));
    icp.stop().await;
}

#[tokio::test]
async fn cold_start_readiness_timeout_fallback_and_placeholder() {
    let [backend, fallback] = echoes(["target", "fallback"]).await;
    let routes = [
        http_service("target", backend, false),
        http_service("fb", fallback, true),
        ir_yaml("timeout", "target", "  timeouts: {readiness: 300ms}\n"),
        ir_yaml(
            "fallback",
            "target",
            "  timeouts: {readiness: 200ms}\n  coldStart:\n    fallback:\n      service: {name: fb, portName: http}\n",
        ),
        ir_yaml(
            "placeholder",
            "target",
            "  coldStart:\n    placeholder:\n      response:\n        body: warming up\n        headers: {Retry-After: \"5\"}\n",
        ),
    ]
    .concat();
    let keys = ["ns/timeout", "ns/fallback", "ns/placeholder"];
    let (icp, _dir) = serve_files(&[("routes.yaml", &routes)], &[], &keys, &["ns/fb"]).await;

    let got = get(icp.proxy_addr, "timeout.test", "/").await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{}", got.text());
    assert_eq!(got.cold(), Some("true"));

    let got = get(icp.proxy_addr, "fallback.test", "/").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.server(), "fallback");
    assert_eq!(got.cold(), Some("true"));

    let got = get(icp.proxy_addr, "placeholder.test", "/").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.text(), "warming up");
    assert_eq!(got.headers["retry-after"], "5");
    assert_eq!(got.cold(), Some("true"));

    // Each was counted while it lived.
    let q = queue(&icp).await;
    for r in ["ns/timeout", "ns/fallback", "ns/placeholder"] {
        assert_eq!(q[r]["RequestCount"], 1, "{r}: {q}");
        assert_eq!(q[r]["Concurrency"], 0, "{r}: {q}");
    }
    icp.stop().await;
}

#[tokio::test]
async fn static_routes_and_max_pending() {
    let backend = echo("app").await;
    let statics = "  staticRoutes:\n  - rules: [{hosts: [app.test], paths: [{value: /healthz}]}]\n    response: {statusCode: 200, body: ok}\n    responseMode: Always\n  - rules: [{hosts: [app.test], paths: [{value: /maintenance}]}]\n    response: {statusCode: 503, body: down for maintenance}\n    responseMode: WhenUnavailable\n";
    let files: [(&str, &str); 2] = [
        ("svc.yaml", &http_service("app", backend, false)),
        ("routes.yaml", &ir_yaml("app", "app", statics)),
    ];
    let one_pending = ["--cold-start-max-pending-requests", "1"];
    let (icp, dir) = serve_files(&files, &one_pending, &["ns/app"], &[]).await;

    let got = get(icp.proxy_addr, "app.test", "/healthz").await;
    assert_eq!((got.status, got.text().as_str()), (StatusCode::OK, "ok"));
    let got = get(icp.proxy_addr, "app.test", "/maintenance/x").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.text(), "down for maintenance");

    // One request may wait for the cold start; the second is turned away.
    let addr = icp.proxy_addr;
    let held = tokio::spawn(async move { get(addr, "app.test", "/a").await });
    wait_concurrency(&icp, "ns/app", 1).await;
    let got = get(icp.proxy_addr, "app.test", "/b").await;
    assert_eq!(
        got.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        got.text()
    );
    assert!(got.text().contains("too many requests"), "{}", got.text());

    write(dir.path(), "svc.yaml", &http_service("app", backend, true));
    let got = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    assert_eq!(got.status, StatusCode::OK);
    // Ready now: Always still answers, WhenUnavailable forwards.
    assert_eq!(get(addr, "app.test", "/healthz").await.text(), "ok");
    let got = get(addr, "app.test", "/maintenance").await;
    assert_eq!((got.status, got.server()), (StatusCode::OK, "app"));
    icp.stop().await;
}

#[tokio::test]
async fn client_that_goes_away_is_uncounted() {
    let (icp, _dir) = serve_app("app.test", &[]).await;
    let addr = icp.proxy_addr;
    let slow = tokio::spawn(async move { get(addr, "app.test", "/?delay=30s").await });
    wait_concurrency(&icp, "ns/app", 1).await;
    slow.abort();
    wait_concurrency(&icp, "ns/app", 0).await;
    tokio::time::timeout(Duration::from_secs(5), icp.proxy.inflight().wait_idle())
        .await
        .unwrap();
    icp.stop().await;
}

#[tokio::test]
async fn metrics_have_upstream_names_and_labels() {
    let (icp, _dir) = serve_app("app.test", &["--log-requests", "true"]).await;
    for _ in 0..3 {
        assert_eq!(
            get(icp.proxy_addr, "app.test", "/").await.status,
            StatusCode::OK
        );
    }
    let c = client();
    let got = send(
        &c,
        icp.proxy_addr,
        "POST",
        "app.test",
        "/?status=201",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(got.status, StatusCode::CREATED);
    for addr in [icp.metrics_addr.expect("metrics listener"), icp.admin_addr] {
        let text = get_on(&c, addr, "metrics", "/metrics").await.text();
        for want in [
            r#"interceptor_request_count_total{code="200",method="GET",route_name="app",route_namespace="ns"} 3"#,
            r#"interceptor_request_count_total{code="201",method="POST",route_name="app",route_namespace="ns"} 1"#,
            r#"interceptor_request_duration_seconds_count{code="200",method="GET",route_name="app",route_namespace="ns"} 3"#,
            r#"interceptor_request_duration_seconds_bucket{le="+Inf",code="200",method="GET",route_name="app",route_namespace="ns"} 3"#,
            r#"interceptor_request_concurrency{route_name="app",route_namespace="ns"} 0"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
    icp.stop().await;
}

#[tokio::test]
async fn dials_are_retried_until_the_backend_listens() {
    // A ready endpoint whose port nobody listens on yet (a pod that is
    // Ready a moment before its server binds).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "late", &["late.test"], port, true);
    let icp = start_waiting(dir.path(), &[], &["ns/late"], &["ns/late"]).await;
    let addr = icp.proxy_addr;
    let req = tokio::spawn(async move { get(addr, "late.test", "/late").await });
    wait_concurrency(&icp, "ns/late", 1).await;
    // Connection refused for a while, then the backend appears.
    tokio::time::sleep(Duration::from_millis(300)).await;
    serve_echo("late", tokio::net::TcpListener::bind(port).await.unwrap());
    let got = tokio::time::timeout(WAIT, req).await.unwrap().unwrap();
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.server(), "late");
    icp.stop().await;
}
