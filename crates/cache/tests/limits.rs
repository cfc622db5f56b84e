//! The subscriber port under hostile clients, over real sockets: a
//! slowloris client is disconnected while a subscriber is served, past the
//! connection cap new connections are closed while the open ones keep
//! working, and an oversized request head gets 431.

use std::time::Duration;

use bytes::Bytes;
use cache::{Authenticator, Cache, CacheConfig};
use http_body_util::{BodyExt, Empty};
use testkit::TestApi;
use testkit::hostile::{Slowloris, open_http1 as open, until_closed};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TOKEN: &str = "subscriber-token";
const WAIT: Duration = Duration::from_secs(15);

async fn cache_with(api: &TestApi, limits: process::http::Limits) -> Cache {
    let mut registry = prometheus_client::registry::Registry::default();
    let config = CacheConfig {
        limits,
        ..CacheConfig::default()
    };
    let cache = Cache::start(
        api.client(),
        config,
        Authenticator::tokens([TOKEN.to_string()]),
        &mut registry,
    )
    .await
    .expect("cache starts");
    tokio::time::timeout(WAIT, cache.wait_ready())
        .await
        .expect("cache ready");
    cache
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A list of HTTPScaledObjects over `send`; its status.
async fn list(send: &mut Sender) -> u16 {
    let req = http::Request::get("/apis/http.keda.sh/v1alpha1/httpscaledobjects")
        .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .expect("answered in time")
        .expect("served");
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

async fn wait_open(cache: &Cache, want: i64) {
    let wait = async {
        while cache.metrics().connections.open.get() != want {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("never {want} open connections"));
}

#[tokio::test]
async fn slowloris_is_closed_while_a_subscriber_is_served() {
    let api = TestApi::start().await;
    let cache = cache_with(
        &api,
        process::http::Limits {
            header_read_timeout: Duration::from_secs(1),
            ..process::http::Limits::default()
        },
    )
    .await;
    let slow = Slowloris::start(cache.addr(), "GET /apis HTTP/1.1\r\nHost: cache\r\n").await;
    let mut subscriber = open(cache.addr()).await;
    for _ in 0..5 {
        assert_eq!(list(&mut subscriber).await, 200);
    }
    slow.closed().await;
    // A silent connection is closed too.
    let mut silent = TcpStream::connect(cache.addr()).await.unwrap();
    assert_eq!(until_closed(&mut silent).await, "");
    assert!(cache.metrics().connections.without_request.get() >= 1);
    cache.shutdown().await;
}

#[tokio::test]
async fn past_the_cap_new_connections_are_closed_and_open_ones_work() {
    let api = TestApi::start().await;
    let cache = cache_with(
        &api,
        process::http::Limits {
            max_connections: 2,
            ..process::http::Limits::default()
        },
    )
    .await;
    let mut a = open(cache.addr()).await;
    let mut b = open(cache.addr()).await;
    wait_open(&cache, 2).await;
    let mut c = TcpStream::connect(cache.addr()).await.unwrap();
    let _ = c
        .write_all(b"GET /livez HTTP/1.1\r\nHost: cache\r\n\r\n")
        .await;
    assert_eq!(until_closed(&mut c).await, "", "no response over the cap");
    assert_eq!(cache.metrics().connections.refused.get(), 1);
    for _ in 0..3 {
        assert_eq!(list(&mut a).await, 200);
        assert_eq!(list(&mut b).await, 200);
    }
    drop(a);
    wait_open(&cache, 1).await;
    assert_eq!(list(&mut open(cache.addr()).await).await, 200);
    cache.shutdown().await;
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let api = TestApi::start().await;
    let cache = cache_with(&api, process::http::Limits::default()).await;
    let mut s = TcpStream::connect(cache.addr()).await.unwrap();
    let big = "a".repeat(process::http::Limits::DEFAULT_MAX_HEADER_BYTES + 1024);
    // The server may answer and close before the whole head is written.
    let _ = s
        .write_all(format!("GET /livez HTTP/1.1\r\nHost: cache\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    let got = until_closed(&mut s).await;
    assert!(
        got.starts_with("HTTP/1.1 431 "),
        "{}",
        got.lines().next().unwrap_or("")
    );
    cache.shutdown().await;
}
