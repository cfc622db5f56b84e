//! The proxy under hostile clients, over real sockets: a slowloris client
//! and a silent one are disconnected while others are served, the
//! connection cap closes new connections and keeps the open ones working,
//! an oversized head gets 431, and a flood to a cold route is answered 503
//! past the per-route and the total caps while the held requests complete
//! once the backend is ready.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use interceptor::Interceptor;
use testkit::hostile::{Slowloris, open_http1 as open, until_closed};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The value of the unlabelled metric `name` on the admin port.
async fn metric(icp: &Interceptor, name: &str) -> u64 {
    let text = get_on(&client(), icp.admin_addr, "admin", "/metrics")
        .await
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

async fn wait_metric(icp: &Interceptor, name: &str, want: u64) {
    let wait = async {
        while metric(icp, name).await != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("{name} never reached {want}"));
}

async fn get_over(
    send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
) -> StatusCode {
    let req = http::Request::get("/")
        .header(http::header::HOST, host)
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.expect("served");
    let status = resp.status();
    resp.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn slowloris_and_silent_clients_are_closed_while_others_are_served() {
    let (icp, _dir) = serve_app("app.test", &["--header-read-timeout", "1s"]).await;
    let addr = icp.proxy_addr;

    // Headers trickled a byte every 100 ms: never complete within 1 s.
    let slow = Slowloris::start(addr, "GET / HTTP/1.1\r\nHost: app.test\r\n").await;
    // A client that connects and sends nothing at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();

    // Meanwhile everyone else is served.
    for _ in 0..5 {
        assert_eq!(get(addr, "app.test", "/").await.status, StatusCode::OK);
    }

    slow.closed().await;
    assert_eq!(until_closed(&mut silent).await, "");
    assert!(metric(&icp, "interceptor_proxy_connections_without_request_total").await >= 1);
    assert_eq!(get(addr, "app.test", "/").await.status, StatusCode::OK);
    icp.stop().await;
}

#[tokio::test]
async fn over_the_connection_cap_new_connections_are_closed_and_open_ones_work() {
    let (icp, _dir) = serve_app("app.test", &["--max-connections", "2"]).await;
    let addr = icp.proxy_addr;
    let mut a = open(addr).await;
    let mut b = open(addr).await;
    wait_metric(&icp, "interceptor_proxy_connections", 2).await;

    // A third is accepted and closed at once, before any response.
    let mut c = TcpStream::connect(addr).await.unwrap();
    let _ = c
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(until_closed(&mut c).await, "", "no response over the cap");
    assert_eq!(
        metric(&icp, "interceptor_proxy_connections_refused_total").await,
        1
    );

    // The open ones are served, again and again.
    for _ in 0..3 {
        assert_eq!(get_over(&mut a, "app.test").await, StatusCode::OK);
        assert_eq!(get_over(&mut b, "app.test").await, StatusCode::OK);
    }

    // Once one closes, a new connection gets its place.
    drop(a);
    wait_metric(&icp, "interceptor_proxy_connections", 1).await;
    assert_eq!(get(addr, "app.test", "/").await.status, StatusCode::OK);
    icp.stop().await;
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let (icp, _dir) = serve_app("app.test", &["--max-header-bytes", "16384"]).await;
    // A 20 KiB header is over the limit; below it the request goes through.
    for (kib, more, want) in [(20, "", 431), (8, "Connection: close\r\n", 200)] {
        let big = "a".repeat(kib * 1024);
        let head = format!("GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {big}\r\n{more}\r\n");
        let got = raw_request(icp.proxy_addr, &head).await;
        assert_eq!(got.status, want, "X-Big of {kib} KiB: {}", got.head);
    }
    icp.stop().await;
}

#[tokio::test]
async fn a_cold_route_flood_is_turned_away_past_the_caps_and_the_held_complete() {
    let [a_backend, b_backend] = echoes(["cold-a", "cold-b"]).await;
    let dir = tempfile::tempdir().unwrap();
    let app = |name: &str, host: &str, backend, ready| {
        write(
            dir.path(),
            &format!("{name}.yaml"),
            &[
                http_service(name, backend, ready),
                httpso_yaml("ns", name, name, &[host], &[], &[]),
            ]
            .concat(),
        );
    };
    app("cold-a", "a.test", a_backend, false);
    app("cold-b", "b.test", b_backend, false);
    let caps = [
        "--cold-start-max-pending-requests",
        "3",
        "--cold-start-max-pending-requests-total",
        "4",
    ];
    let icp = start_waiting(dir.path(), &caps, &["ns/cold-a", "ns/cold-b"], &[]).await;
    let addr = icp.proxy_addr;

    // Three held for a (its cap), one for b (the total's last place).
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(tokio::spawn(async move {
            get(addr, "a.test", &format!("/held-{i}")).await
        }));
    }
    wait_concurrency(&icp, "ns/cold-a", 3).await;
    held.push(tokio::spawn(
        async move { get(addr, "b.test", "/held").await },
    ));
    wait_concurrency(&icp, "ns/cold-b", 1).await;

    // The flood: every further request is answered at once with a 503
    // that says which cap, for which route and host.
    let flood: Vec<_> = (0..20)
        .map(|i| {
            let host = if i % 2 == 0 { "a.test" } else { "b.test" };
            tokio::spawn(async move { (host, get(addr, host, "/flood").await) })
        })
        .collect();
    for f in flood {
        let (host, got) = tokio::time::timeout(WAIT, f).await.unwrap().unwrap();
        assert_eq!(
            got.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            got.text()
        );
        assert_eq!(got.cold(), Some("true"));
        let text = got.text();
        let want = match host {
            "a.test" => [
                "route ns/cold-a",
                "host \"a.test\"",
                "3 already waiting",
                "KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS)",
            ],
            _ => [
                "route ns/cold-b",
                "host \"b.test\"",
                "4 already waiting",
                "KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS_TOTAL",
            ],
        };
        for part in want {
            assert!(text.contains(part), "{part:?} missing in {text:?}");
        }
    }
    for h in &held {
        assert!(!h.is_finished(), "held requests still wait");
    }

    // Both turn ready: every held request completes.
    app("cold-a", "a.test", a_backend, true);
    app("cold-b", "b.test", b_backend, true);
    for h in held {
        let got = tokio::time::timeout(WAIT, h).await.unwrap().unwrap();
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        assert_eq!(got.cold(), Some("true"));
    }
    let q = queue(&icp).await;
    assert_eq!(q["ns/cold-a"]["Concurrency"], 0, "{q}");
    assert_eq!(q["ns/cold-a"]["RequestCount"], 3 + 10, "{q}");
    assert_eq!(q["ns/cold-b"]["RequestCount"], 1 + 10, "{q}");
    icp.stop().await;
}
